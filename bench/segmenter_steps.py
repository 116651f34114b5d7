"""How far the scene segmenter gets per training step, and how fast the steps are, on
whatever Keras backend and device this machine has (float32 against mixed precision).

The quick profile of ``fcn_deconv`` trains the segmenter for as many steps as 2 CPU
cores allow in a few minutes; this prints mean IoU on held-out quick scenes after
each block of steps, so the number of steps the 0.8 target needs is measured, not
guessed. Needs only Keras, NumPy, SciPy and Pillow (no MLflow, no tf.data), so it runs
on a GPU machine with any Keras backend.

    python bench/segmenter_steps.py --steps 3000 --every 500 [--digits digits.npz]

``--digits`` reads ``x`` (uint8 [N,28,28]) and ``y`` from a file (for a machine without
the bundled MNIST subset); by default they come from the data registry.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def digits(path: str | None) -> tuple[np.ndarray, np.ndarray]:
    from pipelines.data.prepared import stratified_split

    if path:
        with np.load(path) as stored:
            images, labels = stored["x"], stored["y"]
    else:
        from pipelines.data.registry import load_arrays

        loaded = load_arrays("mnist_subset").arrays
        images, labels = loaded["x"][..., 0], loaded["y"]
    held = np.sort(stratified_split(labels, 0.0, 0.3, seed=0)["test"])  # as the scene generator's default
    return images[held], labels[held]


def mean_iou(predicted: np.ndarray, truth: np.ndarray, classes: int) -> float:
    ious = []
    for c in range(classes):
        union = np.logical_or(predicted == c, truth == c).sum()
        if (truth == c).any():
            ious.append(np.logical_and(predicted == c, truth == c).sum() / union)
    return float(np.mean(ious))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--precision", action="append", choices=("float32", "mixed_float16", "mixed_bfloat16"))
    parser.add_argument("--digits")
    parser.add_argument("--no-jit", action="store_true", help="compile without XLA")
    parser.add_argument("--cosine", action="store_true", help="cosine decay of the learning rate over --steps")
    parser.add_argument("--digit-weight", type=float, default=1.0,
                        help="loss weight of digit pixels (background pixels weigh 1)")
    args = parser.parse_args()

    import keras

    from models.deconv import build_deconv_segmenter
    from pipelines.data.source_scenes import make_scenes

    images, labels = digits(args.digits)
    scenes = make_scenes(np.random.default_rng(0), images, labels, scenes=2000, height=112, width=112)
    x = scenes["x"].astype(np.float32) / 255.0
    y = scenes["mask"].astype(np.int32)
    train_x, train_y, test_x, test_y = x[:1600], y[:1600], x[1600:], y[1600:]
    devices = keras.backend.backend()
    try:
        import jax

        devices += f" on {jax.devices()[0].device_kind}"
    except ImportError:
        pass
    print(f"keras {keras.__version__}, backend {devices}; 1600 train / 400 test scenes 112x112, crops {args.crop}")
    rng = np.random.default_rng(0)
    for precision in args.precision or ["float32", "mixed_float16"]:
        keras.mixed_precision.set_global_policy(precision)
        keras.utils.set_random_seed(0)
        model = build_deconv_segmenter(num_classes=11, filters=(12, 24, 48), bottleneck=48, stem_stride=2)
        rate = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.steps) if args.cosine else \
            args.learning_rate
        model.compile(keras.optimizers.Adam(rate), "sparse_categorical_crossentropy",
                      jit_compile=not args.no_jit)
        done, seconds = 0, 0.0
        while done < args.steps:
            block = min(args.every, args.steps - done)
            picks = rng.integers(0, len(train_x), (block, args.batch))
            tops, lefts = rng.integers(0, 112 - args.crop + 1, (2, block, args.batch))
            batches_x = np.stack([[train_x[i, t:t + args.crop, s:s + args.crop] for i, t, s in zip(p, tt, ss,
                                                                                                    strict=True)]
                                  for p, tt, ss in zip(picks, tops, lefts, strict=True)])
            batches_y = np.stack([[train_y[i, t:t + args.crop, s:s + args.crop] for i, t, s in zip(p, tt, ss,
                                                                                                    strict=True)]
                                  for p, tt, ss in zip(picks, tops, lefts, strict=True)])
            model.train_on_batch(batches_x[0], batches_y[0])  # compiled before timing
            started = time.perf_counter()
            weights = np.where(batches_y > 0, args.digit_weight, 1.0).astype(np.float32)
            for step in range(block):
                loss = model.train_on_batch(batches_x[step], batches_y[step], sample_weight=weights[step])
            float(np.asarray(loss).ravel()[0])
            seconds += time.perf_counter() - started
            done += block
            predicted = np.asarray(model.predict(test_x, batch_size=100, verbose=0)).argmax(-1)
            print(f"{precision:>14}: step {done:>6}  {done * args.batch / seconds:8.0f} crops/s  "
                  f"mean IoU {mean_iou(predicted, test_y, 11):.3f}", flush=True)
    keras.mixed_precision.set_global_policy("float32")


if __name__ == "__main__":
    main()
