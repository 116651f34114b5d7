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
