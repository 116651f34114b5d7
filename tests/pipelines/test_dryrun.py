"""``nnzoo run FAMILY --dry-run``: datasets resolved, models built and costed, a step
timed, and missing data named with how to fetch it; nothing trained, nothing tracked."""

from __future__ import annotations

import json

import pytest

from pipelines.dryrun import dry_run, render
from pipelines.families import all_families, get_family


def test_dry_run_of_the_full_classifiers_names_the_missing_dataset_and_estimates_the_time(tmp_path, monkeypatch):
    from models import build_model

    monkeypatch.delenv("NNZOO_TFDS_DOWNLOAD", raising=False)
    family = get_family("classifiers")
    config = family.config("full", {"data.data_dir": str(tmp_path / "tfds")})
    result = dry_run(family, config, say=lambda line: None)
    (mnist,) = result["datasets"]
    assert mnist["name"] == "mnist" and not mnist["prepared"] and mnist["download_bytes"] > 10_000_000
    assert result["missing"] == ["mnist"]
    assert "tfds build mnist --data_dir DIR" in result["error"] and "NNZOO_TFDS_DOWNLOAD=1" in result["error"]
    rows = {row["name"]: row for row in result["models"]}
    assert set(rows) == {"mlp", "cnn"}
    expected = build_model("cnn", input_shape=(28, 28, 1), num_classes=10,
                           **{k: tuple(v) if isinstance(v, list) else v for k, v in config.cnn.model_dump().items()})
    assert rows["cnn"]["params"] == expected.count_params()
    train_images = int(70000 * (1 - 0.1 - 0.15))
    assert rows["cnn"]["steps"] == -(-train_images // 128) * 30
    assert rows["cnn"]["step_seconds"] > 0 and rows["cnn"]["estimated_seconds"] == pytest.approx(
        rows["cnn"]["step_seconds"] * rows["cnn"]["steps"])
    assert rows["cnn"]["activation_bytes_per_batch"] == 128 * rows["cnn"]["activation_bytes_per_example"]
    assert result["timed_in"] == "float32"  # no GPU here: float16 on a CPU would time an emulation
    assert result["switches"] == {"mixed_precision": True, "jit_compile": False, "distribute": "mirrored",
                                  "steps_per_execution": 1}
    text = render(result)
    assert "NOT prepared" in text and "training estimate on this device" in text
    json.dumps(result)  # what the command prints last


@pytest.mark.parametrize("name", sorted(all_families()))
def test_every_family_plans_its_trainings_for_a_dry_run(name):
    family = get_family(name)
    result = dry_run(family, family.config("smoke"), time_steps=False, say=lambda line: None)
    assert result["models"], name
    for row in result["models"]:
        assert row["params"] > 0 and row["steps"] > 0 and row["batch_size"] > 0, row
    assert "step_seconds" not in result["models"][0]


def test_the_cli_dry_run_trains_nothing_and_fails_naming_what_is_missing(store, capsys, monkeypatch):
    from pipelines.cli import main

    monkeypatch.delenv("NNZOO_TFDS_DOWNLOAD", raising=False)
    status = main(["run", "classifiers", "--profile", "full", "--dry-run", "--no-timing",
                   "--param", f"data.data_dir={store.home / 'tfds'}"])
    out, err = capsys.readouterr()
    assert status == 1
    assert "nnzoo: error: dataset mnist (tfds mnist" in err and "is not prepared in" in err
    assert json.loads(out.strip().splitlines()[-1])["family"] == "classifiers"
    assert not store.client().search_experiments(filter_string="name LIKE 'nnzoo-%'")
