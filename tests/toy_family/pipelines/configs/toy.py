"""The toy family: one dense layer on two generated blobs."""

from pipelines.config import DataConfig, ExperimentConfig, TrainConfig, knob
from pipelines.families import Family, register_family
from pipelines.pipeline import Pipeline, Step


class ToyData(DataConfig):
    dataset: str = knob("toy_blobs", "Generated dataset.", choices=("toy_blobs",))
    examples: int = knob(400, "Points generated.", minimum=20, maximum=100_000)


class ToyConfig(ExperimentConfig):
    """Logistic regression on two blobs. Run: ``nnzoo run toy --profile smoke`` (seconds)."""

    data: ToyData = ToyData()
    train: TrainConfig = TrainConfig()


FAMILY = register_family(Family(
    name="toy",
    description="One dense layer on two generated blobs",
    config_cls=ToyConfig,
    profiles={"smoke": {"train.epochs": 5, "train.learning_rate": 0.1}, "quick": {"train.epochs": 20},
              "full": {"data.examples": 10_000}},
    pipeline=Pipeline(steps=(
        Step("train", "### Train\nOne dense layer.", trains=True),
        Step("evaluate", "### Evaluate\nTest accuracy in the training run.", needs=("train",)),
        Step("register", "### Register\nChampion unless worse.", needs=("train", "evaluate")),
    )),
    form_params=("data.examples", "train.epochs"),
    headline=(("*", "test_accuracy"),),
))
