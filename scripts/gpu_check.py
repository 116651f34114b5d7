"""The full profile on a GPU machine, briefly: each family's full pipeline with its
trainings cut to a few hundred steps, then per training its device, examples/s and peak
GPU memory, and the time the classifiers' CNN takes to reach 0.99 test-set accuracy on
MNIST (its validation accuracy, epoch by epoch, from a full-length run).

Run by ``scripts/gpu_check.sh`` (see there); needs the full profile's datasets prepared
(``NNZOO_TFDS_DOWNLOAD=1`` fetches them) and writes into its own ``NNZOO_HOME``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# Per family: the counts that cut its full trainings to a few hundred steps each.
SHORT = {
    "classifiers": ["train.epochs=1"],
    "cnn_depth": ["train.epochs=1"],
    "fcn_deconv": ["train.epochs=1", "data.scenes=4000", "generator.generator_epochs=1"],
    "sequences": ["train.epochs=1", "adding.max_epochs=1", "adding.examples=20000", "future_context.max_epochs=1"],
    "style_transfer": ["train.epochs=1", "fast.stylizer_steps_per_epoch=300", "iterative.iterations=100"],
    "unsupervised": ["train.epochs=2", "rbm.epochs=1", "finetune.steps=300", "finetune.seeds=1"],
}


def _runs(run_key: str) -> list[dict]:
    """Every training run of one ``nnzoo run`` (its run key), newest last."""
    from pipelines import tracking

    client = tracking.client()
    rows = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], f"tags.`nnzoo.run_key` LIKE '{run_key}%'"):
            metrics, params = run.data.metrics, run.data.params
            if "train_seconds" in metrics:
                rows.append({"run": run.info.run_name, "device": params.get("device", "?"),
                             "examples_per_second": metrics.get("examples_per_second"),
                             "gpu_peak_memory_mb": metrics.get("gpu_peak_memory_mb"),
                             "seconds": metrics["train_seconds"], "run_id": run.info.run_id})
    return rows


def _run(family: str, params: list[str]) -> tuple[int, str]:
    command = [sys.executable, "-m", "pipelines.cli", "run", family, "--profile", "full"]
    for param in params:
        command += ["--param", param]
    print(f"== {' '.join(command[2:])}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    sys.stderr.write(done.stderr[-3000:])
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
    return done.returncode, last


def time_to_accuracy(run_id: str, target: float) -> float | None:
    """Seconds from the run's start until its validation accuracy first reached ``target``."""
    from pipelines import tracking

    client = tracking.client()
    started = client.get_run(run_id).info.start_time
    for metric in sorted(client.get_metric_history(run_id, "val_accuracy"), key=lambda m: m.step):
        if metric.value >= target:
            return (metric.timestamp - started) / 1000.0
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", action="append", help="only these families (repeatable)")
    parser.add_argument("--skip-mnist-target", action="store_true",
                        help="leave out the full-length classifiers run that times 0.99 on MNIST")
    args = parser.parse_args()
    families = args.family or list(SHORT)
    results, failed = [], []
    for family in families:
        started = time.perf_counter()
        status, last = _run(family, SHORT[family])
        try:
            summary = json.loads(last)
        except ValueError:
            summary = {}
        first = next(iter(summary.get("runs", {}).values()), None)
        key_runs = _runs_of(first) if first else []
        results.append({"family": family, "status": status, "seconds": time.perf_counter() - started,
                        "trainings": key_runs})
        if status:
            failed.append(family)
    mnist = None
    if not args.skip_mnist_target and "classifiers" in families:
        status, last = _run("classifiers", [])
        try:
            cnn = json.loads(last).get("runs", {}).get("cnn")
        except ValueError:
            cnn = None
        mnist = time_to_accuracy(cnn, 0.99) if cnn else None
    print()
    print(f"{'family':<15} {'training':<40} {'device':<32} {'examples/s':>11} {'peak GPU MB':>12}")
    for result in results:
        for row in result["trainings"] or [{"run": "(no training run)", "device": "-"}]:
            rate = row.get("examples_per_second")
            peak = row.get("gpu_peak_memory_mb")
            print(f"{result['family']:<15} {row['run']:<40} {row['device']:<32} "
                  f"{f'{rate:,.0f}' if rate else '-':>11} {f'{peak:,.0f}' if peak else '-':>12}")
    if not args.skip_mnist_target and "classifiers" in families:
        print(f"classifiers CNN to 0.99 validation accuracy on MNIST: "
              f"{f'{mnist:.0f} s' if mnist is not None else 'not reached'}")
    if failed:
        print(f"failed: {', '.join(failed)} (their errors are above)")
    return 1 if failed else 0


def _runs_of(run_id: str) -> list[dict]:
    """The training runs of the pipeline a summary run belongs to (same run key prefix)."""
    from pipelines import tracking

    run = tracking.get_run(run_id)
    key = run.data.tags.get("nnzoo.run_key", "")
    return _runs(key.rsplit("/", 1)[0]) if key else []


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
