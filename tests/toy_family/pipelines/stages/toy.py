"""The toy family's steps (prepare_data is the kit's)."""

import numpy as np

from pipelines import tracking
from pipelines.configs.toy import FAMILY
from pipelines.kit import Training, register_and_promote, run_training


def train(config, inputs):
    import tensorflow as tf

    from models import build_model
    from pipelines.data.prepared import load_prepared

    typed = FAMILY.load(config)
    data = load_prepared(inputs["data_uri"])
    (x, y), (val_x, val_y) = data.split("train"), data.split("val")
    return run_training(FAMILY, typed, inputs, Training(
        "logistic", data=data, example=x[:4],
        build=lambda: build_model("toy_logistic", input_dim=x.shape[1], num_classes=data.num_classes),
        datasets=lambda: (tf.data.Dataset.from_tensor_slices((x, y)).batch(typed.train.batch_size),
                          tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(256))))


def evaluate(config, inputs):
    from pipelines.data.prepared import load_prepared

    data = load_prepared(inputs["data_uri"])
    test_x, test_y = data.split("test")
    trained = inputs["train"]
    predicted = tracking.load_keras_model(trained["model_uri"]).predict(test_x, verbose=0).argmax(axis=1)
    accuracy = float(np.mean(predicted == test_y))
    tracking.log_metrics(trained["run_id"], {"test_accuracy": accuracy})
    return {"test_accuracy": accuracy}


def register(config, inputs):
    trained = inputs["train"]
    return register_and_promote(FAMILY, "logistic", trained["run_id"], trained["model_uri"], "test_accuracy",
                                inputs["evaluate"]["test_accuracy"], tolerance=FAMILY.load(config).promotion_tolerance)
