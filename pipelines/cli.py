"""``nnzoo`` command line: list families, run a family's stages without Airflow, run
the whole zoo through Airflow, start the UIs, stylise an image with the registered
fast stylizer (``nnzoo stylize IMAGE --out PATH``).

``nnzoo run FAMILY`` prints, as its last stdout line, one JSON object:
``{"family": ..., "profile": ..., "runs": {...}, "metrics": {...}}``. Bad values
print one line naming the value and what is allowed, and exit with status 2.
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
    import datetime
    import uuid

    from pipelines.localrun import summary_rows
    from pipelines.pipeline import run_pipeline

    family = get_family(name)
    config = family.config(profile, params)
    print(f"[nnzoo] running {name} ({profile} profile)", file=sys.stderr, flush=True)
    # Keyed like a DAG run (<dag id>/<run id>), so the run's MLflow runs can be found again.
    run_key = f"{family.dag_id}/cli-{datetime.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    run_pipeline(family, to_dict(config), run_key=run_key)
    rows = summary_rows(env=dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri()), run_key_prefix=run_key)
    return {"family": name, "profile": profile, "runs": {row["model"]: row["run_id"] for row in rows},
            "metrics": {row["model"]: row["metrics"] for row in rows}}


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
    results = [_run_one(name, args.profile, chosen[name]) for name in names]
    if args.family != "all":
        output = results[0]
    else:
        output = {"family": "all", "profile": args.profile,
                  "runs": {r["family"]: r["runs"] for r in results},
                  "metrics": {r["family"]: r["metrics"] for r in results}}
    print(json.dumps(output, sort_keys=True))
    return 0


def cmd_stylize(args: argparse.Namespace) -> int:
    from pipelines.stages.style_transfer import stylize_file

    result = stylize_file(args.image, args.out, model=args.model, max_side=args.max_side)
    for conversion in result["conversions"]:
        print(f"[nnzoo] {args.image}: {conversion}", file=sys.stderr)
    print(json.dumps(result, sort_keys=True))
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
    run.set_defaults(func=cmd_run)
    stylize = sub.add_parser("stylize", help="stylise an image with the registered fast stylizer (style_transfer)")
    stylize.add_argument("image", help="the image to stylise (PNG, JPEG, ...; grayscale and alpha are converted)")
    stylize.add_argument("--out", required=True, help="where to write the result; the suffix picks the format")
    stylize.add_argument("--model", help="model URI, registered model name or .keras file "
                                         "(default: models:/nnzoo-style_transfer-stylizer@champion)")
    stylize.add_argument("--max-side", type=int, default=None,
                         help="scale larger images down to this longest side first (default 1024)")
    stylize.set_defaults(func=cmd_stylize)
    zoo = sub.add_parser("zoo", help="run every family's DAG through Airflow (embedded SQLite) and print a table")
    zoo.add_argument("--profile", default="quick", choices=PROFILES)
    zoo.add_argument("--family", action="append", help="only these families (repeatable)")
    zoo.set_defaults(func=cmd_zoo)
    ui = sub.add_parser("ui", help="start Airflow (standalone) and the MLflow UI on localhost")
    ui.add_argument("--airflow-port", type=int, default=int(os.environ.get("NNZOO_AIRFLOW_PORT", 8080)))
    ui.add_argument("--mlflow-port", type=int, default=int(os.environ.get("NNZOO_MLFLOW_PORT", 5000)))
    ui.set_defaults(func=cmd_ui)
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
