"""FCN and deconvolution family (claims C9-C12): the champion digit classifier rewritten
fully convolutional (heatmaps, boxes), a Conv2DTranspose segmenter, and a digit
generator from class + pose.

Data: generated scenes of several MNIST digits with per-pixel masks and boxes
(``mnist_scenes``), and posed digits (``posed_digits``) for the generator, both from
the bundled MNIST subset (quick, smoke) or tfds ``mnist`` (full).
"""

from __future__ import annotations

from pipelines.claims import Claim, Picture, owned
from pipelines.config import GPU_SWITCHES, Config, ConfigError, DataConfig, ExperimentConfig, TrainConfig, knob
from pipelines.families import Family, ModelFrom, register_family
from pipelines.pipeline import Pipeline, Step

DIGIT_SOURCES = ("mnist_subset", "mnist")
EXTRA_SEGMENTATION = ("", "oxford_iiit_pet")


class ScenesData(DataConfig):
    dataset: str = knob("mnist_scenes", "Generated scenes of MNIST digits (boxes and per-pixel masks).",
                        choices=("mnist_scenes",))
    canvas_height: int = knob(112, "Scene height in pixels.", minimum=28, maximum=2048)
    canvas_width: int = knob(112, "Scene width in pixels.", minimum=28, maximum=2048)
    digits_min: int = knob(2, "Fewest digits per scene.", minimum=1, maximum=64,
        form={"note": "at most digits_max"})
    digits_max: int = knob(4, "Most digits per scene (fewer when the canvas is full: digits never overlap).",
                           minimum=1, maximum=64,
        form={"note": "at least digits_min"})
    scale_min: float = knob(1.0, "Smallest digit scale (1.0: MNIST's 28-pixel frame).", minimum=0.25, maximum=8.0,
        form={"note": "at most scale_max"})
    scale_max: float = knob(1.5, "Largest digit scale.", minimum=0.25, maximum=8.0,
        form={"note": "at least scale_min"})
    scenes: int = knob(2000, "Scenes generated (then split train/val/test).", minimum=10, maximum=1_000_000)
    digits_from: str = knob("mnist_subset", "Where the digits come from: the bundled MNIST subset, or tfds mnist.",
                            choices=DIGIT_SOURCES)
    digit_holdout: float = knob(0.3, "Scenes use only the share of the digits that the classifiers family holds "
                                     "out (its val + test share at split seed 0), so the converted classifier "
                                     "never saw them.", exclusive_minimum=0.0, maximum=1.0)
    unseen_digits: float = knob(0.2, "Share of those digits (of each class) kept for the test scenes: every scene is "
                                     "also drawn over the same layout in these, and detection and segmentation are "
                                     "scored on that drawing of the test scenes, so on digits no training scene "
                                     "holds.", exclusive_minimum=0.0, maximum=0.5)
    scene_seed: int = knob(0, "Seed of the scene generator.", minimum=0, maximum=2**31 - 1)

    def check(self) -> None:
        if self.digits_min > self.digits_max:
            raise ConfigError(f"digits_min={self.digits_min} > digits_max={self.digits_max}")
        if self.scale_min > self.scale_max:
            raise ConfigError(f"scale_min={self.scale_min} > scale_max={self.scale_max}")


class ClassifierSource(Config):
    classifier_version: str = knob("champion", "Version of nnzoo-classifiers-cnn to convert: 'champion' (used "
                                               "if it was trained on this profile or a larger one, else a CNN "
                                               "is trained and registered in this run), or a version number.",
        form={"pattern": r"^(champion|[0-9]+)$", "rule": "'champion' or a version number"})

    def check(self) -> None:
        if self.classifier_version != "champion" and not self.classifier_version.isdigit():
            raise ConfigError(f"classifier_version={self.classifier_version!r}: expected 'champion' or a "
                              "version number")


class DetectionConfig(Config):
    detection_scales: tuple[float, ...] = knob((1.0, 1.1, 1.2, 1.3, 1.4, 1.5), "Image-pyramid scales: at scale "
                                               "s the scene is shrunk by 1/s so a digit s times MNIST size fills "
                                               "the classifier's window.", minimum=0.25, maximum=8.0)
    score_threshold: float = knob(0.99, "A heatmap peak becomes a detection if its class probability is at "
                                        "least this.", exclusive_minimum=0.0, maximum=1.0)
    nms_overlap: float = knob(0.2, "Non-maximum suppression: a box is dropped if this share of the smaller box "
                                   "lies in a better one (digits never overlap).", minimum=0.0, maximum=1.0)
    match_iou: float = knob(0.5, "IoU a detection needs with a true box of its class to count as found.",
                            exclusive_minimum=0.0, maximum=1.0)
    heatmap_sizes: tuple[str, ...] = knob(("112x112", "84x140", "160x96", "224x224"),
                                          "Canvas sizes (HxW) the converted net is run on to show that the "
                                          "heatmap follows the input.",
        form={"item": r"[0-9]+x[0-9]+", "rule": "sizes HxW, e.g. 84x140"})
    detect_scenes: int = knob(400, "Test scenes scored (at most the test split).", minimum=1, maximum=1_000_000)

    def check(self) -> None:
        for size in self.heatmap_sizes:
            height, _, width = size.partition("x")
            if not (height.isdigit() and width.isdigit()):
                raise ConfigError(f"heatmap_sizes: {size!r} is not HxW, e.g. 84x140")
        if not self.detection_scales:
            raise ConfigError("detection_scales=(): give at least one scale, e.g. 1.0")


SEGMENTER_ENCODERS = ("own", "classifier")


class SegmenterConfig(Config):
    encoder: str = knob("own", "own: the encoder-decoder below, trained from scratch; classifier: the converted "
                               "classifier (the fcn) as encoder, its class scores upsampled by Conv2DTranspose "
                               "layers that start as bilinear interpolation and learn, with its finer features "
                               "added (FCN, Long et al. 2015): it knows the digits from its first step, so it "
                               "needs far fewer steps; filters, bottleneck, skips and stem_stride then do not "
                               "apply.", choices=SEGMENTER_ENCODERS)
    filters: tuple[int, ...] = knob((12, 24, 48), "Channels of each encoder level (two 3x3 convs, a 2x2 max-pool) "
                                                  "and, mirrored, decoder level (a stride-2 Conv2DTranspose, two "
                                                  "3x3 convs).", minimum=1, maximum=4096)
    bottleneck: int = knob(48, "Channels of the two convs at the lowest resolution.", minimum=1, maximum=8192)
    skips: bool = knob(True, "Concatenate each encoder level into the decoder (U-Net style).")
    stem_stride: int = knob(2, "2: a stride-2 first conv, the levels work at half resolution and a last "
                               "Conv2DTranspose returns to full resolution (about 4x less compute); 1: none.",
                            minimum=1, maximum=2)
    crop: int = knob(64, "Train on random crops of this side (a multiple of stem_stride * 2**levels); the "
                         "net is fully convolutional and is scored on whole scenes. 0: whole scenes.",
                     minimum=0, maximum=4096)
    digit_weight: float = knob(1.0, "Loss weight of a pixel that is not background (a background pixel weighs "
                                    "1). Digits cover about a tenth of a scene: weighted up, the net tells them "
                                    "apart in fewer steps (quick: 5).", minimum=1.0, maximum=1000.0)
    extra_dataset: str = knob("", "A second segmentation dataset trained on after the scenes (full profile: "
                                  "tfds oxford_iiit_pet); empty: none.", choices=EXTRA_SEGMENTATION)


class GeneratorConfig(Config):
    poses: int = knob(1000, "Random poses applied to each prototype digit to make the training set.", minimum=1,
                      maximum=1_000_000)
    writers: int = knob(1, "Prototype digits per class (those nearest the class's mean image). With one, class + "
                           "pose determine the image, as chair type + viewpoint in the chairs paper; with more, "
                           "a generator given only the class learns their blurred average.", minimum=1,
                        maximum=1000)
    rotation_max: float = knob(40.0, "Rotations are drawn from +-this many degrees.", minimum=0.0, maximum=180.0)
    pose_scale_min: float = knob(0.8, "Smallest zoom of a posed digit.", minimum=0.25, maximum=2.0,
        form={"note": "at most pose_scale_max"})
    pose_scale_max: float = knob(1.1, "Largest zoom of a posed digit.", minimum=0.25, maximum=2.0,
        form={"note": "at least pose_scale_min"})
    dense_units: int = knob(128, "Width of the generator's dense layers.", minimum=2, maximum=65536)
    generator_epochs: int = knob(8, "Generator training epochs.", minimum=1, maximum=1000)
    generator_batch: int = knob(128, "Generator examples per step.", minimum=1, maximum=4096)
    generator_step_size: float = knob(2e-3, "Generator Adam learning rate.", exclusive_minimum=0.0, maximum=1.0)
    pose_seed: int = knob(0, "Seed of the pose draws.", minimum=0, maximum=2**31 - 1)

    def check(self) -> None:
        if self.pose_scale_min > self.pose_scale_max:
            raise ConfigError(f"pose_scale_min={self.pose_scale_min} > pose_scale_max={self.pose_scale_max}")


class FcnDeconvConfig(ExperimentConfig):
    """Fully-convolutional conversion, detection from heatmaps, learned-upsampling
    segmentation, and a class + pose generator, on scenes of MNIST digits.

    Run: ``nnzoo run fcn_deconv --profile quick`` (3 min 56 s on 2 CPU cores from an
    empty store, the classifier trained first included; the segmenter's 1,496 steps take
    2 min 9 s of it): on test scenes drawn in digits no training scene holds, detection
    precision 0.975 / recall 0.916 at IoU 0.5, segmentation mean IoU 0.846 (0.896 on the
    same scenes in training digits); 0.941 of generated digits recognised.
    ``train`` configures the segmenter; the generator has its own knobs.
    """

    data: ScenesData = ScenesData()
    train: TrainConfig = TrainConfig()
    classifier: ClassifierSource = ClassifierSource()
    detection: DetectionConfig = DetectionConfig()
    segmenter: SegmenterConfig = SegmenterConfig()
    generator: GeneratorConfig = GeneratorConfig()


CLAIMS = owned(
    "fcn_deconv",
    Claim("C9", "A classifier's dense head can be rewritten as convolutions and run on any image size",
          "Largest |CNN - FCN| output difference on 28x28 inputs; heatmaps on larger images",
          metric="max_abs_difference", comparator="<", threshold=1e-5, model="fcn",
          profiles=("smoke", "quick", "full"),
          pictures=(Picture("fcn", "plots/heatmaps_by_size.png", "heatmaps at several input sizes"),)),
    Claim("C10", "Heatmaps localise objects (detection)",
          "Boxes from heatmap peaks over an image pyramid on unseen test scenes: F1 at IoU 0.5",
          metric="detection_f1", comparator=">=", threshold=0.85, model="fcn",
          pictures=(Picture("fcn", "plots/detections.png", "true (green) and found (red) boxes"),
                    Picture("fcn", "plots/heatmaps_over_scenes.png", "class heatmaps over scenes"))),
    Claim("C11", "Deconvolution is learned upsampling: an encoder-decoder maps images to per-pixel classes",
          "Conv2DTranspose segmenter on unseen test scenes: mean IoU over the classes present",
          metric="mean_iou", comparator=">=", threshold=0.75, model="segmenter",
          pictures=(Picture("segmenter", "plots/masks.png", "predicted masks beside the true ones"),)),
    Claim("C12", "A net can generate an image from a class id and pose parameters",
          "Share of generated digits that the trained classifier labels with the requested class",
          metric="recognised_share", comparator=">=", threshold=0.8, model="generator",
          pictures=(Picture("generator", "plots/class_by_rotation.png", "generated digits: class x rotation"),)),
)

FAMILY = register_family(
    Family(
        name="fcn_deconv",
        description="A classifier's dense head as convolutions (heatmaps, boxes), a Conv2DTranspose segmenter "
                    "and a digit generator from class + pose",
        config_cls=FcnDeconvConfig,
        profiles={
            "smoke": {"data.scenes": 60, "data.canvas_height": 56, "data.canvas_width": 56, "data.digits_max": 2,
                      "train.epochs": 1, "train.run_eagerly": True, "train.batch_size": 16,
                      "train.early_stopping_patience": 0,
                      "segmenter.filters": (4, 8), "segmenter.bottleneck": 8, "segmenter.crop": 0,
                      "segmenter.digit_weight": 5.0,
                      "detection.detection_scales": (1.0, 1.5), "detection.heatmap_sizes": ("56x56", "40x72"),
                      "detection.detect_scenes": 8,
                      "generator.poses": 60, "generator.generator_epochs": 1, "generator.dense_units": 16},
            "quick": {"train.epochs": 34, "train.batch_size": 32, "train.learning_rate": 3e-3,
                      "train.lr_schedule": "cosine", "train.early_stopping_patience": 0,
                      "segmenter.digit_weight": 5.0},
            "full": {"data.digits_from": "mnist", "data.digit_holdout": 0.25, "data.scenes": 20000, **GPU_SWITCHES,
                     "train.epochs": 40, "train.batch_size": 32, "train.learning_rate": 1e-3,
                     "train.early_stopping_patience": 6, "segmenter.filters": (32, 64, 128),
                     "segmenter.bottleneck": 128, "segmenter.stem_stride": 1, "segmenter.crop": 0,
                     "segmenter.extra_dataset": "oxford_iiit_pet",
                     "generator.poses": 5000, "generator.generator_epochs": 20},
        },
        mock={"data.scenes": 40, "train.epochs": 1, "detection.detect_scenes": 4, "generator.poses": 20,
              "generator.generator_epochs": 1},
        pipeline=Pipeline(parent_run=True, steps=(
            Step("prepare_scenes", "### Scenes and posed digits\nDraws sample scenes with their boxes and masks "
                                   "on the parent run, and makes the posed-digit set of the generator."),
            Step("convert_to_fcn", "### Convert the classifier\nTakes the champion digit CNN (or trains one), "
                                   "rewrites each Dense layer after Flatten as a Conv2D with the Dense weights "
                                   "reshaped, checks it equals the CNN on 28x28 inputs and runs it on other "
                                   "sizes.", needs=("prepare_scenes",)),
            Step("detect", "### Detect\nBoxes from heatmap peaks over an image pyramid with non-maximum "
                           "suppression; precision and recall at IoU 0.5 on the test scenes; registers the "
                           "converted net. Its heatmaps and detections are also on the parent run.",
                 needs=("convert_to_fcn",)),
            Step("train_segmenter", "### Train the segmenter\nEncoder of convs and max-pools (or the converted "
                                    "classifier), decoder of Conv2DTranspose layers (learned upsampling) with "
                                    "skip connections, per-pixel classes.", needs=("prepare_scenes",
                                                                                   "convert_to_fcn"),
                 trains=True),
            Step("evaluate_segmenter", "### Evaluate the segmenter\nMean IoU and pixel accuracy on the test "
                                       "scenes, predicted masks beside the true ones; registers it.",
                 needs=("train_segmenter",)),
            Step("train_generator", "### Train the generator\nClass one-hot + pose -> Dense -> reshape -> "
                                    "Conv2DTranspose -> 28x28 digit.", needs=("prepare_scenes",), trains=True),
            Step("evaluate_generator", "### Evaluate the generator\nThe classifier's accuracy on generated "
                                       "digits, grids of class x rotation and interpolations; registers it.",
                 needs=("prepare_scenes", "train_generator", "convert_to_fcn")),
        )),
        form_params=("data.canvas_height", "data.canvas_width", "data.scenes", "train.epochs",
                     "detection.score_threshold", "train.seed"),
        claims=CLAIMS, quick_seconds=(165.0, 46.0),
        uses=(ModelFrom("classifier", "classifiers", "cnn", version="classifier.classifier_version"),),
        headline=(("fcn", "max_abs_difference"), ("fcn", "detection_precision"), ("fcn", "detection_recall"),
                  ("segmenter", "mean_iou"), ("segmenter", "pixel_accuracy"), ("generator", "recognised_share")),
    )
)
