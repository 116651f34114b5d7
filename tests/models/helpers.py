"""One check every registered model builder must pass, at a tiny size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def check_model_builder(name: str, kwargs: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
                        tmp_dir: Path) -> Any:
    """Build ``name`` through the registry, check the output, one train step and a
    safe-mode save/load round trip with identical predictions. Returns the model."""
    import keras

    from models import build_model

    rng = np.random.default_rng(0)
    images = rng.random((8, *input_shape), dtype=np.float32)
    labels = np.arange(8) % num_classes

    model = build_model(name, input_shape=input_shape, num_classes=num_classes, **kwargs)
    assert isinstance(model, keras.Model)
    assert model.output_shape == (None, num_classes)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (8, num_classes)
    assert np.all(np.isfinite(probabilities))
    if num_classes > 1:  # softmax head
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    before = [w.copy() for w in model.get_weights()]
    loss = "sparse_categorical_crossentropy" if num_classes > 1 else "binary_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    step_loss = model.train_on_batch(images, labels if num_classes > 1 else (labels % 2).astype("float32"))
    assert np.isfinite(float(np.asarray(step_loss).ravel()[0]))
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)), \
        f"{name}: one train step changed no weight"

    expected = model.predict(images, verbose=0)
    path = tmp_dir / f"{name}.keras"
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)
    return model
