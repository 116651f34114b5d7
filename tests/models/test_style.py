"""The style-transfer models: the stylizer net (any size, one train step, safe-mode round
trip), the seeded random loss network, the Gram matrix, total variation, the
perceptual loss, and the edge similarity of a result to its photo."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models import build_model
from models.style import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    PerceptualLoss,
    PerceptualTrainer,
    ReflectionPadding2D,
    build_loss_network,
    edge_similarity,
    gram_matrix,
    stylise,
    total_variation,
)

TINY = {"filters": (3, 4, 5), "residual_blocks": 1}


@pytest.fixture(scope="module")
def network():
    return build_loss_network(None, seed=3)


@pytest.fixture(scope="module")
def shallow(network):
    """The same random VGG19 read at its first blocks only: the training test's graph stays small."""
    return build_loss_network(None, seed=3, style_layers=("block1_conv1", "block2_conv1"),
                              content_layer="block2_conv2")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.random((2, 32, 32, 3), dtype=np.float32), rng.random((40, 40, 3), dtype=np.float32)


@pytest.mark.parametrize("height, width", [(32, 32), (37, 53), (16, 90)])
def test_stylizer_keeps_any_input_size_and_outputs_an_image(height, width):
    model = build_model("style_transformer", **TINY)
    output = stylise(model, np.random.default_rng(1).random((2, height, width, 3), dtype=np.float32))
    assert output.shape == (2, height, width, 3)
    assert np.all((output >= 0.0) & (output <= 1.0))


def test_stylizer_uses_instance_normalisation_and_reflection_padding():
    model = build_model("style_transformer", **TINY)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.GroupNormalization)]
    assert norms and all(layer.groups in (-1, layer.output.shape[-1]) for layer in norms)  # a group per channel
    assert any(isinstance(layer, ReflectionPadding2D) for layer in model.layers)


def test_stylizer_refuses_bad_arguments():
    with pytest.raises(ValueError, match="three positive channel counts"):
        build_model("style_transformer", filters=(4, 8))
    with pytest.raises(ValueError, match="residual_blocks=-1"):
        build_model("style_transformer", residual_blocks=-1)


def test_one_training_step_changes_only_the_stylizer_and_round_trips_in_safe_mode(shallow, images, tmp_path):
    network = shallow
    content, style = images
    transformer = build_model("style_transformer", **TINY)
    loss = PerceptualLoss(network, style, content_weight=1.0, style_weight=10.0, tv_weight=1.0)
    trainer = PerceptualTrainer(transformer, loss, crop_size=32)
    trainer(content[:1])
    frozen = [w.copy() for w in network.get_weights()]
    before = [w.copy() for w in transformer.get_weights()]
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2), loss=None)
    logs = trainer.train_on_batch(content, return_dict=True)
    assert {"loss", "content_loss", "style_loss", "tv_loss"} <= set(logs)
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, transformer.get_weights(), strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(frozen, network.get_weights(), strict=True))
    assert trainer.count_params() == transformer.count_params()
    assert trainer.flops_per_example() > 0

    odd = np.random.default_rng(2).random((1, 29, 45, 3), dtype=np.float32)
    path = tmp_path / "stylizer.keras"
    keras.saving.save_model(transformer, path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(stylise(loaded, odd), stylise(transformer, odd), atol=1e-6)


def test_random_loss_network_is_seeded_and_every_layer_is_on_one_scale(network, images):
    content, _ = images
    again = build_loss_network(None, seed=3)
    other = build_loss_network(None, seed=4)
    features = network(content)
    assert len(features) == len(STYLE_LAYERS) + 1
    np.testing.assert_allclose(np.asarray(again(content)[-1]), np.asarray(features[-1]), rtol=1e-5)
    assert not np.allclose(np.asarray(other(content)[-1]), np.asarray(features[-1]))
    # rescaled layer by layer: mean activations near 1 at every depth (He et al. init alone drifts)
    means = [float(np.mean(f)) for f in features]
    assert all(0.3 < mean < 3.0 for mean in means), means
    assert not network.trainable and network.name == "vgg19_random_seed3"


def test_loss_network_is_cut_after_the_content_layer(network):
    names = {layer.name for layer in network.get_layer("vgg19_cut").layers}
    assert CONTENT_LAYER in names and "block5_conv3" not in names and "block5_pool" not in names
    with pytest.raises(ValueError, match="not VGG19 layers"):
        build_loss_network(None, style_layers=("block9_conv1",))


def test_gram_matrix_and_total_variation_by_hand():
    features = np.zeros((1, 2, 2, 2), np.float32)
    features[0, :, :, 0] = [[1, 2], [3, 4]]
    features[0, :, :, 1] = 1.0
    gram = np.asarray(gram_matrix(features))[0]
    np.testing.assert_allclose(gram, [[30 / 4, 10 / 4], [10 / 4, 1.0]])
    flat = np.full((1, 5, 5, 3), 0.3, np.float32)
    assert float(total_variation(flat)[0]) == 0.0
    stripes = np.zeros((1, 4, 4, 3), np.float32)
    stripes[:, :, 1::2] = 1.0  # columns alternate: every horizontal neighbour differs by 1
    assert float(total_variation(stripes)[0]) == pytest.approx(1.0)


def test_perceptual_loss_is_zero_where_the_targets_are_met(network, images):
    content, style = images
    loss = PerceptualLoss(network, style, content_weight=1.0, style_weight=1.0, tv_weight=0.0)
    own = loss.terms(content, loss.content_features(content))
    np.testing.assert_allclose(np.asarray(own["content"]), 0.0, atol=1e-6)
    assert np.all(np.asarray(own["style"]) > 0.01)
    styled = loss.terms(style[None], loss.content_features(style[None]))
    assert float(styled["style"][0]) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(np.asarray(own["total"]), np.asarray(own["content"] + own["style"]), rtol=1e-6)


def _scene(height: int = 96, width: int = 96) -> np.ndarray:
    """A photo-like test image: a lit gradient with a few coloured blocks and a disc."""
    rows, cols = np.mgrid[0:height, 0:width] / np.float32(max(height, width))
    image = np.stack([0.6 + 0.3 * rows, 0.5 + 0.2 * cols, 0.7 - 0.3 * rows], axis=-1).astype(np.float32)
    image[int(0.1 * height): int(0.5 * height), int(0.15 * width): int(0.45 * width)] = (0.8, 0.2, 0.1)
    image[int(0.6 * height): int(0.9 * height), int(0.1 * width): int(0.8 * width)] = (0.1, 0.3, 0.7)
    disc = (rows - 0.3) ** 2 + (cols - 0.72) ** 2 < 0.15**2
    image[disc] = (0.95, 0.9, 0.2)
    return image


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    size = 2 * radius + 1
    height, width = image.shape[:2]
    return sum(padded[dy: dy + height, dx: dx + width] for dy in range(size) for dx in range(size)) / size**2


def test_edge_similarity_is_one_for_the_photo_about_zero_for_noise_and_between_for_a_blur():
    photo = _scene()
    rng = np.random.default_rng(0)
    assert edge_similarity(photo, photo) == pytest.approx(1.0)
    assert edge_similarity(1.0 - photo, photo) == pytest.approx(1.0)  # recoloured: the same edges
    assert abs(edge_similarity(rng.random(photo.shape, dtype=np.float32), photo)) < 0.1
    assert abs(edge_similarity(np.full_like(photo, 0.5), photo)) < 1e-9  # no edges at all
    blurred = [edge_similarity(_box_blur(photo, radius), photo) for radius in (1, 3, 6)]
    assert 1.0 > blurred[0] > blurred[1] > blurred[2] > 0.1, blurred
    # a uint8 copy at another size is resized to the result's size first
    small = np.round(_scene(64, 64) * 255).astype(np.uint8)
    assert edge_similarity(small, photo) > 0.8
    with pytest.raises(ValueError, match="expected \\(height, width, 3\\)"):
        edge_similarity(photo[..., 0], photo)
