"""Cost of the project's trainer (MLflow per-epoch logging, NaN guard, resumable
checkpoints) against a bare ``model.fit``, same model, same data, one process.

    .venv/bin/python bench/tracking_overhead.py [--epochs 4] [--rounds 2] [--model cnn]

Prints the median per-epoch seconds of each and their ratio (target: <= 1.05).
Both compile the same model with the same optimizer, schedule and jit_compile; the
first epoch of every fit (graph tracing) is left out; the variants alternate, and
which goes first alternates too, so drift and warm-up hit both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class EpochTimer:
    def __init__(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                timer.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                timer.times.append(time.perf_counter() - timer.start)

        self.times: list[float] = []
        self.start = 0.0
        self.callback = Callback()


def added_work_per_epoch(model, steps_per_epoch: int, scratch: str, tracking, train, repeats: int = 10) -> dict:
    """Seconds per epoch of each thing the trainer does that bare ``model.fit`` does not."""
    import keras

    logs = {"loss": 0.1, "accuracy": 0.9, "val_loss": 0.1, "val_accuracy": 0.9}
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    timings = {}
    with tracking.run("nnzoo-bench", "added-work") as run:
        logger = tracking.keras_epoch_logger(run.run_id)
        start = time.perf_counter()
        for epoch in range(repeats):
            logger.on_epoch_end(epoch, logs)
        timings["MLflow metrics (one batch call)"] = (time.perf_counter() - start) / repeats
    backup = keras.callbacks.BackupAndRestore(str(Path(scratch) / "added-work-backup"))
    backup.set_model(model)
    backup.on_train_begin()
    start = time.perf_counter()
    for epoch in range(repeats):
        backup.on_epoch_end(epoch, logs)
    timings["checkpoint (BackupAndRestore)"] = (time.perf_counter() - start) / repeats
    guard = train.NaNGuard()
    guard.set_model(model)
    start = time.perf_counter()
    for batch in range(steps_per_epoch * repeats):
        guard.on_batch_end(batch, {"loss": 0.1})
    timings[f"NaN guard ({steps_per_epoch} batches)"] = (time.perf_counter() - start) / repeats
    progress = train.EpochProgress("bench", 1)
    start = time.perf_counter()
    for epoch in range(repeats):
        progress.on_epoch_begin(epoch)
        progress.on_epoch_end(epoch, logs)
    timings["progress line"] = (time.perf_counter() - start) / repeats
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="nnzoo-bench-")
    os.environ["NNZOO_HOME"] = scratch
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


    from models import build_model
    from pipelines import tracking, train
    from pipelines.config import apply_overrides, to_dict
    from pipelines.data.prepared import prepare, tf_dataset
    from pipelines.families import get_family

    config = get_family("classifiers").config("quick")
    config = apply_overrides(config, {"train.epochs": args.epochs, "train.early_stopping_patience": 0})
    data = prepare(config.data)
    train_data = tf_dataset(*data.split("train"), config.train.batch_size, shuffle=True, seed=0)
    val_data = tf_dataset(*data.split("val"), 512, shuffle=False)
    steps_per_epoch = int(train_data.cardinality())
    section = {k: tuple(v) if isinstance(v, list) else v for k, v in to_dict(getattr(config, args.model)).items()}

    def fresh_model():
        train.set_seed(0)
        return build_model(args.model, input_shape=data.image_shape, num_classes=data.num_classes, **section)

    def bare() -> list[float]:
        timer = EpochTimer()
        model = fresh_model()
        # Same compile options as the trainer (jit_compile explicit: Keras' "auto" may
        # pick XLA, which would compare compilers instead of tracking overhead).
        optimizer = train.make_optimizer(config.train.optimizer, config.train.learning_rate,
                                         config.train.lr_schedule, steps_per_epoch * args.epochs)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=config.train.jit_compile)
        model.fit(train_data, validation_data=val_data, epochs=args.epochs, callbacks=[timer.callback], verbose=0)
        return timer.times[1:]

    def tracked() -> list[float]:
        timer = EpochTimer()
        model = fresh_model()
        with tracking.run("nnzoo-bench", f"{args.model}-tracked") as run:
            run.log_params({"model": args.model})
            train.fit(model, train_data, val_data, config.train,
                      checkpoint_dir=Path(scratch) / "checkpoints" / run.run_id,
                      callbacks=[timer.callback, tracking.keras_epoch_logger(run.run_id)], verbose=0)
        return timer.times[1:]

    tracking.ensure_experiment("nnzoo-bench")  # store creation is a one-off, not per epoch
    bare_times: list[float] = []
    tracked_times: list[float] = []
    for round_index in range(args.rounds):
        # Alternate which variant goes first, so warm-up effects fall on both.
        if round_index % 2 == 0:
            bare_times += bare()
            tracked_times += tracked()
        else:
            tracked_times += tracked()
            bare_times += bare()
        print(f"round {round_index + 1}/{args.rounds}: bare {statistics.median(bare_times):.3f} s/epoch, "
              f"tracked {statistics.median(tracked_times):.3f} s/epoch", flush=True)
    ratio = statistics.median(tracked_times) / statistics.median(bare_times)
    added = added_work_per_epoch(fresh_model(), steps_per_epoch, scratch, tracking, train)
    print(f"model={args.model} epochs={args.epochs} rounds={args.rounds} train_size={len(data.split('train')[1])}")
    print(f"bare model.fit   : {statistics.median(bare_times):.3f} s/epoch (median of {len(bare_times)})")
    print(f"nnzoo trainer    : {statistics.median(tracked_times):.3f} s/epoch (median of {len(tracked_times)})")
    print(f"ratio tracked/bare: {ratio:.3f} (target <= 1.05)")
    bare_epoch = statistics.median(bare_times)
    print("work the trainer adds per epoch, timed on its own (steadier than the end-to-end ratio on a busy machine):")
    for name, seconds in added.items():
        print(f"  {name:<34} {seconds * 1000:8.2f} ms")
    total = sum(added.values())
    print(f"added/bare epoch: {total:.4f} s / {bare_epoch:.3f} s -> ratio {1 + total / bare_epoch:.3f} (target <= 1.05)")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
