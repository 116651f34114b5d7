"""Sequence family: plan_jobs -> train (one mapped task per task x cell x direction x
length) -> compare, register. The steps are declared in :mod:`pipelines.configs.sequences`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines import tracking
from pipelines.config import DataConfig
from pipelines.configs.sequences import DIRECTIONS, FAMILY
from pipelines.kit import StepContext, Training, say, step_of

SPLIT = {"val_fraction": 0.1, "test_fraction": 0.2}


# --- plan --------------------------------------------------------------------------------


@step_of(FAMILY)
def plan_jobs(step: StepContext) -> list[dict[str, Any]]:
    """Generate (or find stored) the adding-problem data at every length and the
    future-context data, and return one job per training: small dicts with the task,
    cell, direction, length, the data reference and a display name."""
    from pipelines.data.prepared import prepare

    typed = step.config
    seed = typed.data.split_seed
    jobs: list[dict[str, Any]] = []
    if "adding" in typed.tasks:
        for length in sorted(typed.adding.lengths):
            data = prepare(DataConfig(dataset="adding_problem", split_seed=seed, **SPLIT),
                           params={"sequence_length": length, "examples": typed.adding.examples, "seed": seed})
            jobs += [_job("adding", cell, "uni", data.uri, length) for cell in typed.adding.cells]
    if "future_context" in typed.tasks:
        future_context = typed.future_context
        data = prepare(DataConfig(dataset="future_context", split_seed=seed, **SPLIT), params={
            "sequence_length": future_context.sequence_length, "vocabulary": future_context.vocabulary,
            "examples": future_context.examples, "seed": seed})
        jobs += [_job("future_context", cell, direction, data.uri) for cell in future_context.cells
                 for direction in DIRECTIONS]
    if "sentiment" in typed.tasks:
        jobs += [_job("sentiment", cell, direction, step["data_uri"]) for cell in typed.sentiment.cells
                 for direction in DIRECTIONS]
    say(f"sequences: {len(jobs)} trainings: " + ", ".join(job["name"] for job in jobs))
    return jobs


def _job(task: str, cell: str, direction: str, data_uri: str, length: int | None = None) -> dict[str, Any]:
    label = f"{'bi' if direction == 'bi' else ''}{cell.upper() if cell != 'rnn' else 'SimpleRNN'}"
    name = f"{task} {label}" + (f" T={length}" if length else "")
    key = f"{task}-{cell}-{direction}" + (f"-t{length}" if length else "")
    return {"task": task, "cell": cell, "direction": direction, "length": length, "data_uri": data_uri,
            "name": name, "key": key}


# --- train -------------------------------------------------------------------------------


@step_of(FAMILY)
def train(step: StepContext) -> dict[str, Any]:
    """Train the job's model; the task decides data, model, loss and what is measured."""
    task = step.get("task")
    trainers = {"adding": _adding, "future_context": _future_context, "sentiment": _sentiment}
    if task not in trainers:
        raise ValueError(f"task={task!r}: expected one of {', '.join(trainers)}")
    trained = trainers[task](step)
    metrics = trained["metrics"]
    shown = ", ".join(f"{key} {metrics[key]:.4f}" for key in (
        "test_mse", "baseline_mse", "test_accuracy", "causal_bound", "tfidf_test_accuracy") if key in metrics)
    say(f"{step['name']}: {shown}")
    return {**trained, **{key: step[key] for key in ("task", "cell", "direction", "length", "name", "key")}}


def _common(step: StepContext, sequence_length: int, **fields: Any) -> Training:
    labels = {key: step[key] for key in ("task", "cell", "direction")}
    return Training(step["key"], data=step.data, run_name=step["name"], tags=labels,
                    params={**labels, "sequence_length": sequence_length}, **fields)


def _adding(step: StepContext) -> dict[str, Any]:
    from models import build_model
    from pipelines.gradients import InputGradients
    from pipelines.train import StopBelow

    typed, data = step.config, step.data
    adding = typed.adding
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (data.split(s) for s in ("train", "val", "test"))
    length = int(train_x.shape[1])
    simple = step["cell"] == "rnn"
    through_time = InputGradients(test_x[:256], test_y[:256])

    def evaluate(run: Any, model: Any, history: Any) -> dict[str, float]:
        from pipelines import plots

        predicted = model.predict(test_x, batch_size=1024, verbose=0)[:, 0]
        metrics = {"test_mse": float(np.mean((predicted - test_y) ** 2)),
                   # the best constant: the mean of the training targets (about 1.0; MSE about 1/6)
                   "baseline_mse": float(np.mean((float(train_y.mean()) - test_y) ** 2))}
        metrics["mse_vs_baseline"] = metrics["test_mse"] / metrics["baseline_mse"]
        if through_time.records:
            tracking.log_dict(run.run_id, {"steps": list(range(1, length + 1)), **through_time.records},
                              "gradients/through_time.json")
            tracking.log_figure(run.run_id, plots.lines(
                {stage: (range(1, length + 1), norms) for stage, norms in through_time.records.items()},
                f"{step['name']}: |dL/dx_t| at each time step", "time step t", "gradient norm", log_y=True),
                "plots/gradient_through_time.png")
            metrics.update({f"first_step_gradient_{'at_init' if stage == 'initialisation' else stage}": norms[0]
                            for stage, norms in through_time.records.items()})
        return metrics

    return step.train(_common(
        step, length, examples=len(train_y), after=evaluate,
        gradient_norms=(train_x[:64], train_y[:64], 50),
        callbacks=lambda run_id: [through_time,
                                  *([StopBelow("val_loss", adding.target_mse)] if adding.target_mse else [])],
        build=lambda: build_model("sequence_regressor", input_shape=(length, int(train_x.shape[2])),
                                  cell=step["cell"], units=adding.units,
                                  bidirectional=step["direction"] == "bi",
                                  truncation=adding.truncation or None, name=step["key"].replace("-", "_")),
        arrays=((train_x, train_y), (val_x, val_y)), normalize=False,
        train=typed.train.replace(epochs=adding.max_epochs, batch_size=adding.batch,
                                  lr_schedule="constant",
                                  learning_rate=adding.rnn_step_size if simple else adding.step_size,
                                  early_stopping_patience=adding.rnn_patience if simple else 0),
        fit={"loss": "mse", "metrics": ("mae",)}))


def _future_context(step: StepContext) -> dict[str, Any]:
    from models import build_model
    from pipelines.data.source_sequences import causal_bound

    typed, data = step.config, step.data
    future_context = typed.future_context
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (data.split(s) for s in ("train", "val", "test"))
    length, vocabulary = int(train_x.shape[1]), int(data.meta["generator"]["params"]["vocabulary"])

    def evaluate(run: Any, model: Any, history: Any) -> dict[str, float]:
        predicted = model.predict(test_x, batch_size=1024, verbose=0).argmax(axis=-1)
        by_position = (predicted == test_y).mean(axis=0)
        tracking.log_dict(run.run_id, {"accuracy_by_position": by_position.tolist()},
                          "evaluation/accuracy_by_position.json")
        return {"test_accuracy": float((predicted == test_y).mean()),
                "causal_bound": causal_bound(length, vocabulary)}

    return step.train(_common(
        step, length, examples=len(train_y), after=evaluate,
        build=lambda: build_model("sequence_tagger", vocabulary_size=vocabulary + 1, num_classes=2,
                                  sequence_length=length, cell=step["cell"], units=future_context.units,
                                  bidirectional=step["direction"] == "bi", name=step["key"].replace("-", "_")),
        arrays=((train_x, train_y), (val_x, val_y)), normalize=False,
        train=typed.train.replace(epochs=future_context.max_epochs, learning_rate=future_context.step_size,
                                  batch_size=future_context.batch, lr_schedule="constant", early_stopping_patience=0)))


def _sentiment(step: StepContext) -> dict[str, Any]:
    from models import build_model
    from models.recurrent import make_text_vectorizer, with_text_vectorizer
    from pipelines.data.source_sequences import tfidf_baseline

    typed, data = step.config, step.data
    sentiment = typed.sentiment
    texts = {split: data.get(split, "text") for split in ("train", "val", "test")}
    labels = {split: data.get(split, "y") for split in ("train", "val", "test")}
    vectorizer = make_text_vectorizer(sentiment.max_tokens, sentiment.sequence_length)
    vectorizer.adapt(texts["train"])  # the vocabulary comes from the training split only
    tokens = {split: np.asarray(vectorizer(texts[split])) for split in texts}

    def evaluate(run: Any, model: Any, history: Any) -> dict[str, float]:
        predicted = model.predict(tokens["test"], batch_size=1024, verbose=0).argmax(axis=1)
        if data.fingerprint not in _TFIDF:
            _TFIDF[data.fingerprint] = tfidf_baseline(texts, labels)
        baseline = _TFIDF[data.fingerprint]
        tracking.log_dict(run.run_id, baseline, "evaluation/tfidf_baseline.json")
        cut = float(np.mean([len(text.split()) > sentiment.sequence_length for text in texts["test"]]))
        return {"test_accuracy": float((predicted == labels["test"]).mean()),
                "tfidf_test_accuracy": baseline["test_accuracy"], "vocabulary_size": vectorizer.vocabulary_size(),
                "test_share_truncated": cut}

    return step.train(_common(
        step, sentiment.sequence_length, examples=len(labels["train"]), after=evaluate,
        build=lambda: build_model("text_classifier", vocabulary_size=vectorizer.vocabulary_size(),
                                  num_classes=data.num_classes, sequence_length=sentiment.sequence_length,
                                  cell=step["cell"], units=sentiment.units,
                                  bidirectional=step["direction"] == "bi", embedding_dim=sentiment.embedding_dim,
                                  dropout_rate=sentiment.dropout_rate, name=step["key"].replace("-", "_")),
        arrays=((tokens["train"], labels["train"]), (tokens["val"], labels["val"])), normalize=False,
        # The registered model takes raw strings: the tokenizer is saved inside it.
        export=lambda model: (with_text_vectorizer(vectorizer, model), texts["train"][:4])))


_TFIDF: dict[str, dict[str, Any]] = {}
"""TF-IDF results by dataset fingerprint: both sentiment trainings of a process share one fit."""


def dry_run_models(typed: Any, examples: dict[str, int]) -> list[Any]:
    """What :func:`train` trains for the jobs of :func:`plan_jobs`, for ``nnzoo run
    sequences --dry-run``; models of one shape (the future-context and sentiment pairs
    differ by direction) are listed one by one."""
    from models import build_model
    from pipelines.dryrun import ModelPlan, steps, stopping_note, training_examples

    plans = []
    train_share = 1 - SPLIT["val_fraction"] - SPLIT["test_fraction"]

    if "adding" in typed.tasks:
        adding = typed.adding
        count = int(adding.examples * train_share)
        for length in sorted(adding.lengths):
            for cell in adding.cells:
                key = _job("adding", cell, "uni", "", length)["key"]
                stop = " or ".join(
                    ([f"early stopping (patience {adding.rnn_patience})"] if cell == "rnn" and adding.rnn_patience
                     else []) + ([f"a validation MSE below {adding.target_mse:g}"] if adding.target_mse else []))
                plans.append(ModelPlan(
                    key, lambda length=length, cell=cell, key=key: build_model(
                        "sequence_regressor", input_shape=(length, 2), cell=cell, units=adding.units,
                        bidirectional=False, truncation=adding.truncation or None, name=key.replace("-", "_")),
                    [((length, 2), "float32")], adding.batch, steps(count, adding.batch, adding.max_epochs),
                    note=f"{count:,} training sequences x {adding.max_epochs} epochs at most"
                         f"{f', {stop} may end it sooner' if stop else ''}; gradient norms on 64 sequences every "
                         "50 steps and |dL/dx_t| on 256 come on top"))
    if "future_context" in typed.tasks:
        future_context = typed.future_context
        count = int(future_context.examples * train_share)
        length = future_context.sequence_length
        for cell in future_context.cells:
            for direction in DIRECTIONS:
                key = _job("future_context", cell, direction, "")["key"]
                plans.append(ModelPlan(
                    key, lambda cell=cell, direction=direction, key=key: build_model(
                        "sequence_tagger", vocabulary_size=future_context.vocabulary + 1, num_classes=2,
                        sequence_length=length, cell=cell, units=future_context.units,
                        bidirectional=direction == "bi", name=key.replace("-", "_")),
                    [((length,), "int32")], future_context.batch,
                    steps(count, future_context.batch, future_context.max_epochs),
                    note=f"{count:,} training sequences x {future_context.max_epochs} epochs, no early stopping"))
    if "sentiment" in typed.tasks:
        sentiment, data, train = typed.sentiment, typed.data, typed.train
        count = training_examples(data, examples)
        known = "" if count else f" (the example count of {data.dataset} is not registered: steps unknown)"
        stopping = stopping_note(train)
        for cell in sentiment.cells:
            for direction in DIRECTIONS:
                key = _job("sentiment", cell, direction, "")["key"]
                plans.append(ModelPlan(
                    key, lambda cell=cell, direction=direction, key=key: build_model(
                        "text_classifier", vocabulary_size=sentiment.max_tokens, num_classes=2,
                        sequence_length=sentiment.sequence_length, cell=cell, units=sentiment.units,
                        bidirectional=direction == "bi", embedding_dim=sentiment.embedding_dim,
                        dropout_rate=sentiment.dropout_rate, name=key.replace("-", "_")),
                    [((sentiment.sequence_length,), "int64")], train.batch_size,
                    steps(count, train.batch_size, train.epochs),
                    note=f"{count:,} training reviews of {data.dataset} x {train.epochs} epochs{stopping}{known}; "
                         f"vocabulary: max_tokens={sentiment.max_tokens} (the tokenizer adapted on the training "
                         "split may hold fewer); the TF-IDF baseline (scikit-learn) is not timed"))
    return plans


# --- compare and register -----------------------------------------------------------------


@step_of(FAMILY)
def compare(step: StepContext) -> dict[str, Any]:
    """On the parent run: the results table, test MSE against T per cell with the
    constant baseline (adding problem) and, at the longest T, the simple RNN's MSE over
    the worse gated cell's (C15) and the gradient reaching each time step, accuracy per
    cell and direction (tagging with the causal bound, C16; sentiment with the TF-IDF
    baseline)."""
    from pipelines import plots

    typed = step.config
    results = step.mapped("train", "no trained model: check the tasks param")
    metrics: dict[str, float] = {}
    figures: dict[str, Any] = {}
    adding = [r for r in results if r["task"] == "adding"]
    if adding:
        series = {}
        for cell in sorted({r["cell"] for r in adding}):
            rows = sorted((r for r in adding if r["cell"] == cell), key=lambda r: r["length"])
            series[_cell_label(cell)] = ([r["length"] for r in rows], [r["metrics"]["test_mse"] for r in rows])
            metrics.update({f"adding_{cell}_t{r['length']}_mse": r["metrics"]["test_mse"] for r in rows})
        lengths = sorted({r["length"] for r in adding})
        series["constant prediction"] = (lengths, [np.mean([r["metrics"]["baseline_mse"] for r in adding
                                                            if r["length"] == t]) for t in lengths])
        figures["plots/mse_vs_length.png"] = plots.lines(
            series, "Adding problem: test MSE against sequence length", "sequence length T", "test MSE", log_y=True)
        longest = [r for r in adding if r["length"] == max(lengths)]
        metrics.update(longest_rnn_over_gated(longest))
        curves = {}
        for r in longest:
            for stage, norms in _through_time(r["run_id"]).items():
                curves[f"{_cell_label(r['cell'])}, {stage}"] = (range(1, len(norms) + 1), norms)
        figures["plots/gradient_through_time.png"] = curves and plots.lines(
            curves, f"Gradient of the loss reaching each time step (T={max(lengths)})",
            "time step t (the marked values sit in either half)", "|dL/dx_t|", log_y=True)
    for task in ("future_context", "sentiment"):
        rows = [r for r in results if r["task"] == task]
        if rows:
            reference = ("causal_bound", "best without the future") if task == "future_context" else \
                ("tfidf_test_accuracy", "TF-IDF + logistic regression")
            bars = {r["name"].removeprefix(f"{task} "): r["metrics"]["test_accuracy"] for r in rows}
            metrics.update({f"{r['key'].replace('-', '_')}_accuracy": r["metrics"]["test_accuracy"] for r in rows})
            metrics[f"{task}_{reference[0]}"] = rows[0]["metrics"][reference[0]]
            figures[f"plots/{task}_accuracy.png"] = plots.bars(
                bars, f"{task.replace('_', ' ')}: test accuracy", "test accuracy",
                reference=(rows[0]["metrics"][reference[0]], reference[1]))
    return step.report(metrics, name="sequences", figures=figures, text=format_table(typed, results),
                            data={"results": [{k: r[k] for k in ("task", "cell", "direction", "length", "name",
                                                                 "run_id", "metrics")} for r in results]})


def longest_rnn_over_gated(longest: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """C15's metric from the adding-problem results at the longest length: the simple
    RNN's test MSE over the worse (larger) of the LSTM's and the GRU's, with that length
    (nothing unless all three cells ran there)."""
    mse = {r["cell"]: r["metrics"]["test_mse"] for r in longest}
    if not {"rnn", "lstm", "gru"} <= mse.keys():
        return {}
    return {"adding_longest_rnn_over_gated_mse": mse["rnn"] / max(mse["lstm"], mse["gru"], 1e-12),
            "adding_longest_length": float(max(r["length"] for r in longest))}


def format_table(typed: Any, results: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"# Sequences ({typed.profile})", "", "| model | task | result | baseline | params | s |",
             "|---|---|---|---|---|---|"]
    for r in results:
        m = r["metrics"]
        if r["task"] == "adding":
            result, baseline = f"test MSE {m['test_mse']:.4f}", f"constant {m['baseline_mse']:.4f}"
        elif r["task"] == "future_context":
            result, baseline = f"accuracy {m['test_accuracy']:.4f}", f"causal bound {m['causal_bound']:.4f}"
        else:
            result, baseline = f"accuracy {m['test_accuracy']:.4f}", f"TF-IDF {m['tfidf_test_accuracy']:.4f}"
        lines.append(f"| {r['name']} | {r['task']} | {result} | {baseline} | {m.get('params', 0):,.0f} | "
                     f"{m.get('train_seconds', 0):.0f} |")
    return "\n".join(lines) + "\n"


@step_of(FAMILY)
def register(step: StepContext) -> dict[str, Any]:
    """Register each task's best model as ``nnzoo-sequences-<task>``: the lowest test MSE
    at the longest length (adding), the highest test accuracy (tagging, sentiment; the
    sentiment model takes raw strings)."""
    results = [r for r in step.get("train") or [] if r and r.get("model_uri")]
    adding = [r for r in results if r["task"] == "adding"]
    candidates = {"adding": [r for r in adding if r["length"] == max(a["length"] for a in adding)],
                  **{task: [r for r in results if r["task"] == task] for task in ("future_context", "sentiment")}}
    decisions = {task: step.register_best(task, rows, "test_mse" if task == "adding" else "test_accuracy",
                                          higher_is_better=task != "adding") for task, rows in candidates.items()}
    return {"versions": {task: decision for task, decision in decisions.items() if decision}}


def _cell_label(cell: str) -> str:
    return {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}[cell]


def _through_time(run_id: str) -> dict[str, list[float]]:
    """The run's ``|dL/dx_t|`` curves: ``initialisation`` (absent for a resumed run) and ``trained``."""
    recorded = tracking.load_json(run_id, "gradients/through_time.json") or {}  # absent: left out of the plot
    return {stage: recorded[stage] for stage in ("initialisation", "trained") if stage in recorded}
