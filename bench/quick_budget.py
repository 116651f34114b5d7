"""Where the quick zoo's time goes, and what each CPU lever would buy.

    .venv/bin/python bench/quick_budget.py [--store var] [--levers] [--out var/bench]

Budget (from the MLflow store a ``make run`` filled, nothing is trained): each family's
pipeline time (from its first run's start to its last run's end), every training run's
seconds, epochs, examples/s and share of its family's time, and the rest (data, evaluation,
pictures, registration) as one row per family.

Levers (``--levers``, trains for a few minutes): one model of each family's quick profile,
at that profile's shapes, fitted on random arrays in memory with a plain ``model.fit``,
first as the quick profile does it (the baseline, measured in the same run) and then with
one lever changed: XLA (``jit_compile``), ``steps_per_execution``, twice the batch, one
intra-op thread, and the project's trainer around the same fit (per-epoch validation,
MLflow metrics, checkpoints). Each lever prints its examples/s and its ratio to the
baseline (above 1: faster). The first epoch (tracing) is left out; variants alternate.

Writes ``quick_budget.json`` and ``quick_budget.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def machine() -> str:
    """Cores and whether the CPU has AVX-512 (``grep -c avx512 /proc/cpuinfo``)."""
    try:
        avx512 = "avx512" in Path("/proc/cpuinfo").read_text()
    except OSError:
        avx512 = False
    return f"{os.cpu_count()} cores, {'AVX-512' if avx512 else 'AVX2 only'}"


def budget(store: Path) -> list[dict[str, Any]]:
    """One row per training run, one 'rest' row and one total per family, for each family's
    latest pipeline run in the store (its runs share a run key ``<dag or cli run>/...``);
    the family's time spans its first run's start to its last run's end."""
    from mlflow import MlflowClient

    from pipelines import tracking

    if not (store / "mlflow" / "mlflow.db").is_file():
        print(f"no MLflow store under {store}: `make run` fills one (or pass --store); budget skipped")
        return []
    uri = f"sqlite:///{store / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    rows = []
    for experiment in client.search_experiments():
        if not experiment.name.startswith("nnzoo-"):
            continue
        runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                                  max_results=2000)
        keyed = [run for run in runs if run.data.tags.get(tracking.TAG_RUN_KEY) and run.info.end_time]
        if not keyed:
            continue
        def dag_run(run: Any) -> str:  # ``<dag id>/<dag run id>/<step>``
            return "/".join(run.data.tags[tracking.TAG_RUN_KEY].split("/")[:2])

        mine = [run for run in keyed if dag_run(run) == dag_run(keyed[0])]
        family = experiment.name.removeprefix("nnzoo-")
        total = (max(run.info.end_time for run in mine) - min(run.info.start_time for run in mine)) / 1000
        trained = 0.0
        for run in sorted(mine, key=lambda run: run.info.start_time):
            metrics = run.data.metrics
            if "train_seconds" not in metrics:
                continue
            trained += metrics["train_seconds"]
            rows.append({"family": family, "run": run.info.run_name, "seconds": metrics["train_seconds"],
                         "epochs": metrics.get("epochs_trained"), "examples_per_second":
                         metrics.get("examples_per_second"), "share": metrics["train_seconds"] / total})
        rows.append({"family": family, "run": "(rest: data, evaluation, pictures, registry)",
                     "seconds": total - trained, "share": (total - trained) / total})
        rows.append({"family": family, "run": "(family total)", "seconds": total, "share": 1.0})
    return rows


# --- levers -------------------------------------------------------------------------------------------


def representatives() -> dict[str, Any]:
    """``{name: (build, x, y, fit options)}``: one model per family at its quick shapes."""
    import numpy as np

    from models import build_model
    from pipelines.families import get_family

    rng = np.random.default_rng(0)
    images = lambda n, *shape: rng.random((n, *shape), dtype=np.float32)  # noqa: E731
    labels = lambda n, k=10: rng.integers(0, k, n)  # noqa: E731
    quick = {name: get_family(name).config("quick") for name in (
        "classifiers", "cnn_depth", "fcn_deconv", "sequences", "unsupervised")}
    depth, seq, fcn = quick["cnn_depth"], quick["sequences"], quick["fcn_deconv"]
    adding_t = max(seq.adding.lengths)
    return {
        "classifiers cnn": (lambda: build_model("cnn", input_shape=(28, 28, 1), num_classes=10),
                            images(3500, 28, 28, 1), labels(3500), quick["classifiers"].train.batch_size, {}),
        "cnn_depth residual": (lambda: build_model("deep_cnn", input_shape=(28, 28, 1), num_classes=10,
                                                   depth=depth.degradation.depths[1], block="residual",
                                                   widths=depth.degradation.widths, batch_norm=True),
                               images(3500, 28, 28, 1), labels(3500), depth.train.batch_size, {}),
        "fcn_deconv segmenter": (lambda: build_model("deconv_segmenter", num_classes=11, channels=1,
                                                     filters=tuple(fcn.segmenter.filters),
                                                     bottleneck=fcn.segmenter.bottleneck, skips=True,
                                                     stem_stride=fcn.segmenter.stem_stride),
                                 images(1400, fcn.segmenter.crop, fcn.segmenter.crop, 1),
                                 labels(1400 * fcn.segmenter.crop ** 2, 11).reshape(
                                     1400, fcn.segmenter.crop, fcn.segmenter.crop), fcn.train.batch_size, {}),
        f"sequences lstm T={adding_t}": (lambda: build_model("sequence_regressor", input_shape=(adding_t, 2),
                                                             cell="lstm", units=seq.adding.units),
                                         images(1400, adding_t, 2), rng.random(1400, dtype=np.float32),
                                         seq.adding.batch, {"loss": "mse"}),
        "unsupervised dbn classifier": (lambda: build_model("mlp", input_shape=(28, 28, 1), num_classes=10,
                                                            hidden_units=tuple(quick["unsupervised"].rbm.layers),
                                                            activation="sigmoid", dropout_rate=0.0),
                                        images(3500, 28, 28, 1), labels(3500),
                                        quick["unsupervised"].finetune.batch_size, {}),
    }


def time_fit(build: Any, x: Any, y: Any, batch: int, *, loss: str = "sparse_categorical_crossentropy",
             jit_compile: bool = False, steps_per_execution: int = 1, epochs: int = 3,
             trainer: bool = False) -> float:
    """Examples per second of epochs 2.. of a fit (the first traces the graph)."""
    import keras

    from pipelines import train

    train.set_seed(0)
    model = build()
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.start)

    if trainer:
        from pipelines import tracking
        from pipelines.config import TrainConfig
        from pipelines.data.prepared import batches

        config = TrainConfig(epochs=epochs, batch_size=batch, early_stopping_patience=0)
        cut = len(x) // 10
        with tracking.run("nnzoo-bench", "trainer") as run, tempfile.TemporaryDirectory() as folder:
            train.fit(model, batches((x[cut:], y[cut:]), batch, shuffle=True, normalize=False),
                      batches((x[:cut], y[:cut]), 512, normalize=False), config, checkpoint_dir=folder,
                      callbacks=[tracking.keras_epoch_logger(run.run_id), Timer()], loss=loss,
                      metrics=("accuracy",) if "categorical" in loss else ())
        examples = len(x) - cut
    else:
        model.compile(optimizer="adam", loss=loss, jit_compile=jit_compile, steps_per_execution=steps_per_execution)
        model.fit(x, y, batch_size=batch, epochs=epochs, callbacks=[Timer()], verbose=0, shuffle=True)
        examples = len(x)
    return examples / statistics.median(times[1:])


def levers(rounds: int) -> list[dict[str, Any]]:
    import tensorflow as tf

    rows = []
    variants = {"baseline": {}, "XLA (jit_compile)": {"jit_compile": True},
                "steps_per_execution=16": {"steps_per_execution": 16}, "batch x2": {"batch": 2},
                "project trainer (validation, MLflow, checkpoints)": {"trainer": True}}
    for name, (build, x, y, batch, fit) in representatives().items():
        speeds: dict[str, list[float]] = {variant: [] for variant in variants}
        for round_ in range(rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for variant in order:
                options = dict(variants[variant])
                size = batch * options.pop("batch", 1)
                speeds[variant].append(time_fit(build, x, y, size, **fit, **options))
        base = statistics.median(speeds["baseline"])
        for variant, values in speeds.items():
            speed = statistics.median(values)
            rows.append({"model": name, "lever": variant, "examples_per_second": speed, "ratio": speed / base})
            print(f"{name:32s} {variant:50s} {speed:10.0f} ex/s  x{speed / base:.2f}", flush=True)
    rows.append({"threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                             "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}})
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Quick zoo budget ({result['machine']})", "",
             "| family | run | seconds | epochs | examples/s | share of family |", "|---|---|---|---|---|---|"]
    for row in result["budget"]:
        epochs = "" if row.get("epochs") is None else f"{row['epochs']:.0f}"
        speed = "" if row.get("examples_per_second") is None else f"{row['examples_per_second']:,.0f}"
        lines.append(f"| {row['family']} | {row['run']} | {row['seconds']:.0f} | {epochs} | {speed} | "
                     f"{row['share']:.0%} |")
    if result.get("levers"):
        lines += ["", "| model | lever | examples/s | vs baseline |", "|---|---|---|---|"]
        lines += [f"| {row['model']} | {row['lever']} | {row['examples_per_second']:,.0f} | x{row['ratio']:.2f} |"
                  for row in result["levers"] if "lever" in row]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path("var"), help="NNZOO_HOME of the make run (var)")
    parser.add_argument("--levers", action="store_true", help="also time the CPU levers (a few minutes)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result: dict[str, Any] = {"machine": machine(), "budget": budget(args.store.resolve())}
    if args.levers:
        scratch = tempfile.mkdtemp(prefix="nnzoo-bench-")
        os.environ["NNZOO_HOME"] = scratch
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
        result["levers"] = levers(args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quick_budget.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (args.out / "quick_budget.md").write_text(text)
    print(text)
    print(f"written: {args.out / 'quick_budget.json'}, {args.out / 'quick_budget.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
