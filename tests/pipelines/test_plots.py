"""Figures read at a glance: the C17 chart's labels never on the data or on each other
and its key off the axes; scene masks with a class key, a title clear of the panel
headers and a sensible size; a log-scale line chart keeps an underflowed curve in the
axes on a marked floor."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.text import Text

from pipelines import plots


def _extents(figure, artists, draw: bool = True):
    if draw:
        figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    return [artist.get_window_extent(renderer) for artist in artists]


def _label_extents(figure, texts):
    """The boxes of the labels themselves (an annotation's extent takes in its leader line)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    return [text.get_bbox_patch().get_window_extent(renderer) if text.get_bbox_patch() else
            Text.get_window_extent(text, renderer) for text in texts]


def _overlap(one, other, slack: float = 0.5) -> bool:
    return one.x0 < other.x1 - slack and other.x0 < one.x1 - slack and \
        one.y0 < other.y1 - slack and other.y0 < one.y1 - slack


def _saved_size(figure, dpi: float = 110) -> tuple[float, float]:
    """Pixels of the PNG that ``savefig(dpi=dpi, bbox_inches="tight")`` (as
    :func:`pipelines.tracking.log_figure` saves) writes: the tight box and 0.1 in of pad."""
    figure.canvas.draw()
    box = figure.get_tightbbox()
    return (box.width + 0.2) * dpi, (box.height + 0.2) * dpi


CHANCE = ("logistic", "mlp_sigmoid", "sigmoid_plain", "vanishing_plain")


def _models() -> list[dict]:
    rows = [("classifiers", "cnn", 0.984, 3.6e7, 468e3), ("cnn_depth", "max_pool", 0.968, 6.0e6, 114e3),
            ("cnn_depth", "strided", 0.959, 1.6e6, 114e3), ("unsupervised", "dbn", 0.955, 1.3e6, 648e3),
            ("cnn_depth", "degradation_plain_shallow", 0.955, 4.8e6, 19.3e3),
            ("cnn_depth", "degradation_residual_shallow", 0.952, 4.9e6, 20.1e3),
            ("cnn_depth", "vanishing_residual", 0.947, 1.55e7, 68.2e3), ("classifiers", "mlp", 0.939, 1.07e6, 536e3),
            ("cnn_depth", "inception", 0.891, 6.0e6, 9.88e3), ("classifiers", "logistic", 0.1, 7.9e3, 7.85e3),
            ("cnn_depth", "mlp_sigmoid", 0.1, 1.75e5, 88.3e3), ("cnn_depth", "sigmoid_plain", 0.1, 1.55e7, 67.6e3),
            ("cnn_depth", "vanishing_plain", 0.1, 1.55e7, 67.6e3)]
    models = [{"family": f, "model": m, "dataset": "mnist_subset", "accuracy": a, "flops": fl, "params": p}
              for f, m, a, fl, p in rows]
    return [*models, {"family": "sequences", "model": "sentiment-lstm-bi", "dataset": "rotten_tomatoes",
                      "accuracy": 0.759, "flops": 6.6e6, "params": 1.29e6}]


def test_accuracy_vs_flops_labels_stay_off_the_data_and_each_other_and_name_the_nets_at_chance():
    figure = plots.accuracy_vs_flops_panels(_models(), {"mnist_subset": ["cnn_depth/inception"]}, "C17")
    axes = figure.axes
    labels = [text for axis in axes for text in axis.texts]
    label_boxes = _label_extents(figure, labels)
    axes_boxes = _extents(figure, axes, draw=False)
    assert not any(_overlap(a, b) for a, b in itertools.combinations(label_boxes, 2))
    assert not any(_overlap(label, axis) for label in label_boxes for axis in axes_boxes)
    # leader lines run under the bubbles, never over a point
    assert all(text.get_zorder() < points.get_zorder() for axis in axes for text in axis.texts
               for points in axis.collections if len(points.get_offsets()))
    chance = [text.get_text().replace("\n", " ") for text in labels if "at chance" in text.get_text()]
    assert len(chance) == 1 and all(name in chance[0] for name in CHANCE)
    assert not any("more" in text.get_text() for text in labels)  # every model is named
    (legend,) = figure.legends
    (legend_box,) = _extents(figure, [legend], draw=False)
    assert not any(_overlap(legend_box, box) for box in [*axes_boxes, *label_boxes])
    assert all(text.get_fontsize() >= 10 and "monospace" not in text.get_fontfamily() for text in legend.get_texts())


@pytest.mark.parametrize("with_predicted", [False, True], ids=["scenes", "segmenter"])
def test_scene_masks_have_a_class_key_a_clear_title_and_a_sensible_size(with_predicted):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 56, 56, 1)).astype(np.uint8)  # the parent's 8 smoke-profile scenes
    masks = rng.integers(0, 11, (8, 56, 56))
    names = ("background", *(str(d) for d in range(10)))
    for predicted in ([masks] if with_predicted else [None]):
        figure = plots.segmentations(images, masks, predicted, 11, "scenes and their per-pixel classes",
                                     class_names=names)
        assert max(_saved_size(figure)) <= 1600
        (legend,) = figure.legends
        assert [text.get_text() for text in legend.get_texts()] == list(names)
        headers = [axis.title for axis in figure.axes if axis.get_title()]
        assert {title.get_text() for title in headers} == {"image", "true"} | ({"predicted"} if predicted is not None
                                                                              else set())
        (title_box,) = _extents(figure, [figure._suptitle], draw=False)  # drawn by _saved_size
        assert not any(_overlap(title_box, box) for box in _extents(figure, headers, draw=False))


def test_a_log_scale_line_below_float32_stays_in_the_axes_on_a_marked_floor():
    steps = np.arange(1, 11)
    series = {"GRU, initialisation": (steps, [0.0, 0.0, 1e-45, 1e-40, 1e-30, 1e-20, 1e-12, 1e-6, 1e-3, 0.1]),
              "GRU, trained": (steps, np.geomspace(1e-6, 1.0, 10))}
    figure = plots.lines(series, "gradient", "t", "|dL/dx_t|", log_y=True)
    (axis,) = figure.axes
    curves = {line.get_label(): np.asarray(line.get_ydata(), float) for line in axis.get_lines()
              if not line.get_label().startswith("_")}
    assert curves["GRU, initialisation"].min() == pytest.approx(plots.FLOAT32_TINY)
    assert (curves["GRU, initialisation"][:4] == plots.FLOAT32_TINY).all()
    low, high = axis.get_ylim()
    assert low < plots.FLOAT32_TINY and all(low <= c.min() and c.max() <= high for c in curves.values())
    assert any(np.allclose(line.get_ydata(), plots.FLOAT32_TINY) and line.get_linestyle() == ":"
               for line in axis.get_lines())
    (note,) = [text for text in axis.texts if "float32" in text.get_text()]
    (legend_box,) = _extents(figure, [axis.get_legend()])
    (axis_box,) = _extents(figure, [axis])
    assert not _overlap(legend_box, axis_box)
    # on a linear axis nothing is moved
    linear = plots.lines(series, "gradient", "t", "|dL/dx_t|")
    assert min(linear.axes[0].get_lines()[0].get_ydata()) == 0.0 and not linear.axes[0].texts


def test_a_log_scale_zero_with_nothing_below_float32_sits_a_decade_under_the_smallest_value():
    figure = plots.lines({"mlp": ([1, 2, 3], [0.3, 0.02, 0.0])}, "training error", "epoch", "error", log_y=True)
    (axis,) = figure.axes
    assert axis.get_lines()[0].get_ydata()[-1] == pytest.approx(1e-3)
    assert [text.get_text() for text in axis.texts] == ["\u25bd 0: drawn on this line"]
