#!/usr/bin/env bash
# The full profile on a machine with a GPU and nnzoo installed (.venv, `make venv` or
# `pip install -e .[gpu]`): every family's full pipeline with its trainings cut to a
# few hundred steps, then per training the device, examples/s and peak GPU memory, and
# the time the classifiers' CNN needs to reach 0.99 validation accuracy on MNIST (one
# full-length classifiers run). The full profile's datasets must be prepared, or
# downloadable (NNZOO_TFDS_DOWNLOAD=1); `nnzoo run FAMILY --profile full --dry-run`
# says which and how large. Writes into var/gpu-check (its own stores).
#   bash scripts/gpu_check.sh                       # all families
#   bash scripts/gpu_check.sh --family classifiers  # one (repeatable)
#   bash scripts/gpu_check.sh --skip-mnist-target   # without the full-length MNIST run
set -euo pipefail
cd "$(dirname "$0")/.."
python="${NNZOO_PYTHON:-.venv/bin/python}"
export NNZOO_HOME="${NNZOO_HOME:-$PWD/var/gpu-check}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$NNZOO_HOME/mlflow.db}"
mkdir -p "$NNZOO_HOME"
"$python" - <<'PY'
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"gpu_check: TensorFlow {tf.__version__}, GPUs: {[gpu.name for gpu in gpus] or 'none (the check runs on CPU)'}")
PY
exec "$python" scripts/gpu_check.py "$@"
