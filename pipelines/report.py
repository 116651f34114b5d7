"""The zoo report: every claim of the talk with its measured value and verdict, every
trained model with its cost, and the accuracy-vs-FLOPs chart (C17), read from the
MLflow store alone (it never trains).

``nnzoo report`` and the ``zoo_report`` DAG call :func:`make_report`, which writes one
self-contained HTML page (figures embedded, no external request) and Markdown under
``$NNZOO_HOME/reports/`` and logs both as the artifacts of a ``report`` run in the
experiment ``nnzoo-report``. One profile is reported on (default: the newest with
runs); runs of other profiles never enter it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines import claims as claims_module
from pipelines import settings
from pipelines.claims import C17, NO_BAR, NOT_RUN, Claim

EXPERIMENT = "nnzoo-report"
ACCURACY = "test_accuracy"
"""The accuracy C17 puts on its chart: every classifier of every family logs it."""

_TAG_FAMILY, _TAG_MODEL, _TAG_PROFILE, _TAG_STAGE = "nnzoo.family", "nnzoo.model", "nnzoo.profile", "nnzoo.stage"


@dataclasses.dataclass
class ClaimResult:
    claim: Claim
    verdict: str
    value: float | None = None
    baseline: float | None = None
    spread: float | None = None
    run_id: str | None = None
    experiment: str = ""
    dataset: str = ""
    url: str | None = None
    pictures: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)
    """(caption, PNG bytes)."""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.claim.id, "statement": self.claim.statement, "family": self.claim.family,
                "experiment": self.experiment, "bar": self.claim.bar, "verdict": self.verdict, "value": self.value,
                "baseline": self.baseline, "spread": self.spread, "dataset": self.dataset, "run_id": self.run_id,
                "url": self.url}


@dataclasses.dataclass
class Report:
    profile: str | None
    claims: list[ClaimResult]
    models: list[dict[str, Any]]
    chart: bytes | None
    store: str
    created: str

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.claims:
            counts[result.verdict] = counts.get(result.verdict, 0) + 1
        return counts


# --- reading the store --------------------------------------------------------------------------

def _client() -> Any:
    from pipelines import tracking

    return tracking.client()


def _runs(client: Any, profile: str | None) -> list[Any]:
    """Every nnzoo run of ``profile`` (all profiles: None), newest first."""
    from pipelines.families import all_families

    names = {family.experiment_name for family in all_families().values()}
    experiments = [e.experiment_id for e in client.search_experiments() if e.name in names]
    if not experiments:
        return []
    query = f"tags.`{_TAG_PROFILE}` = '{profile}'" if profile else ""
    runs, token = [], None
    while True:
        page = client.search_runs(experiments, filter_string=query, order_by=["attributes.start_time DESC"],
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def newest_profile(client: Any) -> str | None:
    """The profile of the newest run that has one (smoke runs of tests count too)."""
    for run in _runs(client, None):
        if run.data.tags.get(_TAG_PROFILE):
            return run.data.tags[_TAG_PROFILE]
    return None


def _newest(runs: Sequence[Any], family: str, model: str, metric: str | None = None) -> Any | None:
    for run in runs:  # newest first
        tags = run.data.tags
        if tags.get(_TAG_FAMILY) == family and tags.get(_TAG_MODEL) == model and \
                (metric is None or metric in run.data.metrics):
            return run
    return None


def _dataset(run: Any) -> str:
    return run.data.params.get("dataset.name") or run.data.params.get("data.dataset") or \
        run.data.tags.get("nnzoo.dataset", "")


def _png(client: Any, run: Any, path: str) -> bytes | None:
    """An image artifact of ``run`` as PNG bytes (None when it is not there)."""
    from pipelines import tracking

    return tracking.load_artifact(run.info.run_id, path)


def _run_url(run: Any, base: str | None) -> str | None:
    if not base:
        return None
    return f"{base.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?{settings.ML_VIEW}"


def judge_claim(claim: Claim, runs: Sequence[Any], profile: str, client: Any = None,
                base_url: str | None = None, pictures: bool = True) -> ClaimResult:
    """A family's claim: the newest run of its model that holds its metric, judged."""
    run = _newest(runs, claim.family, claim.model, claim.metric)
    if run is None:
        return ClaimResult(claim, NOT_RUN, experiment=claim.experiment)
    value = run.data.metrics[claim.metric]
    baseline = None
    if claim.baseline:
        holder = run if not claim.baseline_model else _newest(runs, claim.family, claim.baseline_model,
                                                              claim.baseline)
        baseline = holder.data.metrics.get(claim.baseline) if holder is not None else None
    result = ClaimResult(claim, claim.judge(value, baseline, profile), value=value, baseline=baseline,
                         spread=run.data.metrics.get(claim.spread) if claim.spread else None,
                         run_id=run.info.run_id, experiment=claim.experiment, dataset=claim.dataset or _dataset(run),
                         url=_run_url(run, base_url))
    if pictures and client is not None:
        for picture in claim.pictures:
            holder = _newest(runs, claim.family, picture.model)
            data = _png(client, holder, picture.path) if holder is not None else None
            if data:
                result.pictures.append((picture.caption or picture.path, data))
    return result


def model_rows(runs: Sequence[Any]) -> list[dict[str, Any]]:
    """The newest training of every (family, model, dataset): what it scored and cost.
    A training is a run that logged its model's size (``params``) and compute (``flops``)."""
    import fnmatch

    from pipelines.families import all_families

    families = all_families()
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in runs:  # newest first: the first of each key wins
        metrics, tags = run.data.metrics, run.data.tags
        family = tags.get(_TAG_FAMILY, "")
        if "params" not in metrics or "flops" not in metrics or family not in families:
            continue
        model, dataset = tags.get(_TAG_MODEL, run.info.run_name), _dataset(run)
        if (family, model, dataset) in rows:
            continue
        headline = next(((key, metrics[key]) for pattern, metric in families[family].headline
                         if fnmatch.fnmatchcase(model, pattern)
                         for key in sorted(metrics) if fnmatch.fnmatchcase(key, metric)), (None, None))
        rows[(family, model, dataset)] = {
            "family": family, "model": model, "dataset": dataset, "profile": tags.get(_TAG_PROFILE, ""),
            "headline": headline[0], "value": headline[1], "accuracy": metrics.get(ACCURACY),
            "params": metrics["params"], "flops": metrics["flops"], "train_seconds": metrics.get("train_seconds"),
            "device": run.data.params.get("device", ""), "run_id": run.info.run_id,
            "status": run.info.status, "partial_labels": _partial_labels(run)}
    return sorted(rows.values(), key=lambda row: (row["family"], row["model"]))


def _partial_labels(run: Any) -> bool:
    """Trained on a share of the training split's labels (a fine-tuning with few labels)."""
    labelled = run.data.metrics.get("labelled_examples")
    size = run.data.params.get("dataset.train_size")
    try:
        return labelled is not None and size is not None and labelled < float(size)
    except ValueError:
        return False


def frontier_points(models: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """C17's points: ``{dataset: {model: (accuracy, parameters)}}`` of every model that has
    a test accuracy (the classifiers)."""
    points: dict[str, dict[str, tuple[float, float]]] = {}
    for row in chart_models(models):
            points.setdefault(row["dataset"], {})[f"{row['family']}/{row['model']}"] = (row["accuracy"], row["params"])
    return points


def chart_models(models: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The models on C17's chart: finished, scored by test accuracy on all the dataset's
    labels and classes (not a family's ``off_chart`` model)."""
    from pipelines.families import all_families

    families = all_families()
    return [row for row in models if row["accuracy"] is not None and row["status"] == "FINISHED"
            and not row["partial_labels"] and row["model"] not in families[row["family"]].off_chart]


def judge_c17(models: Sequence[Mapping[str, Any]], profile: str) -> ClaimResult:
    """C17 from the chart's models; the experiment text names each counted dataset's
    frontier, so a reader sees which nets hold it."""
    points = frontier_points(models)
    value = claims_module.newer_frontier_share(points)
    counted = {dataset: claims_module.pareto_frontier(named) for dataset, named in sorted(points.items())
               if any(map(claims_module.is_newer, named)) and not all(map(claims_module.is_newer, named))}
    held = "; ".join(f"{dataset}: {', '.join(frontier)}" for dataset, frontier in counted.items())
    datasets = sorted(counted) or sorted({row["dataset"] for row in chart_models(models)})
    return ClaimResult(C17, C17.judge(value, None, profile), value=value,
                       experiment=f"{C17.experiment}. Frontier, fewest parameters first: {held}" if held
                       else C17.experiment, dataset=", ".join(datasets))


def collect(profile: str | None = None, base_url: str | None = None, pictures: bool = True) -> Report:
    """Read the configured store (``MLFLOW_TRACKING_URI``) and judge every claim on the
    runs of ``profile`` (default: :func:`newest_profile`)."""
    from pipelines import plots

    client = _client()
    uri = settings.mlflow_tracking_uri()
    profile = profile or newest_profile(client)
    runs = _runs(client, profile) if profile else []
    base_url = base_url if base_url is not None else settings.mlflow_ui_url()
    results = [judge_claim(claim, runs, profile or "", client, base_url, pictures)
               for claim in claims_module.all_claims() if claim is not C17]
    models = model_rows(runs)
    c17 = judge_c17(models, profile or "")
    chart = None
    points = frontier_points(models)
    if points:
        figure = plots.accuracy_vs_flops_panels(
            chart_models(models),
            {dataset: claims_module.pareto_frontier(p) for dataset, p in points.items()},
            f"Accuracy vs compute, {profile} profile (bubble area = parameters; ringed: the "
            "accuracy-per-parameter frontier)")
        chart = _figure_png(figure)
        c17.pictures.append(("accuracy vs FLOPs, bubble area = parameters", chart))
    results.append(c17)
    results.sort(key=lambda result: result.claim.number)
    return Report(profile, results, models, chart, uri, datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"))


def _figure_png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


# --- writing ------------------------------------------------------------------------------------

def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3g}"


def _measured(result: ClaimResult) -> str:
    if result.value is None:
        return "-"
    text = _number(result.value)
    if result.spread is not None:
        text += f" ± {_number(result.spread)}"
    if result.baseline is not None:
        text += f" (baseline {_number(result.baseline)})"
    return text


def claims_table(report: Report, links: bool = True) -> str:
    """The claims as a Markdown table: id, verdict, measured value vs the bar."""
    lines = ["| claim | verdict | measured | bar | statement | dataset | run |", "|---|---|---|---|---|---|---|"]
    for r in report.claims:
        run = (f"[{r.run_id[:8]}]({r.url})" if r.url and links else (r.run_id or "-")[:8]) if r.run_id else "-"
        lines.append(f"| {r.claim.id} | {r.verdict} | {_measured(r)} | `{r.claim.bar}` | {r.claim.statement} | "
                     f"{r.dataset or '-'} | {run} |")
    return "\n".join(lines)


def console_table(report: Report) -> str:
    """The claims table for a terminal: id, verdict, value vs threshold."""
    lines = [f"{'claim':<5} {'verdict':<8} {'measured':<34} bar"]
    for r in report.claims:
        lines.append(f"{r.claim.id:<5} {r.verdict:<8} {_measured(r):<34} {r.claim.bar}")
    counts = ", ".join(f"{count} {verdict}" for verdict, count in sorted(report.counts.items()))
    lines.append(f"({counts}; profile {report.profile or '-'})")
    return "\n".join(lines)


def models_table(report: Report) -> str:
    lines = ["| family | model | dataset | headline | params | FLOPs | train s | device |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report.models:
        headline = f"{row['headline']} {_number(row['value'])}" if row["headline"] else "-"
        lines.append(f"| {row['family']} | {row['model']} | {row['dataset']} | {headline} | {row['params']:,.0f} | "
                     f"{row['flops']:,.0f} | {_number(row['train_seconds'])} | {row['device'] or '-'} |")
    return "\n".join(lines)


def markdown(report: Report, picture_files: Mapping[str, str] | None = None) -> str:
    """The report as Markdown; ``picture_files`` maps a claim id to the image file beside it."""
    parts = [f"# nnzoo zoo report ({report.profile or 'no runs'} profile)", "",
             f"Made {report.created} from `{report.store}`. Verdicts: "
             + ", ".join(f"{count} {verdict}" for verdict, count in sorted(report.counts.items())) + ".",
             "", "## Claims", "", claims_table(report), ""]
    if report.chart and picture_files and "C17" in picture_files:
        parts += ["## C17: accuracy vs compute", "", f"![accuracy vs FLOPs]({picture_files['C17']})", ""]
    parts += ["## Trained models", "", models_table(report), ""]
    return "\n".join(parts)


_VERDICT_COLOURS = {"PASS": "#1b7f3b", "FAIL": "#b3261e", NOT_RUN: "#6b6b6b", NO_BAR: "#8a6d00"}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#1d1d1f;line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border:1px solid #ddd;padding:.35rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f4f6}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.verdict{color:#fff;border-radius:4px;padding:.1rem .45rem;font-weight:600;font-size:.8rem;white-space:nowrap}
.claim{border:1px solid #ddd;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}
.claim h3{margin:.1rem 0 .4rem;font-size:1.05rem}.meta{color:#555;font-size:.88rem}
.pictures{display:flex;flex-wrap:wrap;gap:.8rem;margin-top:.6rem}figure{margin:0;max-width:100%}
figure img{max-width:560px;width:100%;border:1px solid #eee}figcaption{font-size:.8rem;color:#555}
img.chart{max-width:100%;border:1px solid #eee}code{font-size:.8rem;word-break:break-word}
td.statement{min-width:16rem}
"""


def _verdict_html(verdict: str) -> str:
    return f'<span class="verdict" style="background:{_VERDICT_COLOURS.get(verdict, "#444")}">{html.escape(verdict)}</span>'


def _img(data: bytes, alt: str, css: str = "") -> str:
    encoded = base64.b64encode(data).decode()
    return f'<img{f" class={css!r}" if css else ""} alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def html_page(report: Report) -> str:
    """The report as one HTML page with every figure embedded: it opens offline."""
    e = html.escape
    rows = []
    for r in report.claims:
        run = (f'<a href="{e(r.url)}">{e(r.run_id[:8])}</a>' if r.url else f"<code>{e(r.run_id[:8])}</code>") \
            if r.run_id else "-"
        rows.append(f'<tr id="row-{r.claim.id}"><td><a href="#{r.claim.id}">{r.claim.id}</a></td>'
                    f"<td class=statement>{e(r.claim.statement)}</td><td>{_verdict_html(r.verdict)}</td>"
                    f"<td class=num>{e(_measured(r))}</td><td><code>{e(r.claim.bar)}</code></td>"
                    f"<td>{e(r.dataset or '-')}</td><td>{run}</td></tr>")
    sections = []
    for r in report.claims:
        pictures = "".join(f"<figure>{_img(data, caption)}<figcaption>{e(caption)}</figcaption></figure>"
                           for caption, data in r.pictures) or '<p class="meta">no picture: not run</p>'
        profiles = ", ".join(r.claim.profiles)
        sections.append(
            f'<div class="claim" id="{r.claim.id}"><h3>{r.claim.id} {_verdict_html(r.verdict)} {e(r.claim.statement)}'
            f'</h3><div class="meta">Experiment: {e(r.experiment)}. Family: {e(r.claim.family)}. Bar: '
            f"<code>{e(r.claim.bar)}</code> (judged on {e(profiles)}). Measured: {e(_measured(r))}"
            f"{f' on {e(r.dataset)}' if r.dataset else ''}.</div><div class=pictures>{pictures}</div></div>")
    model_rows_html = "".join(
        f"<tr><td>{e(row['family'])}</td><td>{e(row['model'])}</td><td>{e(row['dataset'])}</td>"
        f"<td>{e(row['headline'] or '-')}</td><td class=num>{e(_number(row['value']))}</td>"
        f"<td class=num>{row['params']:,.0f}</td><td class=num>{row['flops']:,.0f}</td>"
        f"<td class=num>{e(_number(row['train_seconds']))}</td><td>{e(row['device'] or '-')}</td></tr>"
        for row in report.models)
    counts = ", ".join(f"{count} {verdict}" for verdict, count in sorted(report.counts.items()))
    chart = _img(report.chart, "accuracy vs FLOPs", "chart") if report.chart else "<p>No classifier was trained.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nnzoo report ({e(report.profile or '-')})</title>
<style>{_CSS}</style></head><body>
<h1>nnzoo zoo report: {e(report.profile or 'no runs')} profile</h1>
<p class="meta">Made {e(report.created)} from <code>{e(report.store)}</code>. Verdicts: {e(counts)}.
PASS and FAIL judge a claim's declared bar; NOT RUN: no run of this profile measured it; NO BAR: measured on a
profile the bar does not apply to.</p>
<h2>Claims</h2>
<table id="claims"><tr><th>claim</th><th>statement</th><th>verdict</th><th>measured</th><th>bar</th>
<th>dataset</th><th>MLflow run</th></tr>{''.join(rows)}</table>
<h2 id="c17-chart">C17: accuracy vs compute</h2>{chart}
<h2>Each claim and its pictures</h2>{''.join(sections)}
<h2>Trained models</h2>
<table id="models"><tr><th>family</th><th>model</th><th>dataset</th><th>headline</th><th>value</th><th>parameters</th>
<th>FLOPs</th><th>train s</th><th>device</th></tr>{model_rows_html}</table>
</body></html>
"""


def write(report: Report, folder: Path) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and the C17 chart into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"html": folder / "report.html", "markdown": folder / "report.md"}
    pictures = {}
    if report.chart:
        files["chart"] = folder / "accuracy_vs_flops.png"
        files["chart"].write_bytes(report.chart)
        pictures["C17"] = files["chart"].name
    files["html"].write_text(html_page(report))
    files["markdown"].write_text(markdown(report, pictures))
    return files


def log_report(report: Report, files: Mapping[str, Path]) -> str:
    """A ``report`` run in ``nnzoo-report`` holding the files, C17's value and the
    verdict counts; FAILED with the reason if logging breaks off."""
    from pipelines import tracking

    tracking.ensure_experiment(EXPERIMENT, "The zoo report: every claim of the talk, measured and judged")
    run_id = tracking.start_run(EXPERIMENT, f"report-{report.profile}",
                                tags={_TAG_FAMILY: claims_module.REPORT_OWNER, _TAG_MODEL: "report",
                                      _TAG_STAGE: "report", _TAG_PROFILE: report.profile or ""})
    try:
        c17 = next(r for r in report.claims if r.claim is C17)
        metrics = {f"claims_{verdict.lower().replace(' ', '_')}": float(count)
                   for verdict, count in report.counts.items()}
        if c17.value is not None:
            metrics[C17.metric] = c17.value
        tracking.log_metrics(run_id, metrics)
        tracking.log_dict(run_id, {"profile": report.profile, "claims": [r.as_dict() for r in report.claims],
                                   "models": report.models}, "report.json")
        for path in files.values():
            tracking.client().log_artifact(run_id, str(path))
    except BaseException as error:
        tracking.end_run(run_id, "FAILED", f"report not logged: {type(error).__name__}: {error}")
        raise
    tracking.end_run(run_id, "FINISHED")
    return run_id


def make_report(profile: str | None = None, out: Path | None = None) -> dict[str, Any]:
    """Collect from the configured store, write under ``$NNZOO_HOME/reports/<profile>-<time>/``
    (or ``out``) and log. Returns the paths, the report run id, each claim's verdict and
    value, and the console table."""
    report = collect(profile)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    folder = out or settings.home() / "reports" / f"{report.profile or 'none'}-{stamp}"
    files = write(report, folder)
    run_id = log_report(report, files) if report.profile else None
    return {"profile": report.profile, "html": str(files["html"]), "markdown": str(files["markdown"]),
            "run_id": run_id, "verdicts": {r.claim.id: r.verdict for r in report.claims},
            "values": {r.claim.id: r.value for r in report.claims}, "table": console_table(report)}
