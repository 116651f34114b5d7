"""CNN depth family: why networks got deeper and smarter (claims C1, C2, C3, C7, C8, C17).

One pipeline run answers, each in its own nested MLflow run under one parent:

* C1 ``single_neuron``: a 1-unit sigmoid model vs scikit-learn's LogisticRegression on a
  two-class slice of the digits.
* C2 ``count_parameters``: the talk's fully connected 3x100 net on 100x100 inputs vs its
  two-conv-layer CNN, parameters counted.
* C3, C7, C8, C17 ``train_variant`` (one mapped task per variant): a deep plain CNN and
  the same net with residual connections, both without normalisation, with ReLU and
  with sigmoid (gradient-norm heatmaps); a deep sigmoid MLP and its ReLU twin; He et al.'s degradation experiment
  in small (plain and residual nets with batch norm at two depths); a CNN with max
  pooling and the same CNN with stride-2 convs instead (predictions under shifts,
  filters and feature maps); a small inception net.
* ``compare`` draws the comparisons on the parent run; accuracy vs FLOPs over every
  registered model of every family (C17) is the zoo report's (``nnzoo report``).
"""

from __future__ import annotations

from pipelines.claims import Claim, Picture, owned
from pipelines.config import GPU_SWITCHES, Config, ConfigError, DataConfig, ExperimentConfig, TrainConfig, knob
from pipelines.configs.classifiers import IMAGE_DATASETS
from pipelines.families import Family, register_family
from pipelines.pipeline import Pipeline, Step

ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu", "elu")
VARIANTS = (
    "vanishing_plain", "vanishing_residual", "sigmoid_plain", "sigmoid_residual", "mlp_sigmoid", "mlp_relu",
    "degradation_plain_shallow", "degradation_plain_deep", "degradation_residual_shallow",
    "degradation_residual_deep", "max_pool", "strided", "inception",
)
"""Every model the family trains; ``variants`` in the config picks a subset."""


class CNNDepthData(DataConfig):
    dataset: str = knob("mnist_subset", "Image classification dataset.", choices=(*IMAGE_DATASETS, "cifar10"))


class NeuronConfig(Config):
    classes: tuple[int, ...] = knob((3, 5), "The two classes of the two-class slice (C1).", minimum=0, maximum=999,
        form={"items": (2, 2), "note": "the two classes must differ"})
    fit_epochs: int = knob(40, "Epochs of the single neuron.", minimum=1, maximum=1000)
    step_size: float = knob(0.01, "Adam learning rate of the single neuron.", exclusive_minimum=0.0, maximum=10.0)

    def check(self) -> None:
        if len(self.classes) != 2 or self.classes[0] == self.classes[1]:
            raise ConfigError(f"classes={self.classes!r}: need exactly two different class indices")


class VanishingConfig(Config):
    depth: int = knob(20, "Weight layers of the plain and residual nets without normalisation (even, >= 8).",
                      minimum=8, maximum=200,
        form={"even": True, "note": "at least 2 x (number of vanishing.widths) + 2"})
    widths: tuple[int, ...] = knob((8, 16, 32), "Filters of each stage (the next stage halves the resolution).",
                                   minimum=1, maximum=1024)
    activation: str = knob("relu", "Activation of vanishing_plain and vanishing_residual (sigmoid_plain and "
                           "sigmoid_residual are the same nets with sigmoid).", choices=ACTIVATIONS)
    sigmoid_epochs: int | None = knob(None, "Epochs of the sigmoid pair (None: train.epochs): C3 reads their "
                                            "gradients at step 0, and neither learns.", minimum=1, maximum=1000)
    mlp_layers: int = knob(10, "Hidden layers of the deep MLPs (sigmoid vs ReLU).", minimum=1, maximum=100)
    mlp_units: int = knob(64, "Units of each hidden layer of the deep MLPs.", minimum=1, maximum=4096)


class DegradationConfig(Config):
    depths: tuple[int, ...] = knob((8, 32), "Shallow and deep weight-layer counts (even), batch norm on.",
                                   minimum=4, maximum=200,
        form={"items": (2, 2), "even": True,
                           "note": "shallow < deep, each at least 2 x (number of degradation.widths) + 2"})
    widths: tuple[int, ...] = knob((8, 16, 32), "Filters of each stage.", minimum=1, maximum=1024)

    def check(self) -> None:
        if len(self.depths) != 2 or self.depths[0] >= self.depths[1]:
            raise ConfigError(f"depths={self.depths!r}: need two depths, shallow < deep")


class PoolingConfig(Config):
    filters: tuple[int, ...] = knob((16, 32), "Filters of each conv block.", minimum=1, maximum=4096)
    kernel_size: int = knob(5, "Kernel size (5x5 first-layer filters are easier to read than 3x3).",
                            minimum=1, maximum=11)
    dense_units: int = knob(64, "Dense layer before the softmax.", minimum=0, maximum=65536)
    max_shift: int = knob(3, "Largest shift, in pixels, of the shift-agreement test (C8).", minimum=1, maximum=8)


class InceptionConfig(Config):
    stem_filters: int = knob(16, "Filters of the stem conv.", minimum=1, maximum=1024)
    modules: tuple[int, ...] = knob((32, 64), "Output width of each inception module (multiples of 8).",
                                    minimum=16, maximum=4096)


class GradientConfig(Config):
    record_every: int = knob(25, "Record every layer's gradient norm every this many steps (and at step 0).",
                             minimum=1, maximum=100000)
    examples: int = knob(64, "Size of the fixed batch the gradient norms are measured on.", minimum=1,
                         maximum=4096)


class CNNDepthConfig(ExperimentConfig):
    """Depth, skip connections, pooling and parameter economy on one dataset.

    Run: ``nnzoo run cnn_depth --profile quick`` (4-5 minutes on 2 CPU cores, bundled
    MNIST subset): the 20-layer plain ReLU net without normalisation stays at chance
    (test accuracy 0.10) while its residual twin reaches about 0.95; at 32 layers with
    batch norm the plain net trains worse than at 8 and the residual one does not; the
    single neuron and logistic regression agree within a point (about 0.93); the talk's
    CNN has 11.1x fewer parameters than its dense net.
    ``--profile smoke`` is for tests; ``--profile full`` uses tfds ``cifar10``.
    """

    data: CNNDepthData = CNNDepthData()
    train: TrainConfig = TrainConfig()
    variants: tuple[str, ...] = knob(VARIANTS, "Models to train (comma-separated).", choices=VARIANTS)
    neuron: NeuronConfig = NeuronConfig()
    vanishing: VanishingConfig = VanishingConfig()
    degradation: DegradationConfig = DegradationConfig()
    pooling: PoolingConfig = PoolingConfig()
    inception: InceptionConfig = InceptionConfig()
    gradients: GradientConfig = GradientConfig()

    def check(self) -> None:
        super().check()
        if not self.variants:
            raise ConfigError(f"variants=(): name at least one of {', '.join(VARIANTS)}")
        for section in ("vanishing", "degradation"):
            depths = (self.vanishing.depth,) if section == "vanishing" else self.degradation.depths
            widths = getattr(self, section).widths
            for depth in depths:
                if depth % 2 or (depth - 2) // 2 < len(widths):
                    raise ConfigError(f"{section}: depth {depth} must be even and give at least one block per "
                                      f"stage of widths={widths!r} (depth >= {2 * len(widths) + 2})")


CLAIMS = owned(
    "cnn_depth",
    Claim("C1", "A single neuron with a sigmoid is logistic regression",
          "1-unit sigmoid model vs scikit-learn LogisticRegression on a two-class slice: test accuracy gap",
          metric="accuracy_gap", comparator="<=", threshold=0.02, model="single_neuron",
          pictures=(Picture("single_neuron", "plots/weights.png", "the neuron's and the regression's weights"),)),
    Claim("C2", "A dense net on 100x100 inputs has ~1M parameters; a comparable CNN over 10x fewer",
          "The talk's 3x100 dense net vs its two-conv CNN, parameters counted",
          metric="parameter_ratio", comparator=">=", threshold=10.0, model="talk_nets",
          profiles=("smoke", "quick", "full")),
    Claim("C3", "Deep nets lose the gradient on the way down; skip connections carry it to the first layers",
          "First/last-layer gradient norm at initialisation, deep plain sigmoid CNN vs its residual twin",
          metric="sigmoid_plain_first_last_gradient_ratio", comparator="<=", threshold=1e-2,
          baseline="sigmoid_residual_first_last_gradient_ratio", baseline_factor=0.01,
          pictures=(Picture("pipeline", "plots/gradient_norms_at_init.png", "gradient norm by layer at step 0"),
                    Picture("vanishing_plain", "plots/gradient_heatmap.png", "plain ReLU net: gradients per step"),
                    Picture("vanishing_residual", "plots/gradient_heatmap.png",
                            "residual ReLU net: gradients per step"))),
    # C7's bar, from the bundled MNIST subset: the max-pool net's 5x5 first-layer filters score
    # 0.49 after 4 epochs, 0.52 after 6 and 0.53 after 8 (quick); random filters of that shape
    # 0.29, the same net untrained 0.23 (white noise of 25 pixels: about 0.29).
    Claim("C7", "A CNN learns hierarchical features, edges first",
          "Likeness of the first-layer filters to oriented edge detectors, trained vs random filters",
          metric="first_layer_edge_score", comparator=">=", threshold=0.4, model="max_pool",
          baseline="first_layer_edge_score_random",
          pictures=(Picture("max_pool", "plots/first_layer_filters.png", "first-layer filters"),
                    Picture("max_pool", "plots/feature_maps.png", "one image through every layer"))),
    Claim("C8", "Max pooling gives a small invariance to shifts",
          "Share of predictions unchanged under 2-pixel shifts, max-pool CNN vs the same CNN with strided convs",
          metric="shift_agreement_2", comparator=">=", threshold=0.8, model="max_pool",
          baseline="shift_agreement_2", baseline_model="strided",
          pictures=(Picture("pipeline", "plots/shift_agreement.png", "agreement by shift"),)),
)

FAMILY = register_family(
    Family(
        name="cnn_depth",
        description="Single neuron vs logistic regression, parameter counts, plain vs residual depth, "
                    "pooling and shifts, inception: why CNNs got deeper",
        config_cls=CNNDepthConfig,
        profiles={
            "smoke": {
                "data.max_examples": 600, "train.epochs": 1, "train.run_eagerly": True, "train.batch_size": 64,
                "train.early_stopping_patience": 0, "neuron.fit_epochs": 5,
                "vanishing.depth": 8, "vanishing.widths": (4, 8), "vanishing.mlp_layers": 3,
                "vanishing.mlp_units": 16, "degradation.depths": (6, 8), "degradation.widths": (4, 8),
                "pooling.filters": (4, 8), "pooling.dense_units": 16, "pooling.max_shift": 2,
                "inception.stem_filters": 8, "inception.modules": (16,), "gradients.record_every": 5,
                "gradients.examples": 16,
            },
            "quick": {"train.epochs": 6, "train.batch_size": 64, "train.early_stopping_patience": 0,
                      "train.steps_per_execution": 5, "vanishing.sigmoid_epochs": 1},
            "full": {"data.dataset": "cifar10", "data.val_fraction": 0.1, "data.test_fraction": 0.15,
                     # Not mixed precision: C3 reads gradient norms of 1e-5 down to 1e-12, below float16.
                     **GPU_SWITCHES, "train.mixed_precision": False,
                     "train.epochs": 40, "train.batch_size": 128, "train.lr_schedule": "cosine",
                     "vanishing.depth": 32, "vanishing.widths": (16, 32, 64), "degradation.depths": (20, 56),
                     "degradation.widths": (16, 32, 64), "pooling.filters": (32, 64), "pooling.dense_units": 256,
                     "inception.stem_filters": 32, "inception.modules": (64, 128, 256),
                     "gradients.record_every": 200},
        },
        mock={"train.epochs": 1, "neuron.fit_epochs": 2, "gradients.record_every": 2, "gradients.examples": 16},
        # Each builder once: the residual 20-layer net with batch norm (the plain nets are the
        # same blocks without the shortcut, the vanishing and sigmoid nets the same without
        # batch norm, the 56-layer ones deeper), the ReLU MLP (the sigmoid one differs in
        # activation), the max-pool CNN (the strided one is the same builder with stride-2
        # convs in place of the pools) and inception.
        mock_sample={"variants": ("mlp_relu", "degradation_residual_shallow", "max_pool", "inception")},
        pipeline=Pipeline(parent_run=True, steps=(
            Step("single_neuron", "### C1: a single neuron is logistic regression\nA 1-unit sigmoid model and "
                                  "scikit-learn's LogisticRegression on the same two-class slice: test accuracies "
                                  "and the correlation of their weights."),
            Step("count_parameters", "### C2: parameters, counted\nThe talk's 3x100 fully connected net on 100x100 "
                                     "inputs vs its CNN with two conv layers of 100 filters: parameters, FLOPs, ratio."),
            Step("plan_variants", "### Plan the variants\nOne job per model to train (the `variants` param)."),
            Step("train_variant", "### Train one variant\nTrains it with per-layer gradient norms recorded on a "
                                  "fixed batch (heatmap), then test accuracy and training error; the pooling "
                                  "variants also get shift agreement, filters and feature maps.",
                 expand="plan_variants", label="{variant}", trains=True),
            Step("register", "### Register\nRegisters each variant as `nnzoo-cnn_depth-<variant>`; `champion` "
                             "moves only on no regression of test accuracy.", needs=("train_variant",)),
            Step("compare", "### Compare\nOn the parent run: C1 and C2, gradient ratios (C3), degradation (C3) "
                            "and shift agreement (C8).",
                 needs=("single_neuron", "count_parameters", "train_variant", "register")),
        )),
        form_params=("data.dataset", "train.epochs", "train.learning_rate", "variants", "vanishing.depth",
                     "vanishing.activation", "degradation.depths", "train.seed"),
        claims=CLAIMS, quick_seconds=(200.0, 71.0),
        off_chart=("single_neuron",),
        headline=(("*", "test_accuracy"), ("*", "first_last_gradient_ratio"), ("talk_nets", "parameter_ratio"),
                  ("single_neuron", "logistic_test_accuracy")),
    )
)
