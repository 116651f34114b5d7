"""What the claims tests share: a claim's verdict on metrics measured by its family's
own stage functions, judged by the declaration (:mod:`pipelines.claims`), so that a test
and the report can never hold a claim to different bars."""

from __future__ import annotations

from collections.abc import Mapping

from pipelines.claims import PASS, get_claim


def verdict(claim_id: str, metrics: Mapping[str, float], baseline_metrics: Mapping[str, float] | None = None,
            profile: str = "quick") -> str:
    """The claim's verdict for ``metrics`` (the run of the claim's model) and
    ``baseline_metrics`` (the run of its ``baseline_model``; default: ``metrics``)."""
    claim = get_claim(claim_id)
    value = metrics.get(claim.metric)
    baseline = (baseline_metrics if baseline_metrics is not None else metrics).get(claim.baseline) \
        if claim.baseline else None
    return claim.judge(value, baseline, profile)


def assert_claim(claim_id: str, metrics: Mapping[str, float], baseline_metrics: Mapping[str, float] | None = None,
                 profile: str = "quick") -> None:
    """Fail unless the claim passes its declared bar on these measurements."""
    claim = get_claim(claim_id)
    result = verdict(claim_id, metrics, baseline_metrics, profile)
    shown = {key: (metrics if key != claim.baseline or baseline_metrics is None else baseline_metrics).get(key)
             for key in filter(None, (claim.metric, claim.baseline))}
    assert result == PASS, f"{claim_id} ({claim.statement}): {result}; bar {claim.bar}; measured {shown}"


def assert_result_contract(family, store, run_key: str) -> None:
    """The result contract on one pipeline run of ``family`` (run key ``run_key``) in
    ``store``: the summary ``nnzoo run`` prints for it (the same rows) holds every
    headline and claim metric the family declares, and the report finds every picture
    each of its claims declares. Each family's stage tests call this on their smoke run;
    ``tests/pipelines/stages/test_result_contract.py`` checks that every family does."""
    import pytest

    from pipelines import report
    from pipelines.localrun import summary_rows

    with pytest.MonkeyPatch.context() as patch:
        store.activate(patch)
        rows = summary_rows(env=store.env(), run_key_prefix=run_key, family=family.name)
        metrics = {row["model"]: row["metrics"] for row in rows}
        assert family.missing_results(metrics) == [], f"{family.name}'s summary lacks what it declares"
        runs = report._runs(report._client(), "smoke")
        for claim in family.claims:
            result = report.judge_claim(claim, runs, "smoke", report._client())
            assert [caption for caption, _ in result.pictures] == [p.caption for p in claim.pictures], claim.id
