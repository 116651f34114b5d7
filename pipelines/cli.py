"""``nnzoo`` command line: list families, run a family's stages without Airflow, run
the whole zoo through Airflow, judge the talk's claims from the store (``nnzoo
report``), start the UIs, and the commands families add (``nnzoo stylize IMAGE --out
PATH``, declared by the style_transfer family).

``nnzoo run FAMILY`` prints, as its last stdout line, one JSON object:
``{"family": ..., "profile": ..., "status": "FINISHED", "runs": {...}, "metrics": {...}}``;
when a step fails also ``"step"``, ``"error"`` and the steps ``"finished"`` before it
(exit status 1). ``nnzoo run all`` goes on past a failed family and reports each
family's status under ``"families"``. Bad values print one line naming the value and
what is allowed, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pipelines.config import PROFILES, ConfigError, to_dict
from pipelines.errors import NnzooError
from pipelines.families import all_families, get_family
from pipelines.settings import mlflow_tracking_uri as tracking_uri

EXIT_USAGE = 2


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE, e.g. --param epochs=3")
        params[key.strip()] = value
    return params


def cmd_list(args: argparse.Namespace) -> int:
    families = all_families()
    print("families (nnzoo run FAMILY; DAG id below):")
    for family in families.values():
        print(f"  {family.name:<16} {family.description}")
        print(f"  {'':<16} DAG {family.dag_id}, stages: {' -> '.join(family.stages)}")
        if args.verbose:
            for step in family.pipeline.all_steps:
                how = (f" x {len(step.over)} ({step.item} = {', '.join(map(str, step.over))}"
                       f"{', one after another' if step.chain else ''})" if step.over else
                       f" mapped over the jobs of {step.expand}" if step.expand else "")
                needs = f" <- {', '.join(step.needs)}" if step.needs else ""
                print(f"  {'':<18} {step.name}{how}{needs}{' [training]' if step.trains else ''}: {step.title}")
    print(f"  {'all':<16} every family above, in order")
    print(f"profiles: {', '.join(PROFILES)} (smoke: tests, seconds; quick: CPU, minutes; full: tfds + GPU)")
    if args.verbose:
        from pipelines.data.registry import dataset_names, get_dataset

        print("datasets:")
        for name in dataset_names():
            print(f"  {name:<16} {get_dataset(name).description}")
    return 0


def _run_one(name: str, profile: str, params: dict[str, str]) -> dict[str, Any]:
    """Run one family in-process; its result, also when a step fails: ``status``
    (FINISHED or FAILED), and on failure the failed ``step``, the ``error`` and the
    steps ``finished`` before it, with the runs those left in the store."""
    import datetime
    import traceback
    import uuid

    from pipelines.localrun import summary_rows
    from pipelines.runner import run_pipeline

    family = get_family(name)
    config = family.config(profile, params)
    mock = f", tensorflow-datasets mock data: {config.mock_data} examples of each dataset" if config.mock_data else ""
    print(f"[nnzoo] running {name} ({profile} profile{mock})", file=sys.stderr, flush=True)
    # Keyed like a DAG run (<dag id>/<run id>), so the run's MLflow runs can be found again.
    run_key = f"{family.dag_id}/cli-{datetime.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    result: dict[str, Any] = {"family": name, "profile": profile, "status": "FINISHED"}
    failure: Exception | None = None
    step = None
    try:
        run_pipeline(family, to_dict(config), run_key=run_key)
    except Exception as error:  # noqa: BLE001 - reported in the JSON line, and the exit status
        failure = error
        if not isinstance(error, NnzooError):  # a bug or an unforeseen failure: where it happened
            traceback.print_exc(file=sys.stderr)
        step = getattr(error, "nnzoo_step", None)
        result.update(status="FAILED", step=step, error=f"{type(error).__name__}: {error}",
                      finished=list(getattr(error, "nnzoo_finished", [])))
    try:
        rows = summary_rows(env=dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri()), run_key_prefix=run_key,
                            family=name)
    except Exception as error:  # noqa: BLE001 - an unreadable store after a failure: say so, keep the result
        rows = []
        result.setdefault("error", f"reading the results: {type(error).__name__}: {error}")
    result.update(runs={row["model"]: row["run_id"] for row in rows},
                  metrics={row["model"]: row["metrics"] for row in rows})
    reused = sorted(row["model"] for row in rows if row["reused"])
    if reused:
        result["reused"] = reused
    if result["status"] == "FAILED":
        # An error meant for the user (NnzooError) in its own words, as one line; last on stderr.
        said = str(failure) if isinstance(failure, NnzooError) else f"{name} failed at step {step}: {result['error']}"
        print(f"nnzoo: error: {said}", file=sys.stderr, flush=True)
    return result


def _params_for(name: str, params: dict[str, str], others: list[str]) -> dict[str, str]:
    """The ``--param`` values that family ``name`` knows; one that no family in
    ``others`` knows is an error, never silently dropped."""
    from pipelines.config import resolve_key

    def knows(family: str, key: str) -> bool:
        try:
            resolve_key(get_family(family).config_cls, key)
        except ConfigError as error:
            if "ambiguous" in str(error):
                raise ConfigError(f"{family}: {error}") from None
            return False
        return True

    for key in params:
        if not any(knows(other, key) for other in others):
            raise ConfigError(f"unknown parameter {key!r} for every family ({', '.join(others)})")
    return {key: value for key, value in params.items() if knows(name, key)}


def cmd_run(args: argparse.Namespace) -> int:
    params = _parse_params(args.param or [])
    if args.profile not in PROFILES:
        raise ConfigError(f"--profile {args.profile!r}: expected one of {', '.join(PROFILES)}")
    names = list(all_families()) if args.family == "all" else [args.family]
    chosen = {name: _params_for(name, params, names) if args.family == "all" else params for name in names}
    for name in names:  # validate everything before the first (slow) run starts
        get_family(name).config(args.profile, chosen[name])
    if args.dry_run:
        return _dry_run(names, args.profile, chosen, time_steps=not args.no_timing)
    results = [_run_one(name, args.profile, chosen[name]) for name in names]  # a failed family stops none
    failed = [r["family"] for r in results if r["status"] != "FINISHED"]
    if args.family != "all":
        output = results[0]
    else:
        output = {"family": "all", "profile": args.profile, "status": "FAILED" if failed else "FINISHED",
                  "families": {r["family"]: {k: v for k, v in r.items() if k not in ("family", "profile", "runs",
                                                                                        "metrics")}
                               for r in results},
                  "runs": {r["family"]: r["runs"] for r in results},
                  "metrics": {r["family"]: r["metrics"] for r in results}}
        if failed:
            print(f"nnzoo: error: failed families: {', '.join(failed)}", file=sys.stderr, flush=True)
    print(json.dumps(output, sort_keys=True), flush=True)
    return 1 if failed else 0


def _dry_run(names: list[str], profile: str, chosen: dict[str, dict[str, str]], *, time_steps: bool) -> int:
    """Print each family's plan (datasets, models, estimate), then one JSON line; 1 when a
    dataset is missing offline, named with how to fetch it."""
    from pipelines.dryrun import dry_run, render

    results = []
    for name in names:
        family = get_family(name)
        print(f"[nnzoo] dry run of {name} ({profile} profile): building every model"
              f"{' and timing a step of each' if time_steps else ''}", file=sys.stderr, flush=True)
        result = dry_run(family, family.config(profile, chosen[name]), time_steps=time_steps,
                         say=lambda line: print(line, file=sys.stderr, flush=True))
        print(render(result), flush=True)
        results.append(result)
    errors = [result["error"] for result in results if result.get("error")]
    print(json.dumps(results[0] if len(results) == 1 else {"families": results}, sort_keys=True, default=str),
          flush=True)
    for error in errors:
        print(f"nnzoo: error: {error}", file=sys.stderr, flush=True)
    return 1 if errors else 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipelines.report import make_report

    if args.profile is not None and args.profile not in PROFILES:
        raise ConfigError(f"--profile {args.profile!r}: expected one of {', '.join(PROFILES)}")
    result = make_report(args.profile, Path(args.out) if args.out else None)
    if result["profile"] is None:
        print(f"[nnzoo] the store {tracking_uri()} holds no nnzoo runs: every claim is NOT RUN "
              "(make run, or nnzoo run FAMILY, fills it)", file=sys.stderr)
    print(result["table"])
    print(f"[nnzoo] report: {result['html']} (Markdown: {result['markdown']})", flush=True)
    print(json.dumps({key: result[key] for key in ("profile", "html", "markdown", "run_id", "verdicts", "values")},
                     sort_keys=True))
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from pipelines import localrun

    return localrun.run_zoo(args.profile, families=args.family or None)


def cmd_ui(args: argparse.Namespace) -> int:
    from pipelines import localrun

    return localrun.run_ui(args.airflow_port, args.mlflow_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnzoo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="families, stages, profiles (and each step and the datasets with -v)")
    listing.add_argument("-v", "--verbose", action="store_true")
    listing.set_defaults(func=cmd_list)
    run = sub.add_parser("run", help="run a family's stages in-process, without Airflow")
    run.add_argument("family", help="family name (see `nnzoo list`) or 'all'")
    run.add_argument("--profile", default="quick", help=f"one of {', '.join(PROFILES)} (default quick)")
    run.add_argument("--param", action="append", metavar="KEY=VALUE",
                     help="override a config value by dotted path or unique name, e.g. epochs=3")
    run.add_argument("--dry-run", action="store_true",
                     help="train nothing: resolve the datasets (prepared or what a download brings), build every "
                          "model (params, FLOPs, memory) and estimate the training time from a timed step")
    run.add_argument("--no-timing", action="store_true", help="with --dry-run: skip the timed steps")
    run.set_defaults(func=cmd_run)
    report = sub.add_parser("report", help="judge every claim of the talk from the MLflow store (no training): "
                                           "HTML + Markdown under $NNZOO_HOME/reports, logged in nnzoo-report")
    report.add_argument("--profile", default=None,
                        help=f"the runs of which profile ({', '.join(PROFILES)}; default: the newest with runs)")
    report.add_argument("--out", help="write into this folder instead of $NNZOO_HOME/reports/<profile>-<time>")
    report.set_defaults(func=cmd_report)
    zoo = sub.add_parser("zoo", help="run every family's DAG through Airflow (embedded SQLite) and print a table")
    zoo.add_argument("--profile", default="quick", choices=PROFILES)
    zoo.add_argument("--family", action="append", help="only these families (repeatable)")
    zoo.set_defaults(func=cmd_zoo)
    ui = sub.add_parser("ui", help="start Airflow (standalone) and the MLflow UI on localhost")
    ui.add_argument("--airflow-port", type=int, default=int(os.environ.get("NNZOO_AIRFLOW_PORT", 8080)))
    ui.add_argument("--mlflow-port", type=int, default=int(os.environ.get("NNZOO_MLFLOW_PORT", 5000)))
    ui.set_defaults(func=cmd_ui)
    for family in all_families().values():  # the commands families add (nnzoo stylize)
        for command in family.commands:
            command.add_to(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as error:
        print(f"nnzoo: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NnzooError as error:
        print(f"nnzoo: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
