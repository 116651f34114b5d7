"""Generated datasets: deterministic from a seed and their parameters, nothing to download."""

from __future__ import annotations

import numpy as np

from pipelines.data.registry import Loaded, register_dataset


@register_dataset(
    "adding_problem",
    "The adding problem (Hochreiter & Schmidhuber 1997): the sum of the two marked values of a sequence",
    "generated:adding_problem",
    generator_version="1",
)
def load_adding_problem(data_dir: str | None = None, sequence_length: int = 50, examples: int = 2000,
                        seed: int = 0) -> Loaded:
    """``x`` float32 [N, T, 2]: values U[0, 1] and a marker that is 1 once in each half;
    ``y`` float32 [N]: the sum of the two marked values. A model must carry the first
    value across up to T steps, which is what the task measures."""
    if sequence_length < 2 or examples < 1:
        raise ValueError(f"sequence_length={sequence_length}, examples={examples}: expected at least 2 and 1")
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, (examples, sequence_length)).astype(np.float32)
    rows = np.arange(examples)
    half = sequence_length // 2
    marked = (rng.integers(0, half, examples), rng.integers(half, sequence_length, examples))
    markers = np.zeros_like(values)
    for column in marked:
        markers[rows, column] = 1.0
    target = values[rows, marked[0]] + values[rows, marked[1]]
    return Loaded({"x": np.stack([values, markers], axis=-1), "y": target})
