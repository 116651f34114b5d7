"""The style-transfer family's stages: one smoke run of the declared pipeline with every
network connection refused and an empty Keras cache, inspected from several angles; the
loss-network choice; ``nnzoo stylize``; and the image reader on bad input."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from pipelines.configs.style_transfer import CONTENT_LAYERS, FAMILY
from pipelines.data import source_weights
from pipelines.data.source_style import (
    MAX_SIDE,
    MIN_SIDE,
    ImageError,
    generate_style,
    load_content_photos,
    load_style,
    read_image,
)
from pipelines.stages import style_transfer
from tests.conftest import smoke_run
from tests.pipelines.stages.full_mock import assert_full_mock_run

RUN_KEY = "zoo_style_transfer/test-run"
SMOKE = FAMILY.config("smoke")


class NetworkTouched(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise NetworkTouched(f"network access attempted: {args[:2]}")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("style_transfer")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(root / "empty_keras_home"))
        patch.delenv(source_weights.DOWNLOAD_VARIABLE, raising=False)
        patch.setattr(socket.socket, "connect", _refuse)
        patch.setattr(socket, "create_connection", _refuse)
        import keras

        patch.setattr(keras.utils, "get_file", _refuse)
        return smoke_run(FAMILY, root, RUN_KEY)


@pytest.fixture
def client(smoke, monkeypatch):
    smoke["store"].activate(monkeypatch)
    return smoke["store"].client()


def _download(client, run_id: str, path: str, folder: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(folder)))


@pytest.mark.slow
def test_every_step_ran_in_a_finished_run_and_the_random_loss_net_is_recorded(client, smoke):
    out = smoke["out"]
    assert set(out) >= {"prepare_images", "stylize_iterative", "train_fast_stylizer", "stylize_fast",
                        "compare_speed"}
    parent = client.get_run(smoke["parent"])
    assert parent.info.status == "FINISHED"
    # no cached ImageNet weights and no network: auto fell back to the seeded random VGG19, and says so
    assert out["prepare_images"]["loss_net"] == "random"
    assert parent.data.params["loss_net_used"] == "random" and parent.data.tags["nnzoo.loss_net"] == "random"
    assert "not in the Keras cache" in parent.data.tags["nnzoo.loss_net_reason"]
    assert parent.data.params["style.source"] == "generated:mosaic"
    for run_id in (out["stylize_iterative"]["run_id"], out["train_fast_stylizer"]["run_id"]):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["loss_net_used"] == "random" and run.data.tags["nnzoo.loss_net"] == "random"
        assert run.data.tags["mlflow.parentRunId"] == smoke["parent"]


@pytest.mark.slow
def test_iterative_run_logs_three_losses_per_step_snapshots_and_the_content_photos_own_style_loss(client, smoke):
    run_id = smoke["out"]["stylize_iterative"]["run_id"]
    metrics = client.get_run(run_id).data.metrics
    steps = SMOKE.iterative.iterations
    for name in ("content_loss", "style_loss", "tv_loss", "total_loss"):
        history = client.get_metric_history(run_id, name)
        assert sorted(m.step for m in history) == list(range(1, steps + 1)), name
    totals = [m.value for m in sorted(client.get_metric_history(run_id, "total_loss"), key=lambda m: m.step)]
    assert metrics["final_total_loss"] < totals[0]
    assert metrics["total_loss_drop"] == pytest.approx(1 - metrics["final_total_loss"] / totals[0])
    assert metrics["content_photo_style_loss"] > 0
    assert metrics["style_loss_vs_content_photo"] == pytest.approx(
        metrics["final_style_loss"] / metrics["content_photo_style_loss"])
    every = SMOKE.iterative.snapshot_every
    snapshots = {item.path for item in client.list_artifacts(run_id, "snapshots")}
    assert snapshots == {f"snapshots/step_{n:05d}.png" for n in [0, *range(every, steps + 1, every)]}
    images = {item.path for item in client.list_artifacts(run_id, "images")}
    assert {"images/result.png", "images/side_by_side.png"} <= images


@pytest.mark.slow
def test_both_methods_log_how_much_of_the_photos_edges_they_keep(client, smoke):
    out = smoke["out"]
    params = client.get_run(smoke["parent"]).data.params
    assert params["content_layer_used"] == out["prepare_images"]["content_layer"] == CONTENT_LAYERS["random"]
    for run_id in (out["stylize_iterative"]["run_id"], out["stylize_fast"]["run_id"]):
        assert -1.0 <= client.get_run(run_id).data.metrics["content_edge_similarity"] <= 1.0
    assert out["stylize_fast"]["metrics"]["content_edge_similarity"] == pytest.approx(
        client.get_run(out["stylize_fast"]["run_id"]).data.metrics["content_edge_similarity"])
    fast_training = client.get_run(out["train_fast_stylizer"]["run_id"]).data.params
    assert float(fast_training["training_content_weight"]) == 50.0  # the random net's (FastConfig.content_weight_for)


@pytest.mark.slow
def test_registered_stylizer_is_the_transformer_alone_loads_in_safe_mode_and_takes_untrained_sizes(
        client, smoke, tmp_path):
    import keras

    from models.style import stylise

    fast = smoke["out"]["stylize_fast"]
    assert fast["version"]["version"] == "1"
    version = client.get_model_version("nnzoo-style_transfer-stylizer", "1")
    assert version.run_id == fast["run_id"]
    folder = _download(client, fast["run_id"], "model", tmp_path)
    files = list(folder.rglob("*.keras"))
    assert len(files) == 1
    model = keras.saving.load_model(files[0], safe_mode=True)
    assert model.name == "style_transformer"
    assert not any("block" in layer.name for layer in model.layers)  # no loss network inside
    crop = SMOKE.fast.crop_size
    for height, width in ((crop + 5, crop + 19), (2 * crop + 1, crop + 3)):
        image = np.random.default_rng(0).random((1, height, width, 3), dtype=np.float32)
        assert stylise(model, image).shape == (1, height, width, 3)
    metrics = client.get_run(fast["run_id"]).data.metrics
    assert metrics["sizes_stylised"] == len(SMOKE.fast.stylize_sizes) >= 2
    assert metrics["test_perceptual_loss"] > 0 and metrics["flops"] > 0
    with open(_download(client, fast["run_id"], "stylised/sizes.json", tmp_path)) as handle:
        sizes = json.load(handle)
    assert sizes["trained_on_crops"] == crop
    for label, shape in sizes["sizes"].items():
        height, width = map(int, label.split("x"))
        assert shape == [height, width, 3] and (height, width) != (crop, crop)


@pytest.mark.slow
def test_compare_speed_logs_seconds_and_ratios_on_the_parent_with_the_results_side_by_side(client, smoke):
    metrics = client.get_run(smoke["parent"]).data.metrics
    per_step, forward = metrics["iterative_seconds_per_step"], metrics["fast_seconds_per_image"]
    assert per_step > 0 and forward > 0
    assert metrics["speedup_100_steps"] == pytest.approx(100 * per_step / forward)
    assert metrics["speedup_500_steps"] == pytest.approx(500 * per_step / forward)
    assert "loss_matched_speedup" in metrics or "loss_matched_speedup_lower_bound" in metrics
    artifacts = {item.path for item in client.list_artifacts(smoke["parent"], "images")}
    assert {"images/style.png", "images/side_by_side.png"} <= artifacts


@pytest.mark.slow
def test_nnzoo_stylize_writes_the_stylised_image_of_a_users_file(client, smoke, tmp_path, capsys):
    from PIL import Image

    from pipelines.cli import main

    gray = tmp_path / "gray photo.png"
    Image.fromarray((np.arange(50 * 70) % 255).reshape(50, 70).astype(np.uint8), mode="L").save(gray)
    out = tmp_path / "out" / "styled.jpg"
    assert main(["stylize", str(gray), "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == "models:/nnzoo-style_transfer-stylizer@champion"
    assert any("converted to RGB" in text for text in result["conversions"])
    with Image.open(out) as written:
        assert written.size == (70, 50) and written.mode == "RGB"

    assert main(["stylize", str(tmp_path / "missing.png"), "--out", str(out)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["stylize", str(gray), "--out", str(tmp_path / "styled.xyz")]) == 1
    assert "unknown image format" in capsys.readouterr().err
    assert main(["stylize", str(gray), "--out", str(out), "--model", "nnzoo-style_transfer-nothing"]) == 1
    assert "no stylizer at models:/nnzoo-style_transfer-nothing@champion" in capsys.readouterr().err


@pytest.mark.slow
def test_the_cache_serves_a_stylizer_only_for_the_same_style_image_and_loss_net(client, smoke):
    from pipelines.config import to_dict

    out = smoke["out"]
    config = to_dict(FAMILY.config("smoke", {"cache": "true"}))
    inputs = {**out["prepare_data"], "prepare_images": out["prepare_images"], "run_key": None}
    same = style_transfer.train_fast_stylizer(config, inputs)
    assert same["cached"] and same["run_id"] == out["train_fast_stylizer"]["run_id"]
    # Another file behind the same style path: prepare_images gives it another fingerprint.
    restyled = {**out["prepare_images"], "style_fingerprint": "0" * 16}
    other = style_transfer.train_fast_stylizer(config, {**inputs, "prepare_images": restyled})
    assert not other["cached"] and other["run_id"] != same["run_id"]


def test_nnzoo_stylize_without_a_registered_stylizer_says_how_to_get_one(store, tmp_path, capsys):
    from PIL import Image

    from pipelines.cli import main

    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photo)
    assert main(["stylize", str(photo), "--out", str(tmp_path / "styled.png")]) == 1
    error = capsys.readouterr().err
    assert "no stylizer at models:/nnzoo-style_transfer-stylizer@champion" in error
    assert "nnzoo run style_transfer" in error


# --- the loss network ----------------------------------------------------------------------------------


def test_content_layer_follows_the_loss_network_unless_configured():
    from pipelines.config import ConfigError

    style = FAMILY.config("quick").style
    assert style.content_layer_for("imagenet") == "block5_conv2"  # Gatys et al.'s, unchanged
    assert style.content_layer_for("random") == CONTENT_LAYERS["random"] == "block3_conv2"
    named = FAMILY.config("quick", {"style.content_layer": "block4_conv2"}).style
    assert named.content_layer_for("imagenet") == named.content_layer_for("random") == "block4_conv2"
    with pytest.raises(ConfigError, match="content_layer='block6_conv1'"):
        FAMILY.config("quick", {"style.content_layer": "block6_conv1"})
    with pytest.raises(ValueError, match="loss_net='auto'"):
        style.content_layer_for("auto")


def test_the_fast_net_trains_with_a_heavier_content_weight_on_the_random_loss_network():
    from pipelines.configs.style_transfer import FAST_CONTENT_WEIGHT_RANDOM

    quick = FAMILY.config("quick")
    assert quick.fast.content_weight_for("random", quick.style.content_weight) == FAST_CONTENT_WEIGHT_RANDOM == 50.0
    assert quick.fast.content_weight_for("imagenet", quick.style.content_weight) == quick.style.content_weight
    chosen = FAMILY.config("quick", {"fast.content_weight": 7})
    assert chosen.fast.content_weight_for("random", 1.0) == chosen.fast.content_weight_for("imagenet", 1.0) == 7


def test_loss_network_choice_never_downloads_unless_allowed(tmp_path, monkeypatch):
    import keras

    calls = []
    monkeypatch.setattr(keras.utils, "get_file", lambda *args, **kwargs: calls.append(kwargs) or "/fetched.h5")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv(source_weights.DOWNLOAD_VARIABLE, raising=False)
    assert source_weights.choose_loss_network("random", 7) == source_weights.LossNetChoice(
        "random", None, 7, "asked for")
    auto = source_weights.choose_loss_network("auto")
    assert (auto.name, auto.weights_path) == ("random", None) and "downloads are off" in auto.reason
    with pytest.raises(source_weights.LossNetworkUnavailableError, match="loss_net=imagenet.*NNZOO_ALLOW_DOWNLOAD"):
        source_weights.choose_loss_network("imagenet")
    assert calls == []

    monkeypatch.setenv(source_weights.DOWNLOAD_VARIABLE, "1")
    allowed = source_weights.choose_loss_network("imagenet")
    assert (allowed.name, allowed.weights_path) == ("imagenet", "/fetched.h5")
    assert calls and calls[0]["file_hash"] == source_weights.IMAGENET_WEIGHTS_HASH

    cached = tmp_path / "models" / source_weights.IMAGENET_WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    monkeypatch.delenv(source_weights.DOWNLOAD_VARIABLE)
    for choice in ("auto", "imagenet"):
        chosen = source_weights.choose_loss_network(choice)
        assert (chosen.name, chosen.weights_path) == ("imagenet", str(cached))
    assert source_weights.choose_loss_network("random").name == "random"
    assert len(calls) == 1


# --- images -----------------------------------------------------------------------------------------------


def _png(tmp_path: Path, name: str, array: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_content_photos_are_real_photographs_from_installed_packages():
    loaded = load_content_photos(photo_size=40)
    photos, names = loaded.arrays["x"], list(loaded.arrays["name"])
    assert photos.dtype == np.uint8 and photos.shape[1:] == (40, 40, 3)
    assert {"china", "flower", "grace_hopper"} <= set(names) and len(names) == len(photos)
    assert all(photo.std() > 10 for photo in photos)  # pictures, not flat fills


def test_bad_images_get_a_clear_message(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a file"):
        read_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(ImageError, match="not an image PIL can read"):
        read_image(text)
    tiny = _png(tmp_path, "tiny.png", np.zeros((MIN_SIDE - 1, 100, 3), np.uint8))
    with pytest.raises(ImageError, match=f"100x{MIN_SIDE - 1} pixels; each side must be at least {MIN_SIDE}"):
        read_image(tiny)
    photo = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo, "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo.getvalue()[: len(photo.getvalue()) // 3])
    with pytest.raises(ImageError, match="damaged or unreadable"):
        read_image(truncated)


def test_grayscale_alpha_and_huge_images_are_converted_as_documented(tmp_path):
    gray = read_image(_png(tmp_path, "gray.png", np.full((40, 50), 77, np.uint8), "L"))
    assert gray.pixels.shape == (40, 50, 3) and np.all(gray.pixels == 77)
    assert gray.conversions == ("L: converted to RGB (gray in every channel)",)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0], rgba[:20, :, 3] = 200, 255  # top half opaque red, bottom half transparent
    dropped = read_image(_png(tmp_path, "alpha.png", rgba, "RGBA"))
    assert dropped.pixels.shape == (40, 40, 3) and "alpha channel dropped" in dropped.conversions[0]
    assert tuple(dropped.pixels[0, 0]) == (200, 0, 0) and tuple(dropped.pixels[-1, -1]) == (255, 255, 255)
    huge = read_image(_png(tmp_path, "huge.png", np.zeros((MAX_SIDE + 500, 300, 3), np.uint8)))
    assert max(huge.pixels.shape[:2]) == MAX_SIDE and huge.pixels.shape[1] == round(300 * MAX_SIDE / (MAX_SIDE + 500))
    assert "scaled down" in huge.conversions[-1]


def test_style_images_generated_shipped_or_a_file_and_urls_only_when_given(tmp_path, monkeypatch):
    mosaic = load_style("mosaic", 64)
    assert mosaic.pixels.shape == (64, 64, 3) and mosaic.source == "generated:mosaic"
    np.testing.assert_array_equal(mosaic.pixels, generate_style("mosaic", 64))  # deterministic
    assert load_style("waves", 48).fingerprint != load_style("mosaic", 48).fingerprint
    shipped = load_style("flower", 100)
    assert max(shipped.pixels.shape[:2]) == 100 and shipped.source == "sklearn:datasets/images/flower.jpg"
    path = _png(tmp_path, "style.png", generate_style("waves", 80))
    assert load_style(str(path), 256).source == f"file:{path.resolve()}"
    with pytest.raises(ImageError, match="not a style name"):
        load_style("picasso")
    with pytest.raises(ImageError, match="URLs are not fetched here"):
        load_style("https://example.org/starry.jpg", allow_url=False)
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(ImageError, match="download failed"):
        load_style("https://example.org/starry.jpg", cache_dir=tmp_path)


def test_the_result_contract_holds_on_the_smoke_run(smoke):
    from tests.claims_check import assert_result_contract

    assert_result_contract(FAMILY, smoke["store"], RUN_KEY)


@pytest.mark.slow
def test_full_profile_runs_end_to_end_on_mock_data_with_its_switches_in_force(store, full_mock_fits):
    assert_full_mock_run(FAMILY, store, full_mock_fits)
