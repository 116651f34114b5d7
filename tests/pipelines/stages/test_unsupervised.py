"""The unsupervised family's stages: one smoke run of the declared pipeline, in-process
as ``nnzoo run`` runs it (with a DAG-style run key), into a temporary MLflow store,
inspected from many angles; what is in force while each kind of training fits; the
pure helpers on synthetic inputs; and the failure paths that end the parent run FAILED.

Everything that trains is marked ``slow``; ``-m "not slow"`` keeps the helpers and the
refusals."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from models.rbm import chain_disagreement
from pipelines import kit, tracking
from pipelines import train as trainer
from pipelines.config import to_dict
from pipelines.configs.unsupervised import FAMILY, INITS, MAX_RBM_LAYERS
from pipelines.data.prepared import stratified_subset
from pipelines.data.source_images import nudge_digits
from pipelines.kit import TAG_CACHE_HIT, TAG_EVALUATED_ON, TAG_MODEL_URI
from pipelines.runner import run_pipeline, stage_function, step_inputs
from pipelines.stages import unsupervised
from pipelines.stages.unsupervised.dbn import visible
from pipelines.stages.unsupervised.report import fewest_labels_gain
from tests.conftest import new_store
from tests.pipelines.stages.full_mock import assert_full_mock_run

EXPERIMENT = FAMILY.experiment_name
RUN_KEY = "zoo_unsupervised/test-run"
SMOKE = to_dict(FAMILY.config("smoke"))
LAYERS = SMOKE["rbm"]["layers"]
FRACTIONS = SMOKE["finetune"]["label_fractions"]
SEEDS = SMOKE["finetune"]["seeds"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The declared pipeline once, every step in-process in declaration order (same
    inputs and run key as the DAG's tasks). The chained RBM layer tasks are recorded on
    the way, since the pipeline's outputs keep only the last one's."""
    shared = new_store(tmp_path_factory.mktemp("unsupervised"))
    config = SMOKE
    pretrain = unsupervised.pretrain_rbm_layer
    layer_tasks: list[dict] = []

    def recorded_pretrain(config, inputs):
        out = pretrain(config, inputs)
        layer_tasks.append({"layer": inputs["layer"], "below": inputs.get("pretrain_rbm_layer"), "out": out})
        return out

    with pytest.MonkeyPatch.context() as patch:
        shared.activate(patch)
        # The runner looks each stage up by name on the family's package when it calls it.
        patch.setattr(unsupervised, "pretrain_rbm_layer", recorded_pretrain)
        out = run_pipeline(FAMILY, config, run_key=RUN_KEY)
    data = out["prepare_data"]
    register = FAMILY.pipeline.step("register")
    return {"store": shared, "config": config, "out": out, "data": data, "parent": data["parent_run_id"],
            "autoencoder": out["train_autoencoder"], "ae_metrics": out["evaluate_autoencoder"]["metrics"],
            "layer_tasks": layer_tasks, "stack": out["pretrain_rbm_layer"]["stack"],
            "features": out["evaluate_rbm_features"], "jobs": out["plan_finetuning"], "results": out["finetune"],
            "comparison": out["compare"], "versions": out["register"]["versions"], "finished": out["finish"],
            "register_inputs": step_inputs(register, data, RUN_KEY, {name: out[name] for name in register.needs})}


@pytest.fixture
def client(smoke, monkeypatch):
    smoke["store"].activate(monkeypatch)
    return smoke["store"].client()


def _experiment_id(client) -> str:
    return client.get_experiment_by_name(EXPERIMENT).experiment_id


def _pipeline_runs(client) -> list:
    """Every run the smoke pipeline created: its run keys all start with RUN_KEY."""
    return client.search_runs([_experiment_id(client)], f"tags.`{tracking.TAG_RUN_KEY}` LIKE '{RUN_KEY}/%'",
                              max_results=1000)


def _layer_run_id(smoke, layer: int) -> str:
    return smoke["stack"][layer - 1]["run_id"]


def _artifacts(client, run_id: str, folder: str | None = None) -> set[str]:
    return {item.path for item in client.list_artifacts(run_id, folder)}


def _assert_png(client, run_id: str, path: str) -> None:
    with open(client.download_artifacts(run_id, path), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n", path


def _assert_logged_model_of(client, run_id: str, model_uri: str) -> None:
    """The model is an MLflow logged model (models:/m-...) whose source is ``run_id``."""
    assert model_uri.startswith("models:/m-"), model_uri
    logged = client.get_logged_model(model_uri.removeprefix("models:/"))
    assert logged.source_run_id == run_id
    assert logged.name == "model"


# --- the smoke run -----------------------------------------------------------------


def test_nnzoo_run_hands_the_family_and_its_config_to_run_pipeline(monkeypatch):
    """``nnzoo run`` has no runner of its own: it calls :func:`run_pipeline` with the
    family's declaration, the profile's config and a DAG-style run key."""
    from pipelines import cli, runner

    class Stop(Exception):
        pass

    calls = []

    def recorded(family, config, run_key=None):
        calls.append((family, config, run_key))
        raise Stop

    monkeypatch.setattr(runner, "run_pipeline", recorded)
    # The runner's failure is reported (exit 1, the JSON line), not raised.
    assert cli.main(["run", "unsupervised", "--profile", "smoke"]) == 1
    [(family, config, run_key)] = calls
    assert family is FAMILY
    assert config == SMOKE
    assert run_key.startswith(f"{FAMILY.dag_id}/cli-")


def test_every_declared_step_is_a_stage_of_the_family_package():
    assert FAMILY.stages[0] == "prepare_data" and FAMILY.stages[-1] == "finish"
    for step in FAMILY.stages[1:-1]:
        assert stage_function(FAMILY, step).__wrapped__ is getattr(unsupervised, step), step
    assert FAMILY.pipeline.leaves() == ("register",)


@pytest.mark.slow
def test_the_runner_walks_the_declared_steps_and_returns_one_output_per_step(smoke):
    assert tuple(smoke["out"]) == FAMILY.stages
    assert smoke["jobs"] == unsupervised.plan_finetuning(SMOKE, {"pretrain_rbm_layer": {"stack": smoke["stack"]}})
    # The mapped step gives one output per job, in the jobs' order.
    assert [(r["fraction"], r["init"], r["seed"]) for r in smoke["results"]] == [
        (job["fraction"], job["init"], job["seed"]) for job in smoke["jobs"]]


@pytest.mark.slow
def test_one_parent_run_finished_with_every_training_nested_under_it(client, smoke):
    experiment_id = _experiment_id(client)
    parents = client.search_runs([experiment_id], f"tags.`{tracking.TAG_STAGE}` = 'pipeline' and "
                                 f"tags.`{tracking.TAG_RUN_KEY}` = '{RUN_KEY}/pipeline'")
    assert [run.info.run_id for run in parents] == [smoke["parent"]]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert smoke["finished"] == {"parent_run_id": smoke["parent"], "status": "FINISHED"}
    assert tracking.TAG_FAILURE not in parent.data.tags
    assert "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.tags[tracking.TAG_RUN_KEY] == f"{RUN_KEY}/pipeline"
    assert parent.data.params["dataset.fingerprint"] == smoke["data"]["fingerprint"]

    children = [run for run in _pipeline_runs(client) if run.info.run_id != smoke["parent"]]
    assert {run.data.tags.get("mlflow.parentRunId") for run in children} == {smoke["parent"]}
    names = sorted(run.info.run_name for run in children)
    finetunes = sorted(f"finetune-{init}-{fraction:g}-seed{seed}" for fraction in FRACTIONS
                       for init in INITS for seed in range(SEEDS))
    assert len(finetunes) == len(FRACTIONS) * 2 * SEEDS
    expected = sorted(["autoencoder", "rbm-features-digits", *[f"rbm-layer-{n}" for n in range(1, len(LAYERS) + 1)],
                       *finetunes])
    assert names == expected
    # The parent's nested runs are exactly these (nothing nested without a run key).
    nested = tracking.child_runs(experiment_id, smoke["parent"])
    assert sorted(run.info.run_id for run in nested) == sorted(run.info.run_id for run in children)
    for run in children:
        assert run.info.status == "FINISHED", run.info.run_name
        assert run.data.tags[tracking.TAG_FAMILY] == "unsupervised"
        assert run.data.tags[tracking.TAG_PROFILE] == "smoke"


@pytest.mark.slow
def test_finetune_runs_carry_init_fraction_and_seed_tags(client, smoke):
    finetunes = [run for run in _pipeline_runs(client) if run.data.tags.get(tracking.TAG_STAGE) == "finetune"]
    combos = sorted((float(run.data.tags["nnzoo.label_fraction"]), run.data.tags["nnzoo.init"],
                     int(run.data.tags["nnzoo.seed"])) for run in finetunes)
    assert combos == sorted((float(f), init, seed) for f in FRACTIONS for init in INITS
                            for seed in range(SEEDS))
    assert len(smoke["jobs"]) == len(combos)
    largest = max(FRACTIONS)
    train_size = smoke["data"]["sizes"]["train"]
    for run in finetunes:
        fraction, init = float(run.data.tags["nnzoo.label_fraction"]), run.data.tags["nnzoo.init"]
        metrics = run.data.metrics
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        assert math.isfinite(metrics["test_loss"]) and metrics["test_loss"] > 0
        assert 1 <= metrics["labelled_examples"] <= train_size
        if fraction == 1.0:
            assert metrics["labelled_examples"] == train_size
        # Only the DBN runs on the largest share keep their model (register picks from them).
        keeps_model = init == "dbn" and fraction == largest
        assert bool(run.data.tags[TAG_MODEL_URI]) is keeps_model, run.info.run_name
        assert "plots/training_curves.png" in _artifacts(client, run.info.run_id, "plots")
        assert [step for step, _ in tracking.metric_history(run.info.run_id, "loss")] == list(
            range(1, int(run.data.params["epochs"]) + 1))


@pytest.mark.slow
def test_autoencoder_run_logs_its_error_the_pca_baseline_plots_and_model(client, smoke):
    run_id = smoke["autoencoder"]["run_id"]
    run = client.get_run(run_id)
    metrics = run.data.metrics
    for key in ("test_mse", "pca_test_mse"):
        assert math.isfinite(metrics[key]) and metrics[key] > 0, key
        assert metrics[key] == pytest.approx(smoke["ae_metrics"][key])
    assert metrics["mse_ratio_vs_pca"] == pytest.approx(metrics["test_mse"] / metrics["pca_test_mse"])
    assert metrics["flops"] > 0 and metrics["params"] == int(run.data.params["parameters"])
    assert run.data.params["pca.components"] == str(SMOKE["autoencoder"]["bottleneck"])
    assert run.data.tags[TAG_EVALUATED_ON] == smoke["data"]["fingerprint"]
    assert [step for step, _ in tracking.metric_history(run_id, "loss")] == list(
        range(1, SMOKE["train"]["epochs"] + 1))
    plots = _artifacts(client, run_id, "plots")
    assert {"plots/reconstructions.png", "plots/code_map.png", "plots/training_curves.png"} <= plots
    for path in ("plots/reconstructions.png", "plots/code_map.png"):
        _assert_png(client, run_id, path)
    assert run.data.tags[TAG_MODEL_URI] == smoke["autoencoder"]["model_uri"]
    _assert_logged_model_of(client, run_id, smoke["autoencoder"]["model_uri"])


@pytest.mark.slow
def test_logged_autoencoder_and_pca_reproduce_the_logged_errors(client, smoke):
    from sklearn.decomposition import PCA

    from pipelines.data.prepared import load_prepared

    data = load_prepared(smoke["data"]["data_uri"])
    test_x, _ = data.split("test")
    train_x, _ = data.split("train")
    pixels = test_x.reshape(len(test_x), -1).astype(np.float32) / 255.0
    model = tracking.load_keras_model(smoke["autoencoder"]["model_uri"])
    reconstructed = np.asarray(model.predict(pixels.reshape(test_x.shape), verbose=0)).reshape(pixels.shape)
    assert float(np.mean((reconstructed - pixels) ** 2)) == pytest.approx(smoke["ae_metrics"]["test_mse"], rel=1e-4)
    train_pixels = train_x.reshape(len(train_x), -1).astype(np.float32) / 255.0
    pca = PCA(n_components=SMOKE["autoencoder"]["bottleneck"], random_state=0).fit(train_pixels)
    pca_pixels = np.clip(pca.inverse_transform(pca.transform(pixels)), 0, 1)
    assert float(np.mean((pca_pixels - pixels) ** 2)) == pytest.approx(smoke["ae_metrics"]["pca_test_mse"],
                                                                         rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("layer", range(1, len(LAYERS) + 1))
def test_rbm_layer_runs_log_per_epoch_curves_filters_and_samples(client, smoke, layer):
    run_id = _layer_run_id(smoke, layer)
    run = client.get_run(run_id)
    assert run.info.run_name == f"rbm-layer-{layer}"
    assert run.data.tags[tracking.TAG_STAGE] == "pretrain"
    assert run.data.tags[tracking.TAG_RUN_KEY] == f"{RUN_KEY}/rbm_layer_{layer}"
    epochs = SMOKE["rbm"]["epochs"]
    for key in ("loss", "pseudo_likelihood", "val_loss", "val_pseudo_likelihood"):
        history = tracking.metric_history(run_id, key)
        assert [step for step, _ in history] == list(range(1, epochs + 1)), key
        assert all(math.isfinite(value) for _, value in history), key
    assert all(value <= 0 for _, value in tracking.metric_history(run_id, "pseudo_likelihood"))
    plots = _artifacts(client, run_id, "plots")
    assert "plots/filters.png" in plots
    assert ("plots/gibbs_samples.png" in plots) is (layer == 1)
    # C5's measure, once per column of the Gibbs figure (the Gibbs step as the metric's step)
    disagreement = tracking.metric_history(run_id, "gibbs_chain_disagreement")
    if layer == 1:
        assert [step for step, _ in disagreement] == [1, SMOKE["rbm"]["gibbs_steps"]]
        assert all(0.0 <= value <= 1.0 for _, value in disagreement)
        assert run.data.metrics["gibbs_chain_disagreement"] == disagreement[-1][1]
    else:
        assert not disagreement
    _assert_png(client, run_id, "plots/filters.png")
    if layer == 1:
        _assert_png(client, run_id, "plots/gibbs_samples.png")
    sizes = [784, *LAYERS]
    params = run.data.params
    assert (int(params["layer"]), int(params["n_visible"]), int(params["n_hidden"])) == (
        layer, sizes[layer - 1], sizes[layer])
    # the RBM's forward pass (p(h|v)) counted by its own flops_per_example
    n_visible, n_hidden = sizes[layer - 1], sizes[layer]
    assert run.data.metrics["flops"] == 2 * n_visible * n_hidden + 2 * n_hidden
    assert run.data.metrics["params"] == int(params["parameters"]) >= n_visible * n_hidden + n_visible + n_hidden


@pytest.mark.slow
@pytest.mark.parametrize("layer", range(1, len(LAYERS) + 1))
def test_rbm_layer_models_load_back_as_rbms_of_the_right_shape(client, smoke, layer):
    import models.rbm  # noqa: F401 - registers the RBM class for deserialisation
    from models.rbm import RBM

    ref = smoke["stack"][layer - 1]
    assert ref["layer"] == layer
    _assert_logged_model_of(client, ref["run_id"], ref["model_uri"])
    rbm = tracking.load_keras_model(ref["model_uri"])
    assert isinstance(rbm, RBM)
    sizes = [784, *LAYERS]
    assert (rbm.n_visible, rbm.n_hidden) == (sizes[layer - 1], sizes[layer])
    hidden = np.asarray(rbm(np.full((3, rbm.n_visible), 0.5, dtype=np.float32)))
    assert hidden.shape == (3, rbm.n_hidden)
    assert ((hidden >= 0) & (hidden <= 1)).all()


@pytest.mark.slow
def test_the_stack_grows_one_layer_per_task_and_extra_layer_tasks_pass_it_on(smoke):
    tasks = smoke["layer_tasks"]
    assert [task["layer"] for task in tasks] == list(range(1, MAX_RBM_LAYERS + 1))
    lengths = [len(task["out"]["stack"]) for task in tasks]
    assert lengths == [min(n, len(LAYERS)) for n in range(1, MAX_RBM_LAYERS + 1)]
    # Chained: each layer task gets the previous one's output (nothing for the first).
    assert tasks[0]["below"] is None
    for previous, task in zip(tasks, tasks[1:], strict=False):
        assert task["below"] == previous["out"], task["layer"]
    assert tasks[-1]["out"]["stack"] == tasks[len(LAYERS) - 1]["out"]["stack"] == smoke["stack"]
    assert smoke["out"]["pretrain_rbm_layer"] == tasks[-1]["out"]
    assert [ref["layer"] for ref in smoke["stack"]] == list(range(1, len(LAYERS) + 1))


@pytest.mark.slow
def test_parent_carries_the_comparison_table_plot_and_metrics(client, smoke):
    parent = smoke["parent"]
    assert {"comparison/finetune.json", "comparison/finetune.md"} <= _artifacts(client, parent, "comparison")
    assert "plots/accuracy_vs_labels.png" in _artifacts(client, parent, "plots")
    _assert_png(client, parent, "plots/accuracy_vs_labels.png")
    table = Path(client.download_artifacts(parent, "comparison/finetune.md")).read_text()
    assert table.startswith("# DBN vs random init")
    assert "| labels | init | seeds | mean | std | min | max |" in table
    assert table == f"# DBN vs random init, test accuracy by share of labels (smoke)\n\n{smoke['comparison']['table']}\n"
    metrics = client.get_run(parent).data.metrics
    for fraction in FRACTIONS:
        for name in ("dbn", "random", "gain"):
            assert f"finetune_{name}_{fraction:g}_mean" in metrics
            assert f"finetune_{name}_{fraction:g}_std" in metrics
    for key in ("test_mse", "pca_test_mse"):
        assert metrics[f"autoencoder_{key}"] == pytest.approx(smoke["ae_metrics"][key])
    for key in ("rbm_logistic_accuracy", "raw_logistic_accuracy"):
        assert metrics[key] == pytest.approx(smoke["features"]["metrics"][key])
    # C6 reads the gain at the fewest labels
    fewest = min(FRACTIONS)
    assert metrics["finetune_fewest_labels_fraction"] == fewest
    assert metrics["finetune_gain_fewest_labels_mean"] == metrics[f"finetune_gain_{fewest:g}_mean"]
    assert metrics["finetune_gain_fewest_labels_std"] == metrics[f"finetune_gain_{fewest:g}_std"]


@pytest.mark.slow
def test_comparison_rows_are_recomputed_from_the_finetune_runs(client, smoke):
    parent = smoke["parent"]
    logged = json.loads(Path(client.download_artifacts(parent, "comparison/finetune.json")).read_text())
    finetunes = [run for run in _pipeline_runs(client) if run.data.tags.get(tracking.TAG_STAGE) == "finetune"]
    accuracy = {(float(run.data.tags["nnzoo.label_fraction"]), run.data.tags["nnzoo.init"],
                 int(run.data.tags["nnzoo.seed"])): run.data.metrics["test_accuracy"] for run in finetunes}
    assert sorted(r["run_id"] for r in logged["results"]) == sorted(run.info.run_id for run in finetunes)
    rows = {(row["fraction"], row["init"]): row for row in logged["rows"]}
    assert len(rows) == len(FRACTIONS) * 3
    parent_metrics = client.get_run(parent).data.metrics
    for fraction in FRACTIONS:
        by_init = {init: [accuracy[(fraction, init, seed)] for seed in range(SEEDS)] for init in INITS}
        for init, values in by_init.items():
            row = rows[(fraction, init)]
            assert row["seeds"] == SEEDS
            assert row["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
            assert row["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
            assert (row["min"], row["max"]) == (pytest.approx(min(values)), pytest.approx(max(values)))
            assert parent_metrics[f"finetune_{init}_{fraction:g}_mean"] == pytest.approx(row["mean"])
            assert parent_metrics[f"finetune_{init}_{fraction:g}_std"] == pytest.approx(row["std"])
        gains = [a - b for a, b in zip(by_init["dbn"], by_init["random"], strict=True)]
        paired = rows[(fraction, "dbn - random (paired)")]
        assert paired["mean"] == pytest.approx(statistics.fmean(gains), abs=1e-12)
        assert paired["dbn_wins"] == sum(g > 0 for g in gains)
        assert parent_metrics[f"finetune_gain_{fraction:g}_mean"] == pytest.approx(paired["mean"])


@pytest.mark.slow
def test_rbm_features_run_logs_both_accuracies(client, smoke):
    run_id = smoke["features"]["run_id"]
    run = client.get_run(run_id)
    assert run.info.run_name == "rbm-features-digits"
    assert run.data.tags["mlflow.parentRunId"] == smoke["parent"]
    assert run.data.tags[tracking.TAG_RUN_KEY] == f"{RUN_KEY}/rbm_features"
    metrics = run.data.metrics
    for key in ("rbm_logistic_accuracy", "raw_logistic_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["raw_logistic_accuracy"] > 0.5  # logistic regression on raw digit pixels is far above chance
    # 1797 digits x 5 (nudged), 20 % held out
    assert (int(run.data.params["train_size"]), int(run.data.params["test_size"])) == (7188, 1797)
    assert "plots/filters.png" in _artifacts(client, run_id, "plots")
    assert "evaluation/rbm_logistic_report.txt" in _artifacts(client, run_id, "evaluation")
    # A training like the others: per-epoch curves, its time, the whole config.
    assert metrics["train_seconds"] > 0 and "rbm_seconds" not in metrics
    assert [step for step, _ in tracking.metric_history(run_id, "loss")] == list(
        range(1, SMOKE["rbm_features"]["epochs"] + 1))
    assert run.data.params["rbm_features.hidden_units"] == str(SMOKE["rbm_features"]["hidden_units"])
    assert run.data.params["protocol"].startswith("sklearn plot_rbm_logistic_classification")


@pytest.mark.slow
def test_each_model_is_registered_once_and_the_autoencoder_prefers_lower_error(client, smoke):
    expected_runs = {
        "autoencoder": smoke["autoencoder"]["run_id"],
        **{f"rbm-layer-{n}": _layer_run_id(smoke, n) for n in range(1, len(LAYERS) + 1)},
    }
    largest = max(FRACTIONS)
    candidates = [r for r in smoke["results"] if r["init"] == "dbn" and r["fraction"] == largest]
    expected_runs["dbn"] = max(candidates, key=lambda r: (r["test_accuracy"], -r["seed"]))["run_id"]
    assert set(smoke["versions"]) == set(expected_runs)
    for model, run_id in expected_runs.items():
        name = f"nnzoo-unsupervised-{model}"
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == 1, name
        assert versions[0].run_id == run_id, name
        champion = client.get_model_version_by_alias(name, tracking.CHAMPION)
        assert str(champion.version) == str(smoke["versions"][model]["version"])
    autoencoder = client.get_model_version_by_alias("nnzoo-unsupervised-autoencoder", tracking.CHAMPION)
    assert float(autoencoder.tags["nnzoo.test_mse"]) == pytest.approx(smoke["ae_metrics"]["test_mse"])
    assert "nnzoo.test_accuracy" not in autoencoder.tags
    dbn = client.get_model_version_by_alias("nnzoo-unsupervised-dbn", tracking.CHAMPION)
    assert float(dbn.tags["nnzoo.test_accuracy"]) == pytest.approx(client.get_run(
        expected_runs["dbn"]).data.metrics["test_accuracy"])
    for layer in range(1, len(LAYERS) + 1):
        version = client.get_model_version_by_alias(f"nnzoo-unsupervised-rbm-layer-{layer}", tracking.CHAMPION)
        metric = client.get_run(_layer_run_id(smoke, layer)).data.metrics["val_pseudo_likelihood"]
        assert float(version.tags["nnzoo.val_pseudo_likelihood"]) == pytest.approx(metric)


@pytest.mark.slow
def test_registering_again_adds_no_version_and_promotes_by_each_metric_direction(client, smoke, monkeypatch):
    calls = {}
    promote = tracking.promote

    def spy(name, version, metric, value, **kwargs):
        calls[name] = (metric, kwargs["higher_is_better"])
        return promote(name, version, metric, value, **kwargs)

    monkeypatch.setattr(tracking, "promote", spy)
    again = unsupervised.register(smoke["config"], smoke["register_inputs"])
    for model, decision in smoke["versions"].items():
        assert again["versions"][model]["version"] == decision["version"], model
        assert len(client.search_model_versions(f"name = 'nnzoo-unsupervised-{model}'")) == 1, model
        assert again["versions"][model]["reason"] == "already champion"
    assert calls["nnzoo-unsupervised-autoencoder"] == ("test_mse", False)
    assert calls["nnzoo-unsupervised-dbn"] == ("test_accuracy", True)
    for layer in range(1, len(LAYERS) + 1):
        assert calls[f"nnzoo-unsupervised-rbm-layer-{layer}"] == ("val_pseudo_likelihood", True)


@pytest.mark.slow
def test_retried_stages_reuse_their_finished_runs(client, smoke):
    before = sorted(run.info.run_id for run in _pipeline_runs(client))
    config, data = smoke["config"], smoke["data"]
    keyed = {**data, "run_key": RUN_KEY}

    layer_1 = unsupervised.pretrain_rbm_layer(config, {**keyed, "layer": 1, "pretrain_rbm_layer": None})
    assert layer_1["stack"] == smoke["stack"][:1]
    layer_2 = unsupervised.pretrain_rbm_layer(config, {**keyed, "layer": 2, "pretrain_rbm_layer": layer_1})
    assert layer_2["stack"] == smoke["stack"][:2]
    autoencoder = unsupervised.train_autoencoder(config, keyed)
    # A reused run's output: the same run and model, and the metrics the run logged.
    assert {key: autoencoder[key] for key in ("model", "run_id", "model_uri", "cached")} == {
        key: smoke["autoencoder"][key] for key in ("model", "run_id", "model_uri", "cached")}
    assert autoencoder["cached"] is False
    assert {key: autoencoder["metrics"][key] for key in smoke["autoencoder"]["metrics"]} == pytest.approx(
        smoke["autoencoder"]["metrics"])
    evaluation = unsupervised.evaluate_autoencoder(config, {**keyed, "train_autoencoder": autoencoder})
    assert evaluation["metrics"] == pytest.approx(smoke["ae_metrics"])
    assert len(tracking.metric_history(autoencoder["run_id"], "test_mse")) == 1  # not evaluated twice
    job = smoke["jobs"][0]
    result = unsupervised.finetune(config, {**keyed, **job, "pretrain_rbm_layer": {"stack": smoke["stack"]}})
    assert result == next(r for r in smoke["results"] if (r["fraction"], r["init"], r["seed"]) == (
        job["fraction"], job["init"], job["seed"]))
    features = unsupervised.evaluate_rbm_features(config, keyed)
    assert features["run_id"] == smoke["features"]["run_id"]
    assert kit.prepare_data(FAMILY, config, {"run_key": RUN_KEY})["parent_run_id"] == smoke["parent"]

    assert sorted(run.info.run_id for run in _pipeline_runs(client)) == before
    assert client.get_run(smoke["parent"]).info.status == "FINISHED"
    for ref in smoke["stack"]:
        assert client.get_run(ref["run_id"]).info.status == "FINISHED"


# --- pure helpers and argument checks (no training) --------------------------------


def _labels() -> np.ndarray:
    sizes = [50, 61, 7, 120, 33, 1, 80, 44, 99, 10]  # uneven classes, one of them with a single example
    labels = np.repeat(np.arange(10), sizes)
    return np.random.default_rng(5).permutation(labels)


@pytest.mark.parametrize("fraction", [0.001, 0.1, 0.5, 1.0])
def test_stratified_subset_is_stratified_with_at_least_one_per_class(fraction):
    labels = _labels()
    chosen = stratified_subset(labels, fraction, seed=0)
    assert chosen.dtype.kind == "i"
    assert np.array_equal(chosen, np.unique(chosen))  # sorted, no repeats
    assert chosen.min() >= 0 and chosen.max() < len(labels)
    for label in range(10):
        available = int((labels == label).sum())
        picked = int((labels[chosen] == label).sum())
        assert picked == max(1, round(fraction * available)), (label, picked)
    if fraction == 1.0:
        assert np.array_equal(chosen, np.arange(len(labels)))


def test_stratified_subset_is_deterministic_per_seed_and_differs_across_seeds():
    labels = _labels()
    first = stratified_subset(labels, 0.1, seed=0)
    assert np.array_equal(first, stratified_subset(labels, 0.1, seed=0))
    others = [stratified_subset(labels, 0.1, seed=seed) for seed in (1, 2)]
    for other in others:
        assert len(other) == len(first)
        assert not np.array_equal(other, first)
    assert not np.array_equal(*others)


def test_nudge_digits_adds_four_one_pixel_shifts_with_zeros_coming_in():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 17, size=(7, 8, 8)).astype(np.float64)  # no zeros, so the fill shows
    labels = np.arange(7)
    original = images.copy()
    features, nudged_labels = nudge_digits(images, labels)
    assert features.shape == (35, 64)
    assert np.array_equal(nudged_labels, np.tile(labels, 5))

    def rolled(step: int, axis: int) -> np.ndarray:
        moved = np.roll(images, step, axis=axis)
        edge = [slice(None)] * 3
        edge[axis] = 0 if step == 1 else -1
        moved[tuple(edge)] = 0
        return moved

    copies = features.reshape(5, 7, 8, 8)
    assert np.array_equal(copies[0], images)
    # One copy per direction (down, left, right, up), each a whole block of the 7 images;
    # their order is checked against scikit-learn's below.
    shifts = [rolled(1, 1), rolled(-1, 2), rolled(1, 2), rolled(-1, 1)]
    matches = [[index for index, shifted in enumerate(shifts) if np.array_equal(copy, shifted)] for copy in copies[1:]]
    assert sorted(sum(matches, [])) == [0, 1, 2, 3], matches
    down = np.zeros_like(images)
    down[:, 1:, :] = images[:, :-1, :]
    assert np.array_equal(shifts[0], down)  # np.roll with the wrapped row zeroed is a plain shift
    assert (copies[1:] == 0).sum() == 4 * 7 * 8  # one zero row or column per shifted image
    assert np.array_equal(images, original)  # the input is left untouched


def _sklearn_nudge(images: np.ndarray) -> np.ndarray:
    """scikit-learn's plot_rbm_logistic_classification ``nudge_dataset``, verbatim in effect."""
    from scipy.ndimage import convolve

    direction_vectors = [
        [[0, 1, 0], [0, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [1, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 1], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 0], [0, 1, 0]],
    ]
    flat = images.reshape(len(images), -1)

    def shift(x, w):
        return convolve(x.reshape((8, 8)), mode="constant", weights=w).ravel()

    return np.concatenate([flat] + [np.apply_along_axis(shift, 1, flat, vector) for vector in direction_vectors])


def test_nudge_digits_makes_the_same_examples_as_scikit_learn():
    images = np.random.default_rng(1).integers(0, 17, size=(6, 8, 8)).astype(np.float64)
    ours, _ = nudge_digits(images, np.zeros(6, dtype=int))
    theirs = _sklearn_nudge(images)
    assert np.array_equal(np.unique(ours, axis=0), np.unique(theirs, axis=0))


def test_nudge_digits_orders_the_copies_as_scikit_learn_does():
    images = np.random.default_rng(1).integers(0, 17, size=(6, 8, 8)).astype(np.float64)
    ours, _ = nudge_digits(images, np.zeros(6, dtype=int))
    assert np.array_equal(ours, _sklearn_nudge(images))


def _result(fraction, init, seed, accuracy, labelled=10):
    return {"fraction": fraction, "init": init, "seed": seed, "test_accuracy": accuracy,
            "labelled_examples": labelled, "run_id": f"{init}-{fraction}-{seed}", "model_uri": ""}


def test_summarize_gives_mean_sample_std_range_and_a_paired_difference():
    dbn_01, random_01 = [0.5, 0.6, 0.75], [0.4, 0.65, 0.5]
    results = [_result(0.1, "dbn", s, a, 12) for s, a in enumerate(dbn_01)]
    results += [_result(0.1, "random", s, a, 12) for s, a in enumerate(random_01)]
    results += [_result(1.0, "dbn", 0, 0.9, 120), _result(1.0, "dbn", 1, 0.8, 120), _result(1.0, "random", 1, 0.85, 120)]
    rows = unsupervised.summarize(list(reversed(results)))  # the order of the results does not matter

    assert [(row["fraction"], row["init"]) for row in rows] == [
        (0.1, "dbn"), (0.1, "random"), (0.1, "dbn - random (paired)"),
        (1.0, "dbn"), (1.0, "random"), (1.0, "dbn - random (paired)")]
    for row, values in ((rows[0], dbn_01), (rows[1], random_01), (rows[3], [0.9, 0.8])):
        assert row["seeds"] == len(values)
        assert row["mean"] == pytest.approx(statistics.fmean(values))
        assert row["std"] == pytest.approx(statistics.stdev(values))  # ddof=1
        assert (row["min"], row["max"]) == (min(values), max(values))
    assert rows[0]["labelled_examples"] == 12 and rows[3]["labelled_examples"] == 120
    assert rows[4] == {"fraction": 1.0, "init": "random", "seeds": 1, "labelled_examples": 120, "mean": 0.85,
                       "std": 0.0, "min": 0.85, "max": 0.85}

    gains = [a - b for a, b in zip(dbn_01, random_01, strict=True)]  # +0.1, -0.05, +0.25
    paired = rows[2]
    assert paired["seeds"] == 3
    assert paired["mean"] == pytest.approx(statistics.fmean(gains))
    assert paired["std"] == pytest.approx(statistics.stdev(gains))
    assert (paired["min"], paired["max"]) == (pytest.approx(min(gains)), pytest.approx(max(gains)))
    assert paired["dbn_wins"] == 2
    assert "labelled_examples" not in paired
    # Only seeds run with both inits are paired: seed 1 at 100 %.
    assert rows[5]["seeds"] == 1
    assert rows[5]["mean"] == pytest.approx(0.8 - 0.85)
    assert rows[5]["std"] == 0.0 and rows[5]["dbn_wins"] == 0

    table = unsupervised.format_table(rows)
    assert "| 10% (12) | dbn | 3 | 0.6167 |" in table
    assert "DBN better in 2/3" in table
    assert "-0.0500" in table


def test_summarize_without_a_random_init_has_no_paired_row():
    rows = unsupervised.summarize([_result(0.5, "dbn", 0, 0.7), _result(0.5, "dbn", 1, 0.9)])
    assert [row["init"] for row in rows] == ["dbn"]
    assert rows[0]["std"] == pytest.approx(statistics.stdev([0.7, 0.9]))


def test_the_gain_at_the_fewest_labels_is_the_paired_row_of_the_smallest_share():
    results = [_result(fraction, init, seed, accuracy) for fraction, gains in ((0.5, (0.1, 0.3)), (0.05, (0.2, -0.1)))
               for seed, gain in enumerate(gains) for init, accuracy in (("dbn", 0.5 + gain), ("random", 0.5))]
    results.append(_result(0.01, "dbn", 0, 0.4))  # a share without a random-init run has no gain
    assert fewest_labels_gain(unsupervised.summarize(results)) == {
        "finetune_gain_fewest_labels_mean": pytest.approx(0.05), "finetune_gain_fewest_labels_std": pytest.approx(
            statistics.stdev([0.2, -0.1])), "finetune_fewest_labels_fraction": 0.05}
    assert fewest_labels_gain(unsupervised.summarize([_result(0.5, "dbn", 0, 0.7)])) == {}


def test_chain_disagreement_counts_pixels_two_chains_of_one_start_draw_differently():
    start = np.array([[0.0, 0.2, 0.9, 1.0]])
    assert chain_disagreement(np.repeat(start, 2, axis=0)) == 0.0  # both chains on one path
    first = [[0.0, 0.2, 0.9, 1.0], [0.5, 0.5, 0.5, 0.5]]
    second = [[0.9, 0.2, 0.1, 0.6], [0.5, 0.5, 0.5, 0.5]]
    # rows 2i and 2i + 1 are one start's pair: 2 of 4 pixels apart by more than 0.5, then none
    assert chain_disagreement(np.array([first[0], second[0], first[1], second[1]])) == pytest.approx(0.25)
    # noise around 0.5 (what an untrained RBM gives) is no disagreement, however it differs
    noise = 0.5 + np.random.default_rng(0).uniform(-0.2, 0.2, size=(10, 784))
    assert chain_disagreement(noise) == 0.0
    with pytest.raises(ValueError, match="pairs of chains"):
        chain_disagreement(np.zeros((3, 4)))


def _stack(layers: int) -> list[dict]:
    return [{"layer": n, "run_id": f"run-{n}", "model_uri": f"models:/m-{n}"} for n in range(1, layers + 1)]


def test_plan_finetuning_yields_every_fraction_init_and_seed():
    config = to_dict(FAMILY.config("smoke", {"finetune.label_fractions": "1.0,0.05,0.5", "finetune.seeds": 3}))
    jobs = unsupervised.plan_finetuning(config, {"pretrain_rbm_layer": {"stack": _stack(len(LAYERS))}})
    assert len(jobs) == 3 * 2 * 3
    assert jobs == [{"fraction": f, "init": init, "seed": seed} for f in (0.05, 0.5, 1.0)
                    for init in ("dbn", "random") for seed in range(3)]
    assert len(unsupervised.plan_finetuning(SMOKE, {"pretrain_rbm_layer": {"stack": _stack(len(LAYERS))}})) == len(
        FRACTIONS) * 2 * SEEDS


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_plan_finetuning_needs_exactly_the_configured_layers(layers):
    with pytest.raises(ValueError, match=rf"needs all {len(LAYERS)} pretrained RBM layers; got {layers}"):
        unsupervised.plan_finetuning(SMOKE, {"pretrain_rbm_layer": {"stack": _stack(layers)}})


def test_a_layer_beyond_the_configured_ones_passes_the_stack_on_without_a_run(store):
    stack = _stack(len(LAYERS))
    for layer in range(len(LAYERS) + 1, MAX_RBM_LAYERS + 1):
        # No data, no parent: nothing is read or opened for a layer that is not in this run.
        assert unsupervised.pretrain_rbm_layer(SMOKE, {"layer": layer, "pretrain_rbm_layer": {"stack": stack}}) == {
            "stack": stack}
    experiment = store.client().get_experiment_by_name(EXPERIMENT)
    assert experiment is None or not store.client().search_runs([experiment.experiment_id])


@pytest.mark.parametrize("layer, below", [(1, 1), (2, 0), (2, 2)])
def test_pretrain_rbm_layer_refuses_a_stack_of_the_wrong_length(store, layer, below):
    with pytest.raises(ValueError, match=rf"rbm layer {layer} needs the {layer - 1} layer\(s\) below it; got {below}"):
        unsupervised.pretrain_rbm_layer(SMOKE, {"layer": layer, "pretrain_rbm_layer": {"stack": _stack(below)},
                                                "data_uri": "file:///none"})


@pytest.mark.parametrize("changes, message", [
    ({"init": "bogus"}, r"init='bogus': expected one of dbn, random"),
    ({"fraction": 0}, r"fraction=0.0: expected a share in \(0, 1\]"),
    ({"fraction": 1.5}, r"fraction=1.5: expected a share in \(0, 1\]"),
    ({"fraction": -0.1}, r"fraction=-0.1"),
])
def test_finetune_refuses_bad_jobs_before_touching_data(store, changes, message):
    job = {"fraction": 0.1, "init": "dbn", "seed": 0, "pretrain_rbm_layer": {"stack": _stack(len(LAYERS))},
           "data_uri": "file:///none", "parent_run_id": "none", **changes}
    with pytest.raises(ValueError, match=message):
        unsupervised.finetune(SMOKE, job)


def test_compare_refuses_an_empty_result_list():
    with pytest.raises(ValueError, match="no fine-tuning results"):
        unsupervised.compare(SMOKE, {"parent_run_id": "p", "finetune": []})


def test_stages_that_nest_runs_need_the_parent_run():
    with pytest.raises(ValueError, match="run prepare_data first"):
        kit.finish(FAMILY, SMOKE, {"register": {"versions": {"autoencoder": {}}}})


# --- failure paths -----------------------------------------------------------------


def _parent(key: str) -> str:
    return tracking.start_run(EXPERIMENT, "unsupervised-smoke", run_key=key,
                              tags={tracking.TAG_STAGE: "pipeline"})


def test_finish_without_the_last_step_fails_the_parent_naming_the_failed_child(store):
    parent = _parent("zoo_unsupervised/failing/pipeline")
    with tracking.run(EXPERIMENT, "rbm-layer-1", parent_run_id=parent):
        pass  # finished children are not blamed
    with pytest.raises(RuntimeError, match="out of memory"):
        with tracking.run(EXPERIMENT, "finetune-dbn-0.1-seed0", parent_run_id=parent):
            raise RuntimeError("out of memory")

    # What Airflow hands finish when register did not run: its output is None.
    outcome = kit.finish(FAMILY, SMOKE, {"parent_run_id": parent, "register": None})

    reason = "finetune-dbn-0.1-seed0: RuntimeError: out of memory"
    assert outcome == {"parent_run_id": parent, "status": "FAILED", "reason": reason}
    run = store.client().get_run(parent)
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.TAG_FAILURE] == f"pipeline did not complete: {reason}"


def test_finish_names_every_failed_child_or_says_none_ran(store):
    parent = _parent("zoo_unsupervised/two-failures/pipeline")
    for name in ("autoencoder", "rbm-layer-2"):
        with pytest.raises(ValueError):
            with tracking.run(EXPERIMENT, name, parent_run_id=parent):
                raise ValueError(f"{name} broke")
    outcome = kit.finish(FAMILY, SMOKE, {"parent_run_id": parent})
    assert sorted(outcome["reason"].split("; ")) == ["autoencoder: ValueError: autoencoder broke",
                                                    "rbm-layer-2: ValueError: rbm-layer-2 broke"]

    lonely = _parent("zoo_unsupervised/no-children/pipeline")
    outcome = kit.finish(FAMILY, SMOKE, {"parent_run_id": lonely, "register": None})
    assert outcome["status"] == "FAILED"
    assert outcome["reason"] == "an upstream step failed before any run"
    assert store.client().get_run(lonely).info.status == "FAILED"

    explicit = _parent("zoo_unsupervised/explicit/pipeline")
    # A reason fails the parent even when the last step's output is there.
    outcome = kit.finish(FAMILY, SMOKE, {"parent_run_id": explicit, "reason": "KeyError: 'stack'",
                                            "register": {"versions": {}}})
    assert outcome["status"] == "FAILED"
    assert store.client().get_run(explicit).data.tags[tracking.TAG_FAILURE] == (
        "pipeline did not complete: KeyError: 'stack'")


def test_finish_names_a_child_left_running_by_a_killed_worker(store):
    parent = _parent("zoo_unsupervised/killed/pipeline")
    experiment_id = tracking.ensure_experiment(EXPERIMENT)
    # What a SIGKILLed task leaves behind: a nested run that nobody ended.
    child = tracking._create_run(experiment_id, "rbm-layer-1", {}, "zoo_unsupervised/killed/rbm_layer_1", parent)

    outcome = kit.finish(FAMILY, SMOKE, {"parent_run_id": parent})

    assert "rbm-layer-1" in outcome["reason"]
    assert store.client().get_run(child).info.status in ("FAILED", "KILLED")


def _all_run_ids(client) -> set[str]:
    return {run.info.run_id for run in client.search_runs([_experiment_id(client)], max_results=1000)}


@pytest.mark.slow
def test_runner_ends_the_parent_failed_and_reraises_when_a_stage_fails(client, smoke, monkeypatch):
    """A stage that raises inside :func:`run_pipeline`: the kit's finish ends the parent
    FAILED with the reason, then the error propagates. With ``cache`` on, every training
    before the failing compare is a cache hit on the smoke run's, so nothing is trained."""
    key = "zoo_unsupervised/compare-fails"
    experiment_id = _experiment_id(client)
    before = _all_run_ids(client)

    def broken_compare(config, inputs):
        raise RuntimeError("compare exploded")

    # The runner looks the stage up on the family's package when the step comes.
    monkeypatch.setattr(unsupervised, "compare", broken_compare)
    config = to_dict(FAMILY.config("smoke", {"cache": "true"}))
    with pytest.raises(RuntimeError, match="compare exploded"):
        run_pipeline(FAMILY, config, run_key=key)

    parents = client.search_runs([experiment_id], f"tags.`{tracking.TAG_STAGE}` = 'pipeline' and "
                                 f"tags.`{tracking.TAG_RUN_KEY}` = '{key}/pipeline'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FAILED"
    assert parent.data.tags[tracking.TAG_FAILURE] == "pipeline did not complete: RuntimeError: compare exploded"
    # Nothing was trained again: the new parent is the only new run, with nothing under it.
    assert _all_run_ids(client) - before == {parent.info.run_id}
    assert not tracking.child_runs(experiment_id, parent.info.run_id)
    # The smoke run's parent and registrations are untouched.
    assert client.get_run(smoke["parent"]).info.status == "FINISHED"
    for model in smoke["versions"]:
        assert len(client.search_model_versions(f"name = 'nnzoo-unsupervised-{model}'")) == 1


@pytest.mark.slow
def test_a_cached_rerun_trains_nothing_and_tags_every_reused_run_with_its_run_key(client, smoke):
    """``cache=true`` covers every training of the pipeline: the autoencoder, the RBM
    layers, the RBM-features check and the fine-tunings. A second run (another run key)
    reuses all of the smoke run's and tags each with the key of the task that reused it."""
    key = "zoo_unsupervised/cached-rerun"
    experiment_id = _experiment_id(client)
    before = _all_run_ids(client)
    trainings = [run for run in _pipeline_runs(client) if run.info.run_id != smoke["parent"]]
    assert {run.data.tags[tracking.TAG_STAGE] for run in trainings} == {"train", "pretrain", "evaluate", "finetune"}

    out = run_pipeline(FAMILY, to_dict(FAMILY.config("smoke", {"cache": "true"})), run_key=key)

    parent = out["prepare_data"]["parent_run_id"]
    assert parent != smoke["parent"]
    assert out["finish"] == {"parent_run_id": parent, "status": "FINISHED"}
    assert _all_run_ids(client) - before == {parent}
    assert not tracking.child_runs(experiment_id, parent)
    assert out["train_autoencoder"]["cached"] is True
    assert out["train_autoencoder"]["run_id"] == smoke["autoencoder"]["run_id"]
    assert out["pretrain_rbm_layer"] == smoke["out"]["pretrain_rbm_layer"]
    assert out["evaluate_rbm_features"]["run_id"] == smoke["features"]["run_id"]
    assert [(r["run_id"], r["model_uri"]) for r in out["finetune"]] == [
        (r["run_id"], r["model_uri"]) for r in smoke["results"]]
    assert [r["test_accuracy"] for r in out["finetune"]] == pytest.approx([r["test_accuracy"] for r in smoke["results"]])
    for run in trainings:
        tags = client.get_run(run.info.run_id).data.tags
        # The reusing task's run key: the smoke task's key under the new pipeline run.
        assert tags[TAG_CACHE_HIT] == tags[tracking.TAG_RUN_KEY].replace(RUN_KEY, key, 1), run.info.run_name
    # The same runs register as the same versions: nothing is added.
    assert {model: d["version"] for model, d in out["register"]["versions"].items()} == {
        model: d["version"] for model, d in smoke["versions"].items()}
    for model in smoke["versions"]:
        assert len(client.search_model_versions(f"name = 'nnzoo-unsupervised-{model}'")) == 1


def test_a_parent_finished_by_a_rerun_no_longer_carries_the_old_failure(store):
    key = "zoo_unsupervised/cleared/pipeline"
    parent = _parent(key)
    assert kit.finish(FAMILY, SMOKE, {"parent_run_id": parent})["status"] == "FAILED"
    # The DAG run is cleared and runs again: prepare_data gets the same parent, and this time it succeeds.
    assert _parent(key) == parent
    assert kit.finish(FAMILY, SMOKE, {"parent_run_id": parent, "register": {
        "versions": {"autoencoder": {"version": "1"}}}})["status"] == "FINISHED"
    run = store.client().get_run(parent)
    assert run.info.status == "FINISHED"
    assert tracking.TAG_FAILURE not in run.data.tags


# --- what is in force while a training fits ----------------------------------------


def _record_fits(monkeypatch) -> list[dict]:
    """Replace :func:`pipelines.train.fit` by one that notes, when a training fits, the
    dtype policies and distribution strategy in force and the training data, then fits."""
    import keras
    import tensorflow as tf

    fits: list[dict] = []
    real_fit = trainer.fit

    def recording_fit(model, train_data, val_data, train_config, **kwargs):
        strategy = tf.distribute.get_strategy()
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        fits.append({
            "model": model.name, "global_policy": keras.mixed_precision.global_policy().name,
            "model_policy": model.dtype_policy.name, "dense_compute_dtypes": [layer.compute_dtype for layer in dense],
            "has_strategy": tf.distribute.has_strategy(), "strategy": type(strategy).__name__,
            "weights_in_strategy": bool(model.weights) and all(
                strategy.extended.variable_created_in_scope(weight.value) for weight in model.weights),
            "train_data": train_data})
        return real_fit(model, train_data, val_data, train_config, **kwargs)

    monkeypatch.setattr(trainer, "fit", recording_fit)
    return fits


SWITCHES = {"train.mixed_precision": True, "train.distribute": "mirrored"}


@pytest.mark.slow
def test_finetune_runs_with_mixed_precision_and_a_mirrored_strategy(client, smoke, monkeypatch):
    """The device switches of ``train`` are in force while the fine-tuning fits: float16
    compute under the mixed policy, in a MirroredStrategy scope that also built the model
    (two scopes would be two different MirroredStrategy objects)."""
    import keras

    fits = _record_fits(monkeypatch)
    config = to_dict(FAMILY.config("smoke", {**SWITCHES, "finetune.steps": 4}))
    # Its own parent, so the smoke pipeline's set of nested runs stays as the other tests expect.
    parent = tracking.start_run(EXPERIMENT, "switches")
    try:
        result = unsupervised.finetune(config, {**smoke["data"], "parent_run_id": parent, "run_key": None,
                                                "pretrain_rbm_layer": {"stack": smoke["stack"]},
                                                "fraction": 1.0, "init": "dbn", "seed": 0})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    [fit] = fits
    assert fit["global_policy"] == "mixed_float16"
    assert fit["model_policy"] == "mixed_float16"
    # The hidden layers compute in float16; the softmax on top stays float32.
    assert fit["dense_compute_dtypes"] == ["float16"] * len(LAYERS) + ["float32"]
    assert fit["has_strategy"] is True
    assert fit["strategy"] == "MirroredStrategy"
    assert fit["weights_in_strategy"] is True
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["train.mixed_precision"] == "True"
    assert run.data.params["train.distribute"] == "mirrored"
    assert 0.0 <= result["test_accuracy"] <= 1.0


@pytest.mark.slow
def test_rbm_trainings_stay_float32_on_one_device_whatever_the_switches(client, smoke, monkeypatch):
    """RBM layers and the RBM-features check train in float32 without a distribution
    strategy even with ``train.mixed_precision=true train.distribute=mirrored``."""
    import keras

    fits = _record_fits(monkeypatch)
    config = to_dict(FAMILY.config("smoke", {**SWITCHES, "rbm.epochs": 1}))
    parent = tracking.start_run(EXPERIMENT, "rbm-switches")
    inputs = {**smoke["data"], "parent_run_id": parent, "run_key": None}
    try:
        layer = unsupervised.pretrain_rbm_layer(config, {**inputs, "layer": 1, "pretrain_rbm_layer": None})
        features = unsupervised.evaluate_rbm_features(config, inputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert [fit["model"] for fit in fits] == ["rbm_layer_1", "rbm_digits"]
    for fit in fits:
        assert fit["global_policy"] == "float32", fit["model"]
        assert fit["model_policy"] == "float32", fit["model"]
        assert fit["has_strategy"] is False, fit["model"]
        assert fit["strategy"] != "MirroredStrategy", fit["model"]
    for run_id in (layer["stack"][0]["run_id"], features["run_id"]):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.params["train.mixed_precision"] == "True"
        assert run.data.params["train.distribute"] == "mirrored"


def test_rbm_input_is_grey_levels_as_probabilities_or_binarised_at_one_half():
    images = np.array([[[[0], [127]], [[128], [255]]]], dtype=np.uint8)  # one 2x2 image
    probabilities = visible(images, "probabilities")
    binary = visible(images, "binary")
    assert probabilities.shape == binary.shape == (1, 4)
    assert probabilities.dtype == binary.dtype == np.float32
    assert np.allclose(probabilities, [[0.0, 127 / 255, 128 / 255, 1.0]])
    assert binary.tolist() == [[0.0, 0.0, 1.0, 1.0]]


def _sorted_rows(values: np.ndarray) -> np.ndarray:
    return values[np.lexsort(values.T[::-1])]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["binary", "probabilities"])
def test_rbm_layer_1_trains_on_binarised_pixels_only_when_asked(client, smoke, monkeypatch, mode):
    """What the first RBM is fitted on: the training images' pixels, each exactly 0 or 1
    with ``rbm.visible=binary`` (thresholded at 0.5), grey levels by default."""
    from pipelines.data.prepared import load_prepared

    fits = _record_fits(monkeypatch)
    overrides = {"rbm.epochs": 1, **({"rbm.visible": "binary"} if mode == "binary" else {})}
    config = to_dict(FAMILY.config("smoke", overrides))
    parent = tracking.start_run(EXPERIMENT, f"visible-{mode}")
    out = unsupervised.pretrain_rbm_layer(config, {**smoke["data"], "parent_run_id": parent, "run_key": None,
                                                   "layer": 1, "pretrain_rbm_layer": None})
    [fit] = fits
    seen = np.concatenate([np.asarray(batch) for batch in fit["train_data"]])
    train_x, _ = load_prepared(smoke["data"]["data_uri"]).split("train")
    grey = train_x.reshape(len(train_x), -1).astype(np.float32) / np.float32(255)
    expected = (grey > 0.5).astype(np.float32) if mode == "binary" else grey
    assert seen.shape == expected.shape
    assert np.array_equal(_sorted_rows(seen), _sorted_rows(expected))  # the same examples, shuffled
    zero_or_one = np.isin(seen, (0.0, 1.0))
    if mode == "binary":
        assert zero_or_one.all()
    else:
        assert not zero_or_one.all()
        assert ((seen > 0) & (seen < 1)).any()
    run = client.get_run(out["stack"][0]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["rbm.visible"] == mode
    assert run.data.tags["mlflow.parentRunId"] == parent


def test_the_result_contract_holds_on_the_smoke_run(smoke):
    from tests.claims_check import assert_result_contract

    assert_result_contract(FAMILY, smoke["store"], RUN_KEY)


@pytest.mark.slow
def test_full_profile_runs_end_to_end_on_mock_data_with_its_switches_in_force(store, full_mock_fits):
    assert_full_mock_run(FAMILY, store, full_mock_fits)
