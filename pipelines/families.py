"""Registry of model families: name -> config class, profiles and pipeline.

A family is declared once, in its config module ``pipelines/configs/<name>.py``, with
:func:`register_family`; the modules are discovered by walking the package, so a new
family needs no edit here. The family's name is the one convention: its stages live in
``pipelines.stages.<name>``, its DAG id is ``zoo_<name>``, its MLflow experiment
``nnzoo-<name>``. Only light modules are imported: DAG files read this at parse time.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from typing import Any

from pipelines.config import MOCK_SUFFIX, PROFILES, Config, ConfigError, apply_overrides, from_dict
from pipelines.pipeline import Pipeline


@dataclasses.dataclass(frozen=True)
class Command:
    """A command a family adds to ``nnzoo`` (``nnzoo stylize``), declared beside its
    config so the CLI knows no family: its arguments as ``argparse`` takes them and the
    function that runs it, imported only when the command is run."""

    name: str
    help: str
    target: str
    """``module:function``: called with the parsed arguments, returns the exit status."""
    arguments: tuple[tuple[tuple[str, ...], Mapping[str, Any]], ...] = ()
    """``(flags, add_argument keywords)`` pairs; :func:`argument` writes one."""

    def add_to(self, subparsers: Any) -> None:
        parser = subparsers.add_parser(self.name, help=self.help)
        for flags, keywords in self.arguments:
            parser.add_argument(*flags, **keywords)
        parser.set_defaults(func=self.run)

    def run(self, args: Any) -> int:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)(args)


def argument(*flags: str, **keywords: Any) -> tuple[tuple[str, ...], Mapping[str, Any]]:
    """One argument of a :class:`Command`, as ``parser.add_argument(*flags, **keywords)``."""
    return flags, keywords


@dataclasses.dataclass(frozen=True)
class ModelFrom:
    """A model a family takes from another family (fcn_deconv converts the classifiers'
    CNN), resolved by :func:`pipelines.runner.model_from`."""

    name: str
    """What the family calls it (``classifier``)."""
    family: str
    model: str
    """The model's name in ``family``: the registered model is ``nnzoo-<family>-<model>``."""
    version: str
    """Dotted path of the knob that pins a version: ``champion`` or a version number."""

    @property
    def registered(self) -> str:
        return registered_name(self.family, self.model)


def registered_name(family: str, model: str, mock: bool = False) -> str:
    """``nnzoo-<family>-<model>``: a family's registered model; ``-mock`` appended for
    runs on mock data (``mock_data``)."""
    return f"nnzoo-{family}-{model}{MOCK_SUFFIX if mock else ''}"


@dataclasses.dataclass(frozen=True)
class Family:
    """One family of experiments, e.g. ``classifiers``."""

    name: str
    description: str
    config_cls: type[Config]
    profiles: Mapping[str, Mapping[str, Any]]
    """Overrides applied to the config defaults for each profile in :data:`PROFILES`."""
    pipeline: Pipeline
    form_params: tuple[str, ...] = ()
    """Dotted config paths shown in the Airflow trigger form (by their leaf name)."""
    headline: tuple[tuple[str, str], ...] = ()
    """``(model, metric)`` pairs (``fnmatch`` patterns on the run's ``nnzoo.model`` tag and
    the metric's name) shown in run summaries (``make run``, ``nnzoo run``); a claim's
    metrics are shown too."""
    claims: tuple[Any, ...] = ()
    """The talk's claims this family's runs answer (:class:`pipelines.claims.Claim`)."""
    off_chart: tuple[str, ...] = ()
    """Models whose test accuracy answers another question than their dataset's (a
    two-class slice): left off the report's accuracy-vs-FLOPs chart (C17)."""
    commands: tuple[Command, ...] = ()
    """Commands the family adds to ``nnzoo`` (:class:`Command`)."""
    uses: tuple[ModelFrom, ...] = ()
    """Models the family takes from other families (:class:`ModelFrom`)."""
    quick_seconds: tuple[float, float] | None = None
    """``(training, the rest)`` seconds of the quick profile's ``make run`` on the reference
    machine of :mod:`pipelines.eta`, which scales them to this machine for the ETA."""
    mock: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The counts a run on tensorflow-datasets' mock data cuts (``mock_data``): epochs,
    examples, steps, iterations; never a dataset, shape, model or switch (a test holds
    this). Applied over the profile, under the user's own overrides."""
    mock_sample: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Overrides that keep one model of each architecture where the full profile trains
    one architecture several times over (other depths, activations, lengths): what the
    test suite's run on mock data trains. ``nnzoo run FAMILY --profile full --param
    mock_data=64`` trains them all."""

    def __post_init__(self) -> None:
        missing = set(PROFILES) - set(self.profiles)
        if missing:
            raise ValueError(f"family {self.name!r} lacks profiles {sorted(missing)}")
        for pair in self.headline:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise ValueError(f"family {self.name!r}: headline entry {pair!r} is not a (model, metric) pair")
        for claim in self.claims:
            if claim.family != self.name:
                raise ValueError(f"family {self.name!r}: claim {claim.id} is declared for {claim.family!r}; "
                                 "wrap the family's claims in pipelines.claims.owned(name, ...)")

    def summary_metrics(self, model: str) -> tuple[str, ...]:
        """Metric patterns the summary shows for a run of ``model``: its headline metrics
        and what the family's claims read from it (empty: the run is not summarised)."""
        import fnmatch

        patterns = [metric for pattern, metric in self.headline if fnmatch.fnmatchcase(model, pattern)]
        patterns += [name for claim in self.claims for name in claim.metrics_of(model)]
        return tuple(dict.fromkeys(patterns))

    def missing_results(self, metrics: Mapping[str, Mapping[str, float]]) -> list[str]:
        """What a run's summary (``{model: {metric: value}}``, as ``nnzoo run`` prints it)
        lacks of what this family declares: a headline ``(model, metric)`` that no row
        shows, a claim's metric, baseline or spread. Empty: the result contract holds."""
        import fnmatch

        gaps = []
        for pattern, metric in self.headline:
            if not any(fnmatch.fnmatchcase(model, pattern) and any(fnmatch.fnmatchcase(k, metric) for k in values)
                       for model, values in metrics.items()):
                gaps.append(f"headline {metric!r} of model {pattern!r}")
        for claim in self.claims:
            wanted = [(claim.model, claim.metric)]
            if claim.baseline:
                wanted.append((claim.baseline_model or claim.model, claim.baseline))
            if claim.spread:
                wanted.append((claim.model, claim.spread))
            gaps += [f"{claim.id} metric {metric!r} of model {model!r}" for model, metric in wanted
                     if metric not in metrics.get(model, {})]
        return gaps

    @property
    def stages(self) -> tuple[str, ...]:
        """Step names in order, from the pipeline declaration."""
        return tuple(step.name for step in self.pipeline.all_steps)

    @property
    def doc_md(self) -> str:
        """The DAG's documentation: what the family shows, how to run it, its steps."""
        steps = "\n".join(f"{n}. `{s.name}`{' (training)' if s.trains else ''}: {s.title}"
                          for n, s in enumerate(self.pipeline.all_steps, 1))
        return f"# {self.description}\n\n{inspect.cleandoc(self.config_cls.__doc__ or '')}\n\n## Steps\n{steps}\n"

    def load(self, config: Mapping[str, Any]) -> Config:
        """Decode a stage's ``config`` dict into this family's typed config (validated)."""
        return from_dict(self.config_cls, config)

    @property
    def dag_id(self) -> str:
        return f"zoo_{self.name}"

    @property
    def experiment_name(self) -> str:
        return f"nnzoo-{self.name}"

    def config(self, profile: str = "quick", overrides: Mapping[str, Any] | None = None) -> Config:
        """The typed config for ``profile`` with ``overrides`` applied."""
        if profile not in PROFILES:
            raise ConfigError(f"profile={profile!r}: expected one of {', '.join(PROFILES)}")
        config = apply_overrides(self.config_cls(), {**self.profiles[profile], "profile": profile})
        chosen = apply_overrides(config, overrides or {})
        if chosen.mock_data:  # the mock counts, then the user's overrides again on top
            return apply_overrides(apply_overrides(config, {**self.mock, "mock_data": chosen.mock_data}),
                                   overrides or {})
        return chosen


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    if family.name in _FAMILIES and _FAMILIES[family.name] is not family:
        raise ValueError(f"family {family.name!r} registered twice")
    _FAMILIES[family.name] = family
    return family


def _discover() -> None:
    import pipelines.configs as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def all_families() -> dict[str, Family]:
    """Every registered family, by name, in a stable order."""
    _discover()
    return dict(sorted(_FAMILIES.items()))


def get_family(name: str) -> Family:
    families = all_families()
    if name not in families:
        raise ConfigError(f"unknown family {name!r}; expected one of {', '.join(families)} or 'all'")
    return families[name]
