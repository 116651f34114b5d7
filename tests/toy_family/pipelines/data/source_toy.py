"""Two Gaussian blobs in the plane, generated from a seed: the toy family's data."""

import numpy as np

from pipelines.data.registry import Loaded, register_dataset


@register_dataset("toy_blobs", "Two Gaussian blobs in 2-D", "generated:toy_blobs", generator_version="1")
def load_toy_blobs(data_dir: str | None = None, examples: int = 400, seed: int = 0) -> Loaded:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, examples)
    points = rng.normal(0.0, 1.0, (examples, 2)) + np.where(labels[:, None] == 1, 2.0, -2.0)
    return Loaded({"x": points.astype(np.float32), "y": labels}, ("left", "right"))
