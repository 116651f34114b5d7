"""Two challengers promoted at the same instant from two processes, many rounds: does
the better one always end ``champion``, and does the registry lose no alias?

    .venv/bin/python bench/promotion_race.py [--rounds 50] [--store sqlite|postgres|server]
                                             [--no-lock] [--json FILE]

Each round registers two versions of a new model (same profile and dataset, one better
at random), and two worker processes call :func:`pipelines.tracking.promote` on one
each, released together by a barrier. After the round: ``champion`` and the lineage
alias must be on the better version, ``challenger`` on one of the two. ``--no-lock``
runs the same without the promotion lock, to show the race it prevents. Stores:
``sqlite`` (the embedded mode's), ``postgres`` (a new database on 127.0.0.1:5432,
dropped after), ``server`` (an MLflow tracking server on that PostgreSQL database, the
distributed mode's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROFILE, DATASET, METRIC = "smoke", "race_digits", "test_accuracy"


def _worker(uri: str, lock: bool, barrier, jobs, results) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from pipelines import tracking

    if not lock:
        tracking.promotion_lock = lambda name, timeout=0: contextlib.nullcontext()  # the race, shown
    while True:
        job = jobs.get()
        if job is None:
            return
        name, version, value = job
        barrier.wait()
        try:
            decided = tracking.promote(name, version, METRIC, value, profile=PROFILE, dataset=DATASET)
            results.put((name, version, decided["promoted"], None))
        except Exception as error:  # noqa: BLE001 - reported by the main process
            import traceback

            results.put((name, version, None, f"{type(error).__name__}: {error}\n{traceback.format_exc()[-1500:]}"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def store(kind: str):
    """A new MLflow store of the given kind; yields its tracking URI."""
    if kind == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="nnzoo-race-"))
        try:
            yield f"sqlite:///{folder / 'mlflow.db'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import psycopg2

    database = f"nnzoo_race_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    db_uri = f"postgresql://postgres@127.0.0.1:5432/{database}"
    server = None
    try:
        if kind == "postgres":
            yield db_uri
        else:
            port = _free_port()
            folder = Path(tempfile.mkdtemp(prefix="nnzoo-race-"))
            log = open(folder / "mlflow-server.log", "w")  # noqa: SIM115 - closed below
            server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                                       db_uri, "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            import requests

            deadline = time.monotonic() + 180
            while True:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                        break
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the MLflow server did not start; see {folder / 'mlflow-server.log'}")
                time.sleep(1)
            yield f"http://127.0.0.1:{port}"
    finally:
        if server is not None:
            os.killpg(server.pid, 15)
            server.wait(30)
            log.close()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()


def race(uri: str, rounds: int, lock: bool = True, seed: int = 0) -> dict:
    """Run the rounds on the store at ``uri``; returns the counts and the bad rounds."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from pipelines import tracking

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    queues = [context.Queue(), context.Queue()]
    workers = [context.Process(target=_worker, args=(uri, lock, barrier, queue, results), daemon=True)
               for queue in queues]
    for worker in workers:
        worker.start()
    client = tracking.client()
    rng = random.Random(seed)
    bad, errors, wall = [], [], []
    try:
        for round_number in range(rounds):
            name = f"race-{uuid.uuid4().hex[:8]}"
            client.create_registered_model(name)
            values = [round(rng.uniform(0.5, 0.99), 4) for _ in range(2)]
            while values[0] == values[1]:
                values[1] = round(rng.uniform(0.5, 0.99), 4)
            versions = [client.create_model_version(name, f"s3://nnzoo-race-bench/{name}/{i}").version for i in (0, 1)]
            begin = time.perf_counter()
            for queue, version, value in zip(queues, versions, values, strict=True):
                queue.put((name, version, value))
            answers = [results.get(timeout=300) for _ in range(2)]
            wall.append(time.perf_counter() - begin)
            errors += [f"round {round_number}: {answer[3]}" for answer in answers if answer[3]]
            best = versions[values.index(max(values))]
            aliases = {alias: client.get_model_version_by_alias(name, alias).version
                       for alias in (tracking.CHAMPION, tracking.lineage_alias(PROFILE, DATASET), tracking.CHALLENGER)
                       if _has_alias(client, name, alias)}
            wanted = {tracking.CHAMPION: best, tracking.lineage_alias(PROFILE, DATASET): best}
            if any(aliases.get(alias) != version for alias, version in wanted.items()) or \
                    aliases.get(tracking.CHALLENGER) not in versions:
                bad.append({"round": round_number, "values": dict(zip(versions, values, strict=True)),
                            "aliases": aliases})
            left = [model.name for model in client.search_registered_models(f"name = '{name}{tracking.PROMOTION_LOCK_SUFFIX}'")]
            if left:
                bad.append({"round": round_number, "lock_left": left})
    finally:
        for queue in queues:
            queue.put(None)
        for worker in workers:
            worker.join(30)
    wall.sort()
    return {"rounds": rounds, "lock": lock, "wrong_rounds": len(bad), "errors": errors, "bad": bad[:10],
            "promotion_pair_s_p50": round(wall[len(wall) // 2], 3), "promotion_pair_s_max": round(wall[-1], 3)}


def _has_alias(client, name: str, alias: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version_by_alias(name, alias)
        return True
    except MlflowException:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--store", choices=("sqlite", "postgres", "server"), default="sqlite")
    parser.add_argument("--no-lock", action="store_true", help="promote without the lock (shows the race)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with store(args.store) as uri:
        result = {"store": args.store, **race(uri, args.rounds, lock=not args.no_lock)}
    print(f"{args.store}: {result['rounds']} rounds {'with' if result['lock'] else 'WITHOUT'} the lock: "
          f"{result['wrong_rounds']} ended with the wrong champion or a lost alias, {len(result['errors'])} errors; "
          f"a pair of promotions took {result['promotion_pair_s_p50']}s (p50), {result['promotion_pair_s_max']}s (max)")
    for line in result["bad"][:3] + result["errors"][:3]:
        print("  ", line)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if not result["wrong_rounds"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
