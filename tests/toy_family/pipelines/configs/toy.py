"""The toy family: one dense layer on two generated blobs, set beside a model it takes
from the classifiers family."""

from pipelines.config import DataConfig, ExperimentConfig, TrainConfig, knob
from pipelines.families import Family, ModelFrom, register_family
from pipelines.pipeline import Pipeline, Step


class ToyData(DataConfig):
    dataset: str = knob("toy_blobs", "Generated dataset.", choices=("toy_blobs",))
    examples: int = knob(400, "Points generated.", minimum=20, maximum=100_000)


class ToyConfig(ExperimentConfig):
    """Logistic regression on two blobs. Run: ``nnzoo run toy --profile smoke`` (seconds
    when a classifiers MLP is registered; else the classifiers family runs first)."""

    data: ToyData = ToyData()
    train: TrainConfig = TrainConfig()
    reference_version: str = knob("champion", "Version of nnzoo-classifiers-mlp the report sets beside the toy "
                                              "model: champion or a version number.",
                                  form={"pattern": r"^(champion|[0-9]+)$", "rule": "'champion' or a version number"})


FAMILY = register_family(Family(
    name="toy",
    description="One dense layer on two generated blobs",
    config_cls=ToyConfig,
    profiles={"smoke": {"train.epochs": 5, "train.learning_rate": 0.1}, "quick": {"train.epochs": 20},
              "full": {"data.examples": 10_000}},
    pipeline=Pipeline(parent_run=True, steps=(
        Step("train", "### Train\nOne dense layer.", trains=True),
        Step("evaluate", "### Evaluate\nTest accuracy in the training run.", needs=("train",)),
        Step("report", "### Report\nThe toy model beside the classifiers' MLP, on the parent run.",
             needs=("train", "evaluate")),
        Step("register", "### Register\nChampion unless worse.", needs=("train", "evaluate")),
    )),
    form_params=("data.examples", "train.epochs"),
    uses=(ModelFrom("reference", "classifiers", "mlp", version="reference_version"),),
    headline=(("logistic", "test_accuracy"),),
))
