"""Every registered builder passes the shared check; the registry itself."""

from __future__ import annotations

import pytest

from models import build_model, get_builder, model_names, register_model
from tests.models.helpers import check_model_builder

# Tiny keyword arguments for each registered model; a new model must add a row here.
TINY_KWARGS = {
    "mlp": {"hidden_units": (6, 4), "dropout_rate": 0.2},
    "cnn": {"filters": (2, 3), "kernel_size": 3, "convs_per_block": 2, "batch_norm": True, "dense_units": 5,
            "dropout_rate": 0.2, "augment_shift": 0.1},
    "dbn_classifier": {"layers": (6, 4), "dropout_rate": 0.2, "seed": 1},
    "deep_cnn": {"depth": 8, "widths": (2, 3), "batch_norm": True},
    "inception_cnn": {"stem_filters": 2, "modules": (16,)},
    "talk_cnn": {"filters": 3},
}
# Models that are not image classifiers have their own module of checks instead.
CHECKED_ELSEWHERE = {"autoencoder": "test_autoencoder.py", "rbm": "test_rbm.py",
                     "sequence_regressor": "test_recurrent.py", "sequence_tagger": "test_recurrent.py",
                     "text_classifier": "test_recurrent.py", "deconv_segmenter": "test_deconv.py",
                     "fcn_segmenter": "test_deconv.py",
                     "digit_generator": "test_deconv.py", "style_transformer": "test_style.py"}


def test_registry_lists_the_classifier_models():
    assert {"mlp", "cnn"} <= set(model_names())
    assert model_names() == sorted(model_names())


def test_every_registered_model_is_checked():
    from pathlib import Path

    for name in model_names():
        assert name in TINY_KWARGS or name in CHECKED_ELSEWHERE, (
            f"registered model {name!r} has no TINY_KWARGS entry in {__file__}")
    for module in CHECKED_ELSEWHERE.values():
        assert (Path(__file__).parent / module).is_file(), module


@pytest.mark.parametrize("name", [name for name in model_names() if name not in CHECKED_ELSEWHERE])
def test_every_registered_classifier_builds_trains_and_round_trips(name, tmp_path):
    assert name in TINY_KWARGS, f"registered model {name!r} has no TINY_KWARGS entry in {__file__}"
    check_model_builder(name, TINY_KWARGS[name], input_shape=(8, 8, 1), num_classes=3, tmp_dir=tmp_path)


def test_a_builder_can_take_a_name_argument():
    assert build_model("mlp", input_shape=(8, 8, 1), num_classes=3, hidden_units=(4,), name="custom").name == "custom"


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*cnn.*mlp"):
        build_model("nope", input_shape=(8, 8, 1), num_classes=3)


def test_registering_a_different_builder_under_a_taken_name_fails():
    with pytest.raises(ValueError, match="registered twice"):
        register_model("mlp")(lambda **kwargs: None)
    assert get_builder("mlp").__name__ == "build_mlp"
