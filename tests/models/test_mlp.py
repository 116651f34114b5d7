from __future__ import annotations

import numpy as np
import pytest

from models import build_model
from tests.models.helpers import check_model_builder


@pytest.mark.parametrize("kwargs, message", [
    ({"dropout_rate": 1.5}, "dropout_rate=1.5"),
    ({"dropout_rate": -0.1}, "dropout_rate=-0.1"),
    ({"num_classes": 0}, "num_classes=0"),
    ({"hidden_units": (4, 0)}, r"hidden_units\[1\]=0"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("mlp", **{"input_shape": (8, 8, 1), "num_classes": 3, **kwargs})


def test_no_hidden_layer_and_one_class_is_logistic_regression(tmp_path):
    model = check_model_builder("mlp", {"hidden_units": ()}, input_shape=(4, 4, 1), num_classes=1, tmp_dir=tmp_path)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [layer.name for layer in dense] == ["probabilities"]
    assert dense[0].get_config()["activation"] == "sigmoid"
    assert model.count_params() == 4 * 4 + 1


def test_hidden_layers_follow_hidden_units():
    model = build_model("mlp", input_shape=(8, 8, 1), num_classes=10, hidden_units=(7, 5), dropout_rate=0.0)
    widths = [model.get_layer(f"dense_{i}").units for i in (1, 2)]
    assert widths == [7, 5]
    assert not [layer for layer in model.layers if "dropout" in layer.name]
    assert model.count_params() == (64 * 7 + 7) + (7 * 5 + 5) + (5 * 10 + 10)
    assert np.all(model.predict(np.zeros((1, 8, 8, 1)), verbose=0) > 0)
