"""Unsupervised family: autoencoder, RBM and DBN pretraining with fine-tuning (C4, C5, C6)."""

from __future__ import annotations

from pipelines.claims import Claim, Picture, owned
from pipelines.config import GPU_SWITCHES, Config, ConfigError, DataConfig, ExperimentConfig, TrainConfig, knob
from pipelines.configs.classifiers import IMAGE_DATASETS
from pipelines.families import Family, register_family
from pipelines.pipeline import Pipeline, Step

MAX_RBM_LAYERS = 4
"""The DAG has this many ``pretrain_rbm_layer_N`` tasks; a run uses the first ``len(rbm.layers)``."""
INITS = ("dbn", "random")


class UnsupervisedData(DataConfig):
    dataset: str = knob("mnist_subset", "Image dataset (labels are used only by fine-tuning and plots).",
                        choices=IMAGE_DATASETS)


class AutoencoderConfig(Config):
    kind: str = knob("dense", "dense: fully connected; conv: stride-2 convolutions and transposed convolutions.",
                     choices=("dense", "conv"))
    bottleneck: int = knob(10, "Size of the code the image is squeezed through.", minimum=1, maximum=4096)
    hidden_units: tuple[int, ...] = knob((512, 128), "Dense encoder layers (mirrored in the decoder).",
                                         minimum=1, maximum=65536)
    filters: tuple[int, ...] = knob((32, 64), "Conv encoder filters, one stride-2 layer each (kind=conv).",
                                    minimum=1, maximum=4096)
    activation: str = knob("relu", "Hidden activation.", choices=("relu", "sigmoid", "tanh", "gelu", "elu"))


class RBMConfig(Config):
    layers: tuple[int, ...] = knob((500, 500), f"Hidden units of each RBM of the DBN, bottom first "
                                   f"(at most {MAX_RBM_LAYERS} layers).", minimum=1, maximum=65536,
        form={"items": (1, MAX_RBM_LAYERS)})
    k: int = knob(1, "Gibbs steps in the negative phase (CD-k).", minimum=1, maximum=1000)
    persistent: bool = knob(False, "Persistent chains across batches (PCD) instead of restarting at the data.")
    visible: str = knob("probabilities", "First-layer input: grey levels as probabilities, or binarised at 0.5.",
                        choices=("probabilities", "binary"))
    epochs: int = knob(20, "Epochs per RBM layer.", minimum=1, maximum=1000)
    batch_size: int = knob(64, "Examples per CD update.", minimum=1, maximum=4096)
    learning_rate: float = knob(0.05, "SGD step size of the CD updates.", exclusive_minimum=0.0, maximum=10.0)
    gibbs_steps: int = knob(1000, "Length of the Gibbs chains drawn as samples from the first RBM.",
                            minimum=1, maximum=100000)

    def check(self) -> None:
        if len(self.layers) > MAX_RBM_LAYERS:
            raise ConfigError(f"layers={self.layers!r}: at most {MAX_RBM_LAYERS} RBM layers")


class FinetuneConfig(Config):
    label_fractions: tuple[float, ...] = knob(
        (0.01, 0.1, 1.0), "Shares of the training labels each fine-tuning gets (stratified subsets).",
        exclusive_minimum=0.0, maximum=1.0)
    seeds: int = knob(3, "Repeats per (fraction, init), each with its own label subset and weights.",
                      minimum=1, maximum=50)
    steps: int = knob(1500, "Gradient steps per fine-tuning, whatever the number of labels.",
                      minimum=1, maximum=10_000_000)
    batch_size: int = knob(64, "Examples per step (fewer when there are fewer labels).", minimum=1, maximum=4096)
    learning_rate: float = knob(1e-3, "Adam step size.", exclusive_minimum=0.0, maximum=1.0)
    dropout_rate: float = knob(0.0, "Dropout after each hidden layer.", minimum=0.0, maximum=0.9)


class RBMFeaturesConfig(Config):
    """scikit-learn's "RBM features for digit classification" example, on its protocol."""

    enabled: bool = knob(True, "Run the RBM + logistic regression check on nudged sklearn digits.")
    hidden_units: int = knob(100, "RBM hidden units.", minimum=1, maximum=4096)
    epochs: int = knob(10, "RBM epochs.", minimum=1, maximum=1000)
    learning_rate: float = knob(0.06, "RBM SGD step size.", exclusive_minimum=0.0, maximum=10.0)
    batch_size: int = knob(10, "RBM batch size.", minimum=1, maximum=4096)
    logistic_c: float = knob(6000.0, "Inverse regularisation of the logistic regression.",
                             exclusive_minimum=0.0, maximum=1e9)


class UnsupervisedConfig(ExperimentConfig):
    """Autoencoder vs PCA; RBMs pretrained greedily into a DBN, fine-tuned with few labels.

    Run: ``nnzoo run unsupervised --profile quick`` (bundled MNIST subset, a few
    minutes on 2 CPU cores). ``train`` configures the autoencoder's training; its seed
    and XLA switch apply to every training here, mixed precision and multi-GPU
    distribution to the autoencoder and the fine-tunings (RBM layers train in float32
    on one device: their CD updates are a few matrix products per step).
    """

    data: UnsupervisedData = UnsupervisedData()
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    train: TrainConfig = TrainConfig()
    rbm: RBMConfig = RBMConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    rbm_features: RBMFeaturesConfig = RBMFeaturesConfig()


CLAIMS = owned(
    "unsupervised",
    Claim("C4", "An autoencoder with a ~10-unit bottleneck compresses its input",
          "Test reconstruction error per pixel of the 10-unit autoencoder over PCA with 10 components",
          metric="mse_ratio_vs_pca", comparator="<=", threshold=0.8, model="autoencoder",
          pictures=(Picture("autoencoder", "plots/reconstructions.png", "test digits and reconstructions"),
                    Picture("autoencoder", "plots/code_map.png", "the code of the test digits"))),
    Claim("C5", "An RBM is a stochastic generative model: it generates slightly different new samples",
          "Share of pixels on which two Gibbs chains started from the same test digit end more than 0.5 apart "
          "in probability (RBM layer 1)",
          metric="gibbs_chain_disagreement", comparator=">=", threshold=0.02, model="rbm_layer_1",
          pictures=(Picture("rbm_layer_1", "plots/gibbs_samples.png", "two Gibbs chains per start digit"),
                    Picture("rbm_layer_1", "plots/filters.png", "RBM layer 1 weights"))),
    Claim("C6", "Greedy layer-wise RBM pretraining helps fine-tuning with few labels",
          "Test accuracy gain of DBN init over random init at the smallest label share, mean over seeds",
          metric="finetune_gain_fewest_labels_mean", comparator=">", threshold=0.0,
          spread="finetune_gain_fewest_labels_std",
          pictures=(Picture("pipeline", "plots/accuracy_vs_labels.png", "accuracy vs share of labels"),)),
)

FAMILY = register_family(
    Family(
        name="unsupervised",
        description="Autoencoder vs PCA, RBM (CD-k/PCD), DBN greedy pretraining vs random init with few labels",
        config_cls=UnsupervisedConfig,
        profiles={
            "smoke": {
                "data.max_examples": 600, "autoencoder.hidden_units": (32,), "train.epochs": 2,
                "rbm.layers": (32, 16), "rbm.epochs": 2, "rbm.gibbs_steps": 10,
                "finetune.label_fractions": (0.1, 1.0), "finetune.seeds": 2, "finetune.steps": 20,
                "rbm_features.hidden_units": 16, "rbm_features.epochs": 1,
            },
            "quick": {"train.epochs": 20, "train.lr_schedule": "cosine", "train.early_stopping_patience": 4,
                      "train.steps_per_execution": 10, "finetune.steps": 600},
            "full": {"data.dataset": "mnist", "data.val_fraction": 0.1, "data.test_fraction": 0.15,
                     **GPU_SWITCHES,  # the RBMs train in float32 on one device whatever these say
                     "train.epochs": 50, "train.batch_size": 128, "train.lr_schedule": "cosine",
                     "rbm.layers": (500, 500, 2000), "rbm.epochs": 50, "finetune.steps": 6000},
        },
        mock={"train.epochs": 1, "rbm.epochs": 1, "rbm.gibbs_steps": 10, "finetune.steps": 5, "finetune.seeds": 1,
              "rbm_features.epochs": 1},
        # One share of labels: every fine-tuning builds the same classifier over the DBN.
        mock_sample={"finetune.label_fractions": (0.01,)},
        pipeline=Pipeline(parent_run=True, steps=(
            Step("train_autoencoder", "### Train the autoencoder\nImage -> bottleneck code -> image, trained on "
                                      "reconstruction error.", trains=True),
            Step("evaluate_autoencoder", "### Evaluate the autoencoder\nTest MSE per pixel against PCA with as many "
                                         "components; reconstructions; code map.", needs=("train_autoencoder",)),
            Step("pretrain_rbm_layer", "### Pretrain one RBM layer\nCD-k (or PCD) on the hidden probabilities of "
                                       "the layers below; passes the stack of layer model URIs on. Layers beyond the "
                                       "`layers` param do nothing.",
                 over=tuple(range(1, MAX_RBM_LAYERS + 1)), item="layer", chain=True, trains=True),
            Step("evaluate_rbm_features", "### RBM features + logistic regression\nscikit-learn's example protocol "
                                          "on nudged digits; logs the accuracy.", trains=True),
            Step("plan_finetuning", "### Plan fine-tuning\nOne job per label fraction x init x seed.",
                 needs=("pretrain_rbm_layer",)),
            Step("finetune", "### Fine-tune\nThe unrolled DBN or the same net from random weights, on a share of "
                             "the labels.", needs=("pretrain_rbm_layer",), expand="plan_finetuning",
                 label="{init} {fraction:.0%} seed {seed}", trains=True),
            Step("compare", "### Compare\nMean and spread of test accuracy by label share and init; table and plot "
                            "on the parent run.", needs=("evaluate_autoencoder", "evaluate_rbm_features", "finetune")),
            Step("register", "### Register\nAutoencoder, best DBN classifier and each RBM layer, once per DAG run; "
                             "`champion` moves only when the metric does not regress.",
                 needs=("train_autoencoder", "evaluate_autoencoder", "pretrain_rbm_layer", "finetune", "compare")),
        )),
        form_params=("data.dataset", "autoencoder.bottleneck", "rbm.layers", "rbm.epochs",
                     "finetune.label_fractions", "finetune.seeds", "finetune.steps", "train.seed"),
        claims=CLAIMS, quick_seconds=(83.0, 47.0),
        headline=(("autoencoder", "test_mse"), ("autoencoder", "pca_test_mse"), ("pipeline", "finetune_gain_*_mean"),
                  ("pipeline", "rbm_logistic_accuracy")),
    )
)
