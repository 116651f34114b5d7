"""Many DAG runs at once on the distributed stack, with faults (``make load``).

Starts the stack of :mod:`pipelines.stack` (Airflow's CeleryExecutor on PostgreSQL,
a Redis of its own, ``--workers`` Celery workers, an MLflow tracking server on
PostgreSQL serving artifacts), triggers ``--runs`` smoke runs across ``--families``
through the REST API (a different seed each, so the models differ), injects the faults
of ``--faults`` while they run, waits (at most ``--timeout`` seconds), stops everything
it started, and prints and writes (``load.json``, ``load.md`` under ``--out``):

* DAG runs succeeded, task failures and retries;
* p50/p95 task queue wait (queued to started) and duration, task instances finished
  per minute (scheduler throughput), wall time;
* MLflow runs per training task over all its tries (must be 1: a retry resumes the
  run of the try it replaces), registered versions per DAG run (must match what the
  family registers), and whether ``champion`` of every registered model is on the best
  version of its lineage (profile and dataset) at the end;
* each fault: when it was injected, what it hit, and the tries it cost.

Faults: ``worker-kill`` SIGKILLs a Celery worker and every process below it while a
training task runs on it, and starts it again 10 s later (the scheduler finds the
task's heartbeat gone after ``task_instance_heartbeat_timeout`` and retries it; the
training resumes its run); ``mlflow-restart`` stops the tracking server while
trainings run and starts it again 5 s later (the clients retry with backoff);
``redis-restart`` restarts the broker (its append-only file keeps what is queued).

    python bench/load.py --runs 16 --families classifiers,style_transfer
    python bench/load.py --runs 4 --faults worker-kill     # the CI size
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import kit  # noqa: E402
from pipelines import stack as stacks  # noqa: E402
from pipelines.families import all_families  # noqa: E402

FAULTS = ("worker-kill", "mlflow-restart", "redis-restart")
HEARTBEAT_TIMEOUT_S = 60
"""``[scheduler] task_instance_heartbeat_timeout`` of the load stack: how long a task of a
killed worker stays ``running`` before the scheduler fails it into its retry (Airflow's
default is 300 s)."""
QUEUED_TIMEOUT_S = 180
"""``[scheduler] task_queued_timeout``: a task whose message a dead worker had taken
before it started is queued again after this long (default 600 s)."""


def say(message: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_time(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Load:
    def __init__(self, stack: stacks.Stack, families: list[str], runs: int) -> None:
        self.stack, self.families, self.count = stack, families, runs
        self.runs: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.mlflow_args = stack.component("mlflow-server").args

    # --- the runs -------------------------------------------------------------------------
    def trigger_all(self) -> None:
        for family in self.families:
            stacks.unpause(self.stack, f"zoo_{family}")
        for index in range(self.count):
            family = self.families[index % len(self.families)]
            dag_id = f"zoo_{family}"
            run_id = stacks.trigger(self.stack, dag_id, {"profile": "smoke", "seed": index})
            self.runs.append({"family": family, "dag_id": dag_id, "run_id": run_id, "seed": index,
                              "state": "queued"})
        say(f"triggered {self.count} runs: " + ", ".join(
            f"{sum(r['family'] == f for r in self.runs)} x {f}" for f in self.families))

    def poll(self) -> bool:
        """Update the runs' states; True once every run has ended."""
        import requests

        for run in self.runs:
            if run["state"] not in ("success", "failed"):
                try:
                    run["state"] = stacks.run_state(self.stack, run["dag_id"], run["run_id"])
                except (stacks.StackError, requests.RequestException) as error:  # asked again next round
                    say(f"could not read the state of {run['dag_id']}/{run['run_id']}: {error}")
        return all(run["state"] in ("success", "failed") for run in self.runs)

    def running_training(self, worker: str) -> dict | None:
        """A training task instance running on the Celery worker ``worker`` now, if any:
        one of the worker's task processes (``airflow worker -- <task instance id>``)."""
        component = next((c for c in self.stack.components if c.name == worker), None)
        if component is None:
            return None
        here = set()
        for pid in stacks.descendants(component.process.pid):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("airflow worker -- "):
                here.add(title.split("--", 1)[1].strip())
        if not here:
            return None
        for run in self.runs:
            if run["state"] != "running":
                continue
            for key, ti in stacks.task_instances(self.stack, run["dag_id"], run["run_id"]).items():
                if ti["state"] == "running" and ti["queue"] == stacks.TRAINING_QUEUE and ti.get("id") in here:
                    return {"dag_id": run["dag_id"], "run_id": run["run_id"], "task": key, "ti": ti["id"]}
        return None

    # --- faults ---------------------------------------------------------------------------
    def inject(self, faults: list[str]) -> None:
        """Each fault in turn, once trainings run, spaced so that each has its own effect."""
        try:
            self._inject(faults)
        except Exception as error:  # noted in the report; the load goes on
            self.faults.append({"fault": "?", "injected": False, "why": f"the injector failed: {error!r}"})

    def _inject(self, faults: list[str]) -> None:
        for fault in faults:
            target = None
            workers = [c.name for c in self.stack.components if c.name.startswith(stacks.worker_name(0))]
            while not self.done.is_set():
                target = next((found | {"worker": name} for name in workers
                               if (found := self.running_training(name))), None)
                if target:
                    break
                time.sleep(1)
            if self.done.is_set():
                self.faults.append({"fault": fault, "injected": False, "why": "every run had ended"})
                return
            time.sleep(2)  # into the training, past its start
            record: dict[str, Any] = {"fault": fault, "injected": True, "at": time.time(), "during": target}
            if fault == "worker-kill":
                component = self.stack.component(target["worker"])
                stacks.kill_component(self.stack, component.name)
                say(f"SIGKILLed {component.name} while {target['dag_id']}/{target['task']} ran on it")
                time.sleep(10)
                stacks.start_worker(self.stack, component.name)
                say(f"{component.name} started again")
            elif fault == "mlflow-restart":
                stacks.kill_component(self.stack, "mlflow-server")  # no goodbye: as a crash
                say(f"MLflow server down while {target['dag_id']}/{target['task']} ran")
                time.sleep(5)
                stacks.start_component(self.stack, "mlflow-server", self.mlflow_args)
                stacks.wait_until("MLflow /health", self._mlflow_up, 120, None, interval=0.5)
                say("MLflow server up again")
            elif fault == "redis-restart":
                stacks.restart_component(self.stack, "redis", timeout=10)
                stacks.wait_until("the stack's Redis", lambda: stacks.answers("127.0.0.1", self.stack.redis_port),
                                  30, None, interval=0.2)
                say("Redis restarted")
            record["recovered"] = time.time()
            self.faults.append(record)
            time.sleep(20)

    def _mlflow_up(self) -> bool:
        import requests

        return requests.get(f"{self.stack.mlflow_url}/health", timeout=5).ok

    # --- the report -----------------------------------------------------------------------
    def measure(self, wall: float) -> dict[str, Any]:
        tis, tries = [], []
        for run in self.runs:
            run["tasks"] = stacks.task_instances(self.stack, run["dag_id"], run["run_id"])
            for key, ti in run["tasks"].items():
                tis.append(ti)
                history = stacks.task_tries(self.stack, run["dag_id"], run["run_id"], ti["task_id"],
                                            ti.get("map_index", -1)) if (ti.get("try_number") or 0) > 1 else [ti]
                for attempt in history:
                    tries.append({**attempt, "_run": run["run_id"], "_key": key})
        waits = [parse_time(t["start_date"]) - parse_time(t["queued_when"]) for t in tries
                 if t.get("start_date") and t.get("queued_when")]
        durations = [t["duration"] for t in tries if t.get("duration") is not None and t.get("state") == "success"]
        failed_tries = [t for t in tries if t.get("state") in ("failed", "up_for_retry", "upstream_failed")]
        retries = sum(max(0, (ti.get("try_number") or 1) - 1) for ti in tis)
        ends = [parse_time(ti["end_date"]) for ti in tis if ti.get("end_date")]
        starts = [parse_time(ti["queued_when"]) for ti in tis if ti.get("queued_when")]
        span = (max(ends) - min(starts)) if ends and starts else None
        mlflow = self.mlflow_checks()
        for fault in self.faults:  # what became of the task each fault hit
            hit = fault.get("during")
            run = next((r for r in self.runs if hit and r["run_id"] == hit["run_id"]), None)
            if run is not None and hit["task"] in run.get("tasks", {}):
                ti = run["tasks"][hit["task"]]
                fault["task_outcome"] = {"state": ti["state"], "tries": ti.get("try_number")}
        return {
            "runs": len(self.runs), "succeeded": sum(r["state"] == "success" for r in self.runs),
            "failed_runs": [f"{r['dag_id']}/{r['run_id']}" for r in self.runs if r["state"] != "success"],
            "task_instances": len(tis), "task_tries": len(tries), "failed_tries": len(failed_tries),
            "failed_try_tasks": sorted({f"{t['_run']}/{t['_key']}" for t in failed_tries}),
            "retries": retries,
            "queue_wait_s": {"p50": percentile(waits, 0.5), "p95": percentile(waits, 0.95)},
            "task_duration_s": {"p50": percentile(durations, 0.5), "p95": percentile(durations, 0.95)},
            "throughput_tasks_per_min": (len(ends) / span * 60) if span else None,
            "wall_s": wall, **mlflow, "faults": self.faults,
            "lost": {"runs_not_succeeded": sum(r["state"] != "success" for r in self.runs),
                     "task_instances_not_succeeded": sum(ti["state"] != "success" for ti in tis)},
            "duplicates": {"mlflow_runs": sum(n - 1 for n in mlflow["duplicate_runs"].values()),
                           "versions": sum(max(0, found - declared) for found, declared
                                           in mlflow["versions_not_as_declared"].values())},
        }

    def mlflow_checks(self) -> dict[str, Any]:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.stack.mlflow_url, registry_uri=self.stack.mlflow_url)
        experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("nnzoo-")]
        runs = []
        token = None
        while experiments:
            page = client.search_runs(experiments, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
        by_key: dict[str, list] = {}
        for run in runs:
            key = run.data.tags.get("nnzoo.run_key")
            if key:
                by_key.setdefault(key, []).append(run)
        ours = {f"{r['dag_id']}/{r['run_id']}" for r in self.runs}
        duplicates = {key: len(found) for key, found in by_key.items()
                      if len(found) > 1 and key.rsplit("/", 1)[0] in ours}
        unfinished = sorted(key for key, found in by_key.items() for run in found
                            if run.info.status != "FINISHED" and key.rsplit("/", 1)[0] in ours)
        versions_per_run: dict[str, int] = {f"{r['dag_id']}/{r['run_id']}": 0 for r in self.runs}
        champions = []
        run_key_of = {run.info.run_id: run.data.tags.get("nnzoo.run_key", "") for run in runs}
        registered = client.search_registered_models(max_results=1000)
        for model in registered:
            if model.name.endswith(".promotion-lock"):
                champions.append({"model": model.name, "ok": False, "why": "a promotion lock was left behind"})
                continue
            versions = client.search_model_versions(f"name = '{model.name}'", max_results=1000)
            for version in versions:
                dag_run = run_key_of.get(version.run_id, "").rsplit("/", 1)[0]
                if dag_run in versions_per_run:
                    versions_per_run[dag_run] += 1
            champions.append(self.champion_check(client, model, versions))
        # Each DAG run registers one version of each model its family registers: as many
        # versions as the family has registered models in this load.
        names = [model.name for model in registered if not model.name.endswith(".promotion-lock")]
        expected = {f"{r['dag_id']}/{r['run_id']}": sum(name.startswith(f"nnzoo-{r['family']}-") for name in names)
                    for r in self.runs}
        wrong_versions = {key: (count, expected[key]) for key, count in versions_per_run.items()
                          if count != expected[key]}
        return {"mlflow_runs": len(runs), "duplicate_runs": duplicates, "unfinished_runs": unfinished,
                "versions_per_run": versions_per_run, "versions_not_as_declared": wrong_versions,
                "champions": champions}

    def champion_check(self, client: Any, model: Any, versions: list) -> dict[str, Any]:
        aliases = model.aliases or {}
        if "champion" not in aliases:
            return {"model": model.name, "ok": False, "why": "no champion"}
        champion = next(v for v in versions if str(v.version) == str(aliases["champion"]))
        lineage = (champion.tags.get("nnzoo.profile"), champion.tags.get("nnzoo.dataset"))
        # What the family promotes on, as registration recorded it on each version.
        metric = champion.tags.get(kit.TAG_PROMOTION_METRIC)
        if metric is None:
            return {"model": model.name, "ok": False, "why": f"the champion has no {kit.TAG_PROMOTION_METRIC} tag"}
        higher = champion.tags.get(kit.TAG_HIGHER_IS_BETTER) != "False"
        values = {str(v.version): float(v.tags[f"nnzoo.{metric}"]) for v in versions
                  if (v.tags.get("nnzoo.profile"), v.tags.get("nnzoo.dataset")) == lineage
                  and f"nnzoo.{metric}" in v.tags}
        best = (max if higher else min)(values.values())
        held = values.get(str(champion.version))
        return {"model": model.name, "ok": held == best, "champion": str(champion.version), "value": held,
                "best": best, "versions": len(values), "metric": metric}


def markdown(report: dict[str, Any], args: argparse.Namespace, machine: str) -> str:
    def fmt(value: Any, digits: int = 1) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = [f"# Load: {report['runs']} concurrent smoke runs ({', '.join(args.families)})", "",
             f"Machine: {machine}. Workers: {args.workers} x concurrency {args.concurrency}, "
             f"training pool {args.training_slots} slot{'s' if args.training_slots > 1 else ''}. "
             f"Faults: {', '.join(args.faults) or 'none'}.", "",
             "| measure | value |", "|---|---|",
             f"| DAG runs succeeded | {report['succeeded']} / {report['runs']} |",
             f"| task instances / tries | {report['task_instances']} / {report['task_tries']} |",
             f"| failed tries (then retried) | {report['failed_tries']} |",
             f"| retries | {report['retries']} |",
             f"| queue wait p50 / p95 (s) | {fmt(report['queue_wait_s']['p50'])} / "
             f"{fmt(report['queue_wait_s']['p95'])} |",
             f"| task duration p50 / p95 (s) | {fmt(report['task_duration_s']['p50'])} / "
             f"{fmt(report['task_duration_s']['p95'])} |",
             f"| throughput (task instances finished per minute) | {fmt(report['throughput_tasks_per_min'])} |",
             f"| wall time (s) | {fmt(report['wall_s'], 0)} |",
             f"| MLflow runs with more than one run per task (must be 0) | {len(report['duplicate_runs'])} |",
             f"| MLflow runs not FINISHED | {len(report['unfinished_runs'])} |",
             f"| DAG runs with versions not as declared (must be 0) | {len(report['versions_not_as_declared'])} |",
             f"| lost work: DAG runs / task instances not succeeded (must be 0) | "
             f"{report['lost']['runs_not_succeeded']} / {report['lost']['task_instances_not_succeeded']} |",
             f"| duplicates: extra MLflow runs / extra versions (must be 0) | "
             f"{report['duplicates']['mlflow_runs']} / {report['duplicates']['versions']} |",
             f"| registered models with champion on the best like-for-like version | "
             f"{sum(c['ok'] for c in report['champions'])} / {len(report['champions'])} |", ""]
    if report["faults"]:
        lines += ["| fault | while running | back after (s) | that task ended | its tries |", "|---|---|---|---|---|"]
        for fault in report["faults"]:
            during = fault.get("during") or {}
            took = fault["recovered"] - fault["at"] if fault.get("injected") else None
            outcome = fault.get("task_outcome") or {}
            lines.append(f"| {fault['fault']} | {during.get('dag_id', '')} {during.get('task', fault.get('why', ''))} "
                         f"| {fmt(took)} | {outcome.get('state', 'n/a')} | {outcome.get('tries', 'n/a')} |")
        lines.append("")
    return "\n".join(lines)


def verdict(report: dict[str, Any]) -> list[str]:
    problems = []
    if report["succeeded"] != report["runs"]:
        problems.append(f"{report['runs'] - report['succeeded']} DAG run(s) did not succeed: {report['failed_runs']}")
    if report["duplicate_runs"]:
        problems.append(f"more than one MLflow run for a task: {report['duplicate_runs']}")
    if report["unfinished_runs"]:
        problems.append(f"MLflow runs not FINISHED: {report['unfinished_runs']}")
    if report["versions_not_as_declared"]:
        problems.append(f"registered versions not as declared (found, declared): {report['versions_not_as_declared']}")
    broken = [f["why"] for f in report["faults"] if f.get("why", "").startswith("the injector failed")]
    if broken:
        problems.append(broken[0])
    wrong = [c for c in report["champions"] if not c["ok"]]
    if wrong:
        problems.append(f"champion not on the best version: {wrong}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--families", type=lambda s: [f for f in s.split(",") if f], default=["classifiers",
                                                                                             "style_transfer"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="task slots per worker")
    parser.add_argument("--training-slots", type=int, default=1,
                        help="slots of the training pool (1: one training at a time, as on 2 CPU cores)")
    parser.add_argument("--faults", type=lambda s: [f for f in s.split(",") if f], default=list(FAULTS),
                        help=f"comma-separated, of {', '.join(FAULTS)} ('' for none)")
    parser.add_argument("--timeout", type=float, default=2400)
    parser.add_argument("--heartbeat-timeout", type=int, default=HEARTBEAT_TIMEOUT_S,
                        help="[scheduler] task_instance_heartbeat_timeout of the stack (s)")
    parser.add_argument("--retry-delay", type=float, default=20.0,
                        help="NNZOO_TRAINING_RETRY_DELAY_S of the stack (s)")
    parser.add_argument("--out", type=Path, default=Path("var/bench/load"))
    args = parser.parse_args(argv)
    unknown = [f for f in args.faults if f not in FAULTS] + [f for f in args.families if f not in all_families()]
    if unknown or min(args.runs, args.workers, args.training_slots) < 1:
        parser.error(f"unknown fault or family {unknown}" if unknown
                     else "--runs, --workers and --training-slots must be >= 1")

    args.out.mkdir(parents=True, exist_ok=True)
    # `kill` (or a CI time-out) stops the stack too: SystemExit runs the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="nnzoo-load-"))
    say(f"starting the stack under {tmp} ({args.workers} workers, own Redis)")
    begin = time.monotonic()
    stack = stacks.start_stack(tmp, workers=args.workers, worker_concurrency=args.concurrency, own_redis=True,
                               training_slots=args.training_slots, dag_id=f"zoo_{args.families[0]}", extra_env={
                                   "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(args.heartbeat_timeout),
                                   "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(QUEUED_TIMEOUT_S),
                                   "NNZOO_MAX_ACTIVE_RUNS": str(max(16, args.runs)),
                                   "NNZOO_TRAINING_RETRY_DELAY_S": str(args.retry_delay)})
    say(f"stack up in {time.monotonic() - begin:.0f}s: Airflow {stack.airflow_url}, MLflow {stack.mlflow_url}")
    load = Load(stack, args.families, args.runs)
    problems: list[str] = []
    try:
        start = time.monotonic()
        load.trigger_all()
        injector = threading.Thread(target=load.inject, args=(args.faults,), daemon=True)
        injector.start()
        last = ""
        while time.monotonic() - start < args.timeout:
            ended = load.poll()
            states = ", ".join(f"{s} {sum(r['state'] == s for r in load.runs)}"
                               for s in ("queued", "running", "success", "failed")
                               if any(r["state"] == s for r in load.runs))
            if states != last:
                say(states)
                last = states
            if ended:
                break
            stack.check_alive(allow=(*(stacks.worker_name(i) for i in range(args.workers)), "mlflow-server", "redis"))
            time.sleep(5)
        else:
            problems.append(f"not every run ended within --timeout {args.timeout:.0f}s")
        load.done.set()
        injector.join(60)
        wall = time.monotonic() - start
        report = load.measure(wall)
        machine = machine_line()
        report["machine"] = machine
        report["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        problems += verdict(report)
        report["problems"] = problems
        (args.out / "load.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        text = markdown(report, args, machine)
        (args.out / "load.md").write_text(text)
        print(text)
        say(f"written {args.out / 'load.json'} and {args.out / 'load.md'}")
    finally:
        leftover = stacks.teardown(stack)
        if leftover:
            problems += leftover
    for problem in problems:
        print(f"load: {problem}", file=sys.stderr)
    return 1 if problems else 0


def machine_line() -> str:
    import os
    import platform

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    avx512 = "AVX-512" if "avx512" in cpuinfo else "AVX2" if "avx2" in cpuinfo else "no AVX2"
    return f"{os.cpu_count()} cores ({avx512}), {platform.system()} {platform.machine()}, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
