"""The talk's claims as declarations: each family states, beside its config, which
claims its runs answer, where the number is (the run's model tag and a metric), the bar
it must clear and on which profiles that bar applies.

One declaration feeds the report (:mod:`pipelines.report`), the run summary (a claim's
metrics are always in ``nnzoo run``'s JSON), the claims tests and the table of
``docs/claims.md`` (checked against these declarations by a test). Light: DAG files
read it at parse time.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Mapping

COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}

PASS, FAIL, NOT_RUN, NO_BAR = "PASS", "FAIL", "NOT RUN", "NO BAR"
"""Verdicts. ``NO BAR``: measured on a profile the threshold does not apply to (smoke
runs measure, they do not judge)."""

REPORT_OWNER = "report"
"""Owner of the claims that read every family's models (C17)."""


@dataclasses.dataclass(frozen=True)
class Picture:
    """An image a reader needs beside a claim: an artifact of the newest run of ``model``
    (the family's parent run is model ``pipeline``)."""

    model: str
    path: str
    caption: str = ""


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the talk and the measurement that checks it."""

    id: str
    """The talk's id, ``C1`` .. ``C17``."""
    statement: str
    """The claim in one line."""
    experiment: str
    """What is measured, in one line."""
    metric: str
    """The metric the verdict reads, in the newest run of ``model``."""
    comparator: str
    threshold: float
    model: str = "pipeline"
    """``nnzoo.model`` tag of the run holding ``metric`` (``pipeline``: the family's parent run)."""
    baseline: str | None = None
    """A metric of the same run the value must beat or tie (in ``comparator``'s direction)."""
    baseline_model: str | None = None
    """The run holding ``baseline``, when not ``model``'s."""
    baseline_factor: float = 1.0
    """The value must beat or tie ``baseline_factor`` times the baseline (e.g. 0.01 with
    ``<=``: at least 100x smaller); 1: beat or tie the baseline itself."""
    spread: str | None = None
    """A metric of the same run holding the spread (sd) over seeds, where there are seeds."""
    profiles: tuple[str, ...] = ("quick", "full")
    """Profiles whose runs are judged against ``threshold``; others are measured only."""
    pictures: tuple[Picture, ...] = ()
    dataset: str | None = None
    """The data the metric is measured on, when not the run's dataset (a parent run's
    dataset is the family's main one, its claims may read other tasks' numbers)."""
    family: str = ""
    """The owning family (set by :func:`owned`), or :data:`REPORT_OWNER`."""

    def __post_init__(self) -> None:
        if self.comparator not in COMPARATORS:
            raise ValueError(f"claim {self.id}: comparator {self.comparator!r}, expected one of {', '.join(COMPARATORS)}")
        if not self.id.startswith("C") or not self.id[1:].isdigit():
            raise ValueError(f"claim id {self.id!r}: expected C<number>")

    @property
    def number(self) -> int:
        return int(self.id[1:])

    @property
    def bar(self) -> str:
        """The threshold as text, e.g. ``>= 0.9`` (and ``, beats pca_test_mse``)."""
        text = f"{self.metric} {self.comparator} {self.threshold:g}"
        if self.baseline:
            where = f"{self.baseline_model}." if self.baseline_model else ""
            factor = f"{self.baseline_factor:g} x " if self.baseline_factor != 1 else ""
            text += f" and {'<=' if self.comparator.startswith('<') else '>='} {factor}{where}{self.baseline}"
        return text

    def judge(self, value: float | None, baseline: float | None, profile: str) -> str:
        """The verdict for ``value`` measured on ``profile`` (None: not measured)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return NOT_RUN
        if profile not in self.profiles:
            return NO_BAR
        passed = COMPARATORS[self.comparator](value, self.threshold)
        if self.baseline:
            if baseline is None:
                return FAIL
            tie = operator.le if self.comparator.startswith("<") else operator.ge
            passed = passed and tie(value, self.baseline_factor * baseline)
        return PASS if passed else FAIL

    def metrics_of(self, model: str) -> tuple[str, ...]:
        """The metrics this claim reads from the run of ``model``."""
        names = [self.metric] if model == self.model else []
        if self.baseline and (self.baseline_model or self.model) == model:
            names.append(self.baseline)
        if self.spread and model == self.model:
            names.append(self.spread)
        return tuple(names)


def owned(family: str, *claims: Claim) -> tuple[Claim, ...]:
    """``claims`` as declared by ``family`` (a family's ``claims=`` field)."""
    return tuple(dataclasses.replace(claim, family=family) for claim in claims)


# --- C17: owned by the report, since it reads every family's models ----------------------------

NEWER_ARCHITECTURES = ("residual", "inception")
"""Model names with one of these words are the talk's "newer architectures" (skip
connections, inception modules); the rest (MLPs, plain and pooled CNNs) are older."""


def is_newer(model: str) -> bool:
    return any(word in model for word in NEWER_ARCHITECTURES)




C17 = Claim(
    "C17", "Newer architectures reach better accuracy with fewer parameters",
    "Every trained classifier of the profile, one panel per dataset: accuracy vs FLOPs, bubble = parameters; "
    "the share of the accuracy-per-parameter frontier held by residual and inception nets",
    metric="newer_frontier_share", comparator=">=", threshold=0.5, model="report",
    pictures=(Picture("report", "accuracy_vs_flops.png", "accuracy vs FLOPs, bubble area = parameters"),),
    family=REPORT_OWNER)
"""Why this criterion: the talk's chart (ImageNet: GoogLeNet and ResNet above VGG with a
fraction of its weights) says that the newer designs *dominate*: for any older net there
is a newer one at least as accurate with no more parameters. The Pareto frontier of
accuracy against parameters (the models no other model beats on both) is exactly the set
a chart reader looks at, so the claim holds when residual and inception nets make up at
least half of it. It can fail (a frontier of plain CNNs and MLPs), needs no
hand-picked pairs, and compares models only with others scored on the same dataset;
datasets where only one kind was trained (the sequence tasks) say nothing about it."""


def pareto_frontier(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the points ``(accuracy, parameters)`` that no other point beats or ties on
    both with a strict gain on one: the accuracy-per-parameter frontier, fewest
    parameters first."""
    names = []
    for name, (accuracy, params) in points.items():
        dominated = any(a >= accuracy and p <= params and (a > accuracy or p < params)
                        for other, (a, p) in points.items() if other != name)
        if not dominated:
            names.append(name)
    return sorted(names, key=lambda name: points[name][1])


def newer_frontier_share(points_by_dataset: Mapping[str, Mapping[str, tuple[float, float]]]) -> float | None:
    """C17's metric: the share of the accuracy-per-parameter frontier held by newer
    architectures, over the datasets where newer and older ones were both trained (None
    when there is no such dataset)."""
    frontier = [name for points in points_by_dataset.values()
                if any(map(is_newer, points)) and not all(map(is_newer, points))
                for name in pareto_frontier(points)]
    if not frontier:
        return None
    return sum(is_newer(name) for name in frontier) / len(frontier)


def all_claims() -> list[Claim]:
    """Every declared claim, C1 .. C17, in order; each id owned exactly once."""
    from pipelines.families import all_families

    claims = [claim for family in all_families().values() for claim in family.claims] + [C17]
    seen: dict[str, str] = {}
    for claim in claims:
        if claim.id in seen:
            raise ValueError(f"claim {claim.id} declared by both {seen[claim.id]} and {claim.family}")
        seen[claim.id] = claim.family
    return sorted(claims, key=lambda claim: claim.number)


def get_claim(claim_id: str) -> Claim:
    for claim in all_claims():
        if claim.id == claim_id:
            return claim
    raise KeyError(f"no claim {claim_id!r}")


DOC_BEGIN, DOC_END = "<!-- claims table: generated by `python -m pipelines.claims`; begin -->", \
    "<!-- claims table: end -->"


def markdown_table() -> str:
    """The table of ``docs/claims.md``, from the declarations (a test keeps them equal)."""
    lines = ["| # | claim | experiment | family | reads (model: metric) | bar | judged on |",
             "|---|---|---|---|---|---|---|"]
    for claim in all_claims():
        lines.append(f"| {claim.id} | {claim.statement} | {claim.experiment} | {claim.family} | "
                     f"`{claim.model}`: `{claim.metric}` | `{claim.bar}` | {', '.join(claim.profiles)} |")
    return "\n".join([DOC_BEGIN, *lines, DOC_END])


if __name__ == "__main__":
    print(markdown_table())
