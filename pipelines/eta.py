"""How long each family of the quick zoo should take on this machine (``make run``'s ETA).

Each family's quick pipeline was timed on a reference machine (``Family.quick_seconds``), split into training (the
``train_seconds`` of its runs) and the rest (Airflow start, data, evaluation, pictures,
MLflow). Before the zoo starts, :func:`calibrate` times two fixed workloads here in a child
process: a few training steps of a small CNN and an LSTM (TensorFlow on the CPU) and a
single-threaded Python/numpy loop. A family's ETA is its reference training time scaled by
the first ratio plus the rest scaled by the second, so a slower CPU, or one without
AVX-512 (TensorFlow's kernels are 3-4x slower there, Python much less), gets a longer one.

    python -m pipelines.eta      # this machine's calibration as JSON
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

REFERENCE_MACHINE = "2 cores, AVX-512"
REFERENCE_CALIBRATION = {"train": 1.05, "python": 0.35}
"""Seconds :func:`calibrate` took on the reference machine."""


def _train_workload() -> float:
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    cnn = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                            keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 3, activation="relu"),
                            keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    lstm = keras.Sequential([keras.Input((50, 2)), keras.layers.LSTM(32), keras.layers.Dense(1)])
    jobs = [(cnn, rng.random((64 * 100, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 64 * 100),
             "sparse_categorical_crossentropy", 64),
            (lstm, rng.random((32 * 60, 50, 2), dtype=np.float32), rng.random(32 * 60, dtype=np.float32), "mse", 32)]
    seconds = 0.0
    for model, x, y, loss, batch in jobs:
        model.compile(optimizer="adam", loss=loss)
        model.fit(x[: batch * 2], y[: batch * 2], batch_size=batch, epochs=1, verbose=0)  # traces the graph
        started = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        seconds += time.perf_counter() - started
    return seconds


def _python_workload() -> float:
    import numpy as np

    started = time.perf_counter()
    table: dict[str, float] = {}
    for index in range(1_200_000):
        table[f"key{index % 5000}"] = table.get(f"key{index % 5000}", 0.0) + index * 0.5
    json.loads(json.dumps(table))
    values = np.random.default_rng(0).random((300, 300))
    for _ in range(20):
        values = np.sort(values, axis=0) + 1.0
    return time.perf_counter() - started


def calibrate() -> dict[str, float]:
    """Seconds of the two workloads on this machine (the best of two or three runs of each)."""
    return {"train": min(_train_workload() for _ in range(2)),
            "python": min(_python_workload() for _ in range(3))}


def measured(timeout: float = 300.0) -> dict[str, float] | None:
    """:func:`calibrate` in a child process (TensorFlow stays out of this one); None if it fails."""
    try:
        done = subprocess.run([sys.executable, "-m", "pipelines.eta"], capture_output=True, text=True,
                              timeout=timeout, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return None


def expected_seconds(reference: tuple[float, float] | None, calibration: dict[str, float] | None) -> float | None:
    """A family's expected time here from its ``(training, rest)`` reference seconds
    (``Family.quick_seconds``), or None (no reference, or no calibration)."""
    if reference is None or calibration is None:
        return None
    training, rest = reference
    return (training * calibration["train"] / REFERENCE_CALIBRATION["train"]
            + rest * calibration["python"] / REFERENCE_CALIBRATION["python"])


def clock(seconds: float) -> str:
    """``1 h 02 min``, ``12 min 05 s`` or ``42 s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def main() -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(json.dumps(calibrate()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
