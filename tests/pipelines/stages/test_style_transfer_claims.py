"""Claim C13 on a small setting, kept in CI (the quick run's figures are in
docs/style-transfer.md): iterative stylisation lowers its total loss by at least 90% from
the first step, and the result's style loss is below the content photo's own.

The setting is the quick profile's loss and step size on a 48x48 photo with the seeded
random VGG19 (what CI has: no ImageNet weights), 120 steps."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.configs.style_transfer import FAMILY

pytestmark = pytest.mark.slow

SIZE, STEPS = 48, 120


@pytest.fixture(scope="module")
def optimised():
    from models.style import PerceptualLoss
    from pipelines.data.source_style import available_photos, generate_style, read_image, square
    from pipelines.stages.style_transfer import loss_network, optimise_image

    quick = FAMILY.config("quick")
    content = square(read_image(available_photos()["chelsea"]).pixels, SIZE).astype(np.float32) / 255.0
    style = generate_style(quick.style.style_image, SIZE).astype(np.float32) / 255.0
    loss = PerceptualLoss(loss_network(None, quick.style.loss_net_seed), style,
                          content_weight=quick.style.content_weight, style_weight=quick.style.style_weight,
                          tv_weight=quick.style.tv_weight)
    result = optimise_image(loss, content, STEPS, quick.iterative.pixel_step_size, quick.iterative.init)
    target = loss.content_features(content[None])
    own = {name: float(value[0]) for name, value in loss.terms(content[None], target).items()}
    return result, own


def test_c13_iterative_stylisation_cuts_the_total_loss_by_90_percent(optimised):
    result, _ = optimised
    first, final = result.history["total"][0], result.final["total"]
    assert 1.0 - final / first >= 0.90, f"total loss {first:.4g} -> {final:.4g}"


def test_c13_the_result_has_more_of_the_style_than_the_content_photo(optimised):
    result, own = optimised
    assert result.final["style"] < own["style"]
