"""The ``nnzoo`` console script, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines import cli
from tests.conftest import REPO_ROOT, VENV_BIN, new_store

NNZOO = str(VENV_BIN / "nnzoo")


def nnzoo(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([NNZOO, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path):
    return new_store(tmp_path / "store").env()


@pytest.mark.slow
def test_run_smoke_prints_a_json_summary_of_runs_that_exist_in_mlflow(tmp_path):
    store = new_store(tmp_path / "store")
    result = nnzoo("run", "classifiers", "--profile", "smoke", env=store.env())
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {"family", "profile", "status", "runs", "metrics"}
    assert (summary["family"], summary["profile"], summary["status"]) == ("classifiers", "smoke", "FINISHED")
    assert set(summary["runs"]) == set(summary["metrics"]) == {"mlp", "cnn"}
    client = store.client()
    for model, run_id in summary["runs"].items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["nnzoo.model"] == model
        assert run.data.metrics["test_accuracy"] == summary["metrics"][model]["test_accuracy"]
        assert 0.0 <= summary["metrics"][model]["test_accuracy"] <= 1.0
        assert client.get_model_version_by_alias(f"nnzoo-classifiers-{model}", "champion").run_id == run_id
    assert (store.home / "data" / "mnist_subset").is_dir()


@pytest.mark.parametrize("args, named", [
    (["run", "classifiers", "--profile", "bogus"], "'bogus'"),
    (["run", "classifiers", "--profile", "smoke", "--param", "epochs=0"], "train.epochs=0"),
    (["run", "classifiers", "--profile", "smoke", "--param", "nope=1"], "'nope'"),
    (["run", "classifiers", "--profile", "smoke", "--param", "epochs=abc"], "train.epochs='abc'"),
    (["run", "classifiers", "--profile", "smoke", "--param", "epochs"], "'epochs'"),
    (["run", "nosuchfamily", "--profile", "smoke"], "'nosuchfamily'"),
    (["run", "all", "--profile", "bogus"], "'bogus'"),
    (["run", "all", "--profile", "smoke", "--param", "nope=1"], "'nope'"),
    (["run", "all", "--profile", "smoke", "--param", "train.epochs=0"], "train.epochs=0"),
    (["run", "all", "--profile", "smoke", "--param", "epochs=2"], "unsupervised: parameter 'epochs' is ambiguous"),
])
def test_bad_values_exit_2_with_one_line_naming_the_value(args, named, env):
    result = nnzoo(*args, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nnzoo: error: ")
    assert named in lines[0]
    assert result.stdout == ""


def test_a_value_a_step_refuses_fails_the_run_with_one_line_and_the_json(env):
    """A value the config cannot judge alone (here: the canvas against the largest
    digit) fails the step that finds it: one line naming it, no traceback, the JSON."""
    result = nnzoo("run", "fcn_deconv", "--profile", "smoke", "--param", "canvas_height=30", env=env, timeout=180)
    assert result.returncode == 1, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("nnzoo: error: canvas 30x") and "smaller than the largest digit" in last
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["status"], summary["step"]) == ("FAILED", "prepare_data")
    assert summary["error"].startswith("BadValueError: canvas 30x")


def test_list_shows_the_families_and_profiles(env):
    result = nnzoo("list", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "classifiers" in result.stdout
    assert "prepare_data -> train -> evaluate -> register" in result.stdout
    assert "smoke, quick, full" in result.stdout


def test_list_verbose_shows_the_datasets(env):
    result = nnzoo("list", "-v", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in ("mnist_subset", "digits", "mnist", "fashion_mnist"):
        assert f"  {name} " in result.stdout


def test_module_entry_point_matches_the_console_script(env):
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "list"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "classifiers" in result.stdout


def test_validation_happens_before_any_work_is_done(tmp_path, monkeypatch, capsys):
    store = new_store(tmp_path / "store").activate(monkeypatch)
    assert cli.main(["run", "classifiers", "--profile", "smoke", "--param", "batch_size=0"]) == 2
    assert "train.batch_size=0" in capsys.readouterr().err
    assert not store.home.exists()


def test_run_all_gives_each_family_the_params_it_knows():
    from pipelines.families import all_families

    everyone = list(all_families())
    params = {"train.epochs": "3", "mlp.hidden_units": "8", "rbm.layers": "16"}
    assert cli._params_for("classifiers", params, everyone) == {"train.epochs": "3", "mlp.hidden_units": "8"}
    assert cli._params_for("unsupervised", params, everyone) == {"train.epochs": "3", "rbm.layers": "16"}


def test_list_prints_each_familys_steps_from_its_declaration(env):
    from pipelines.families import all_families

    result = nnzoo("list", "-v", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    for family in all_families().values():
        assert f"DAG {family.dag_id}, stages: {' -> '.join(family.stages)}" in result.stdout
    assert "train x 2 (model = mlp, cnn) [training]: Train" in result.stdout
    assert "finetune mapped over the jobs of plan_finetuning" in result.stdout



def test_the_cli_imports_no_family_and_offers_the_commands_families_declare():
    import ast

    tree = ast.parse((REPO_ROOT / "pipelines" / "cli.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not [name for name in imported if name and name.startswith(("pipelines.stages", "pipelines.configs"))]
    from pipelines.families import get_family

    (stylize,) = get_family("style_transfer").commands
    parser = cli.build_parser()
    args = parser.parse_args(["stylize", "photo.png", "--out", "styled.png", "--max-side", "512"])
    assert (args.image, args.out, args.max_side, args.model) == ("photo.png", "styled.png", 512, None)
    assert args.func == stylize.run and stylize.target == "pipelines.stages.style_transfer:stylize_command"
