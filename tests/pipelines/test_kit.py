"""The kit's step kinds, on their own (the families' tests cover them in use), and the
rule that keeps them the only way: stage modules make no direct MLflow calls, write no
tag literals and download no artifacts by hand."""

from __future__ import annotations

import re

import pytest

from pipelines import kit, tracking
from pipelines.families import get_family
from tests.conftest import REPO_ROOT, new_store

FAMILY = get_family("classifiers")

FORBIDDEN = {
    r"tracking\.client\(\)|\bMlflowClient\b": "a direct MLflow client call",
    r"^\s*(import mlflow|from mlflow)": "MLflow used directly",
    r"download_artifacts|\btempfile\b": "an artifact downloaded by hand",
    r"f?[\"']nnzoo\.": "a tag literal (use tracking.tag or a TAG_ constant)",
}


def stage_modules() -> list:
    return sorted((REPO_ROOT / "pipelines" / "stages").rglob("*.py"))


@pytest.mark.parametrize("path", stage_modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_stage_modules_go_through_the_kit(path):
    found = [f"{path.name}:{number}: {why}: {line.strip()}"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             for pattern, why in FORBIDDEN.items() if re.search(pattern, line)]
    assert found == []


def test_the_rule_finds_what_it_forbids(tmp_path):
    lines = ['    client = tracking.client()', 'import mlflow', '    tags = {"nnzoo.task": 1}',
             '    path = client.download_artifacts(run_id, "a.json", folder)']
    assert all(any(re.search(pattern, line) for pattern in FORBIDDEN) for line in lines)
    assert not any(re.search(pattern, 'tags = {tracking.tag("task"): 1}') for pattern in FORBIDDEN)


@pytest.fixture
def trained(tmp_path, monkeypatch):
    new_store(tmp_path / "store").activate(monkeypatch)
    with tracking.run(FAMILY.experiment_name, "model") as run:
        run.log_metrics({"loss": 0.5})
    return run.run_id


def test_an_evaluation_is_logged_into_the_training_run_once_per_data(trained):
    calls = []

    def measure(run):
        calls.append(run.run_id)
        tracking.log_dict(run.run_id, {"seen": True}, "evaluation/seen.json")
        return {"test_accuracy": 0.9, "test_loss": 0.3}

    first = kit.evaluate_into(FAMILY, trained, "data-a", ("test_accuracy",), measure)
    again = kit.evaluate_into(FAMILY, trained, "data-a", ("test_accuracy",), measure)
    assert first == {"test_accuracy": 0.9, "test_loss": 0.3} and again == {"test_accuracy": 0.9}
    assert calls == [trained]  # the second call reused the logged metrics
    assert kit.evaluate_into(FAMILY, trained, "data-a", ("test_accuracy",), measure, reuse_all=True) == {
        "loss": 0.5, "test_accuracy": 0.9, "test_loss": 0.3}
    kit.evaluate_into(FAMILY, trained, "data-b", ("test_accuracy",), measure)
    assert calls == [trained, trained]  # other data: evaluated again
    run = tracking.get_run(trained)
    assert run.info.status == "FINISHED" and run.data.tags[kit.TAG_EVALUATED_ON] == "data-b"
    assert tracking.load_json(trained, "evaluation/seen.json") == {"seen": True}
    assert tracking.load_json(trained, "evaluation/nothing.json") is None


def test_a_failed_evaluation_ends_the_run_failed_with_the_reason(trained):
    def measure(run):
        raise RuntimeError("the test split is empty")

    with pytest.raises(RuntimeError):
        kit.evaluate_into(FAMILY, trained, "data-a", ("test_accuracy",), measure)
    run = tracking.get_run(trained)
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.TAG_FAILURE] == "RuntimeError: the test split is empty"
    assert kit.TAG_EVALUATED_ON not in run.data.tags


def test_labels_become_nnzoo_tags():
    typed = FAMILY.config("smoke")
    tags = kit.run_tags(FAMILY, typed, "cnn", "train", task="adding", **{"mlflow.note.content": "x"})
    assert tags["nnzoo.task"] == "adding" and tags["mlflow.note.content"] == "x"
    assert tags[tracking.TAG_MODEL] == "cnn" and tags[tracking.TAG_PROFILE] == "smoke"


def test_a_side_run_is_nested_carries_its_provenance_and_is_reused_by_a_retry(tmp_path, monkeypatch):
    new_store(tmp_path / "store").activate(monkeypatch)
    family = get_family("cnn_depth")  # a family with a parent run
    typed = family.config("smoke")
    with tracking.run(family.experiment_name, "pipeline") as parent:
        pass
    inputs = {"run_key": "dag/run-1", "parent_run_id": parent.run_id}
    calls = []

    def count(run):
        calls.append(run.run_id)
        return {"parameter_ratio": 11}

    first = kit.side_run(family, typed, inputs, "talk_nets", count, stage="count")
    again = kit.side_run(family, typed, inputs, "talk_nets", count, stage="count")
    assert first == again == {"run_id": calls[0], "metrics": {"parameter_ratio": 11.0}} and len(calls) == 1
    run = tracking.get_run(first["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id and run.data.tags[tracking.TAG_MODEL] == "talk_nets"
    assert {"code.git_commit", "device", "profile"} <= set(run.data.params)

    def broken(run):
        raise ValueError("no such layer")

    with pytest.raises(ValueError):
        kit.side_run(family, typed, {**inputs, "run_key": "dag/run-2"}, "talk_nets", broken)
    failed = tracking.find_run(tracking.ensure_experiment(family.experiment_name), "dag/run-2/talk_nets")
    assert failed.info.status == "FAILED" and "no such layer" in failed.data.tags[tracking.TAG_FAILURE]


def test_a_parent_report_puts_metrics_table_data_and_figures_on_the_parent_run(tmp_path, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    new_store(tmp_path / "store").activate(monkeypatch)
    family = get_family("cnn_depth")
    with tracking.run(family.experiment_name, "pipeline") as parent:
        pass
    inputs = {"run_key": "dag/run-1", "parent_run_id": parent.run_id}
    for _attempt in range(2):  # a retried step writes the same keys and files again
        out = kit.report_on_parent(inputs, {"ratio": 11}, name="depth", text="| a |\n|---|\n| 1 |",
                                   data={"rows": [1]}, figures={"plots/curve.png": plt.figure(),
                                                                "plots/nothing.png": None})
    assert out == {"metrics": {"ratio": 11.0}}
    run = tracking.get_run(parent.run_id)
    assert run.data.metrics == {"ratio": 11.0}
    assert tracking.load_json(parent.run_id, "comparison/depth.json") == {"rows": [1]}
    files = {item.path for folder in ("plots", "comparison")
             for item in tracking.client().list_artifacts(parent.run_id, folder)}
    assert files == {"plots/curve.png", "comparison/depth.json", "comparison/depth.md"}
    assert "[nnzoo] | 1 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="parent_run_id"):
        kit.report_on_parent({"run_key": "dag/run-1"}, {"ratio": 1})


def test_a_step_function_gets_a_context_and_is_still_called_with_config_and_inputs():
    from pipelines.config import ConfigError, to_dict

    seen = {}

    @kit.step_of(FAMILY)
    def look(step):
        seen.update(profile=step.config.profile, train=step["train"], model=step.get("model", "none"))
        with pytest.raises(KeyError, match="'evaluate' is not among this step's inputs .*declare it"):
            step["evaluate"]
        assert step.mapped("jobs", "check the jobs knob") == [{"job": 1}]
        with pytest.raises(ValueError, match="train_variant produced nothing: check the variants"):
            step.mapped("train_variant", "check the variants")
        return {"looked": True}

    assert look.__name__ == "look"
    assert look(to_dict(FAMILY.config("smoke")), {"train": {"run_id": "r1"}, "jobs": [{"job": 1}, None]}) == {"looked": True}
    assert seen == {"profile": "smoke", "train": {"run_id": "r1"}, "model": "none"}
    with pytest.raises(ConfigError, match="profile"):
        look({"profile": "huge"}, {"train": {}})


def test_arrays_are_batched_by_the_kit_and_give_the_logged_example():
    import numpy as np
    import tensorflow as tf

    from pipelines.config import TrainConfig

    images = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2, 1) * 6
    labels = np.arange(10) % 2
    spec = kit.Training("net", build=lambda: None, arrays=((images, labels), (images[:0], labels[:0])))
    train, val = kit._batched(spec, TrainConfig(batch_size=4, seed=1))
    x, y = next(iter(train))
    assert x.shape == (4, 2, 2, 1) and x.dtype == tf.float32 and float(tf.reduce_max(x)) <= 1.0
    assert sorted(np.concatenate([b[1].numpy() for b in train])) == sorted(labels)  # each example once a pass
    assert val is None  # an empty validation split gives none
    np.testing.assert_allclose(kit._example(spec), images[:4] / 255.0, rtol=1e-6)
    raw = kit.Training("net", build=lambda: None, arrays=(images, images), normalize=False,
                       fit={"steps_per_epoch": 3})
    endless, val = kit._batched(raw, TrainConfig(batch_size=4))
    assert endless.cardinality() == tf.data.INFINITE_CARDINALITY and val is not None
    assert kit._example(raw).dtype == np.uint8
    assert kit._example(kit.Training("net", build=lambda: None, arrays=(((images, labels), labels), None))
                        )[1].tolist() == labels[:4].tolist()  # a model of two inputs: four of each


def test_register_best_registers_the_best_candidate_in_the_direction_asked(monkeypatch):
    from pipelines.config import to_dict

    registered = []
    monkeypatch.setattr(kit, "register_and_promote", lambda family, model, run_id, uri, metric, value, **options:
                        registered.append((model, run_id, value, options["higher_is_better"])) or {"version": "1"})
    step = kit.StepContext(FAMILY, to_dict(FAMILY.config("smoke")), {})
    runs = [{"run_id": f"r{n}", "model_uri": f"runs:/r{n}/model", "metrics": {"mse": mse}}
            for n, mse in enumerate((0.3, 0.1, 0.2, 0.1))]
    assert step.register_best("adding", runs, "mse", higher_is_better=False) == {"version": "1", "run_id": "r1"}
    assert step.register_best("tagging", runs, "mse")["run_id"] == "r0"
    assert step.register_best("nothing", [], "mse") is None
    assert registered == [("adding", "r1", 0.1, False), ("tagging", "r0", 0.3, True)]
