#!/usr/bin/env bash
# The test command (`make test`, `.ci/run`): lint, then pytest. pytest's exit 5
# ("no tests collected") is a failure here, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONDONTWRITEBYTECODE=1

.venv/bin/ruff check . || exit 1
.venv/bin/ruff check --select AIR3 dags/ || exit 1

# Chromium + chromedriver for tests/service/test_browser.py (Debian packages; no-op when present),
# unless the service tests are deselected (`make test PYTEST_ARGS='-m "not service"'`).
case " $* " in
  *"not service"*) ;;
  *) bash scripts/system_deps.sh || exit 1 ;;
esac

# Two workers (NNZOO_TEST_WORKERS): a test trains small models on about one core at a
# time and the service tests mostly wait on Airflow, so two share 2 cores. Each test
# file stays on one worker (--dist loadfile), so its module fixtures (a whole smoke
# pipeline) run once, and all of tests/service on one worker, which starts one stack and
# stops it after the last of them; the longest files go first (tests/conftest.py).
workers="${NNZOO_TEST_WORKERS:-2}"
case " $* " in
  *" -n "*|*" -n="*|*" --numprocesses"*) workers=0 ;;  # the caller chose
esac
parallel=()
if [ "$workers" -gt 1 ]; then
  parallel=(-n "$workers" --dist loadfile)
fi

.venv/bin/python -m pytest "${parallel[@]}" "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$code"
