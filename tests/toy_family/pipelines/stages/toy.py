"""The toy family's steps (prepare_data and finish are the kit's), one of each kind:
a training, an evaluation into the training run, a parent report with a model taken
from another family, a registration. Each gets a StepContext: the decoded config, the
prepared data, the upstream outputs by step name and the kit's step kinds."""

import numpy as np

from pipelines import tracking
from pipelines.configs.toy import FAMILY
from pipelines.kit import Training, step_of
from pipelines.runner import model_from


@step_of(FAMILY)
def train(step):
    from models import build_model

    data = step.data
    (x, y), (val_x, val_y) = data.split("train"), data.split("val")
    return step.train(Training(
        "logistic", data=data, arrays=((x, y), (val_x, val_y)), normalize=False,
        build=lambda: build_model("toy_logistic", input_dim=x.shape[1], num_classes=data.num_classes)))


@step_of(FAMILY)
def evaluate(step):
    test_x, test_y = step.data.split("test")

    def measure(run):
        predicted = tracking.load_keras_model(step["train"]["model_uri"]).predict(test_x, verbose=0).argmax(axis=1)
        return {"test_accuracy": float(np.mean(predicted == test_y))}

    return step.evaluate_into(step["train"]["run_id"], ("test_accuracy",), measure)


@step_of(FAMILY)
def report(step):
    reference = model_from(FAMILY, step.config, step.inputs, "reference")
    toy = tracking.load_keras_model(step["train"]["model_uri"]).count_params()
    borrowed = tracking.load_keras_model(reference["model_uri"]).count_params()
    return step.report({"test_accuracy": step["evaluate"]["test_accuracy"], "reference_params": borrowed},
                       name="toy", data={"reference": reference},
                       text=f"| model | parameters |\n|---|---|\n| toy logistic | {toy} |\n"
                            f"| {reference['name']} v{reference['version']} | {borrowed} |\n")


@step_of(FAMILY)
def register(step):
    return step.register("logistic", step["train"], "test_accuracy", step["evaluate"]["test_accuracy"])
