"""Classifiers family: an MLP and a CNN on handwritten digits (claims C2, C7)."""

from __future__ import annotations

from pipelines.config import GPU_SWITCHES, Config, DataConfig, ExperimentConfig, TrainConfig, knob
from pipelines.families import Family, register_family
from pipelines.pipeline import Pipeline, Step

IMAGE_DATASETS = ("mnist_subset", "digits", "mnist", "fashion_mnist")
MODELS = ("mlp", "cnn")


class ClassifierData(DataConfig):
    dataset: str = knob("mnist_subset", "Image classification dataset.", choices=IMAGE_DATASETS)


class MLPConfig(Config):
    hidden_units: tuple[int, ...] = knob((512, 256), "Width of each hidden layer.", minimum=1, maximum=65536)
    activation: str = knob("relu", "Hidden activation.", choices=("relu", "sigmoid", "tanh", "gelu", "elu"))
    dropout_rate: float = knob(0.3, "Dropout after each hidden layer.", minimum=0.0, maximum=0.9)


class CNNConfig(Config):
    filters: tuple[int, ...] = knob((32, 64), "Filters of each conv block (convs, then a 2x2 max-pool).", minimum=1, maximum=4096)
    kernel_size: int = knob(3, "Square kernel size.", minimum=1, maximum=11)
    convs_per_block: int = knob(1, "Conv layers before each max-pool.", minimum=1, maximum=8)
    batch_norm: bool = knob(True, "Batch-normalise each conv layer.")
    dense_units: int = knob(128, "Width of the dense layer before the softmax; 0: none.", minimum=0, maximum=65536)
    activation: str = knob("relu", "Activation.", choices=("relu", "sigmoid", "tanh", "gelu", "elu"))
    dropout_rate: float = knob(0.4, "Dropout before the output layer.", minimum=0.0, maximum=0.9)
    augment_shift: float = knob(0.06, "Random translation during training, as a fraction of the side.", minimum=0.0, maximum=0.3)


class ClassifiersConfig(ExperimentConfig):
    """MLP vs CNN on handwritten digits.

    Run: ``nnzoo run classifiers --profile quick`` (1-2 minutes on 2 CPU cores;
    test accuracy 0.979-0.987 for the CNN and 0.939-0.949 for the MLP on the held-out 1,000
    images of the bundled MNIST subset). ``--profile smoke`` takes seconds and is for
    tests; ``--profile full`` trains on tfds ``mnist`` and wants a GPU.
    """

    data: ClassifierData = ClassifierData()
    train: TrainConfig = TrainConfig()
    mlp: MLPConfig = MLPConfig()
    cnn: CNNConfig = CNNConfig()


FAMILY = register_family(
    Family(
        name="classifiers",
        description="MLP and CNN (conv + max-pool + dense) digit classifiers",
        config_cls=ClassifiersConfig,
        profiles={
            "smoke": {
                "data.max_examples": 600, "train.epochs": 2, "train.run_eagerly": True, "train.batch_size": 64,
                "train.learning_rate": 3e-3, "mlp.hidden_units": (32,), "cnn.filters": (4, 8),
                "cnn.dense_units": 16, "cnn.batch_norm": False, "cnn.augment_shift": 0.0,
            },
            "quick": {"train.epochs": 20, "train.batch_size": 64, "train.lr_schedule": "cosine",
                      "train.early_stopping_patience": 6, "train.steps_per_execution": 5, "cnn.convs_per_block": 2},
            "full": {"data.dataset": "mnist", "data.val_fraction": 0.1, "data.test_fraction": 0.15,
                     # Not XLA: the CNN's RandomTranslation augmentation cannot be compiled (Keras
                     # would train it without XLA anyway, and say so).
                     **GPU_SWITCHES, "train.jit_compile": False, "train.epochs": 30, "train.batch_size": 128, "train.lr_schedule": "cosine",
                     "cnn.convs_per_block": 2},
        },
        mock={"train.epochs": 1},
        pipeline=Pipeline(steps=(
            Step("train", "### Train\nTrains the model with per-epoch metrics in MLflow; returns the run id and model "
                          "URI (never the model). A retry resumes from the last completed epoch in the same run.",
                 over=MODELS, item="model", trains=True),
            Step("evaluate", "### Evaluate\nTest accuracy, confusion matrix and misclassified examples for each "
                             "model, in the model's run.", needs=("train",)),
            Step("register", "### Register\nRegisters each model once per DAG run as `challenger`; it becomes "
                             "`champion` only if its test accuracy is not worse than the champion's beyond the "
                             "tolerance.", needs=("train", "evaluate")),
        )),
        form_params=("data.dataset", "train.epochs", "train.batch_size", "train.learning_rate", "train.seed"),
        headline=(("*", "test_accuracy"),), quick_seconds=(56.0, 25.0),
    )
)
