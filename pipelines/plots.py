"""Figures a person would rather look at than read: curves, grids, confusion matrices.

Each function returns a matplotlib figure (Agg backend, no display needed);
:func:`pipelines.tracking.log_figure` stores it as a PNG.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(history: Mapping[str, Sequence[float]], title: str) -> plt.Figure:
    """One panel per metric (loss, accuracy, ...), train and validation together."""
    names = [key for key in history if not key.startswith("val_") and key != "learning_rate"]
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.4), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        epochs = np.arange(1, len(history[name]) + 1)
        axis.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            axis.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str) -> plt.Figure:
    """Counts with the diagonal readable at a glance; rows are true classes."""
    size = max(4.0, 0.5 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axis.text(col, row, int(count), ha="center", va="center", fontsize=8,
                  color="white" if count > threshold else "black")
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def image_grid(
    images: np.ndarray, titles: Sequence[str] | None = None, title: str = "", columns: int = 10, cmap: str = "gray",
    normalize_each: bool = False,
) -> plt.Figure:
    """Images ``[N, H, W]`` or ``[N, H, W, C]`` in a grid, optionally captioned."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, int(np.ceil(count / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.45 * rows + 0.4), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        image = images[index].astype(np.float32)
        if normalize_each:
            low, high = image.min(), image.max()
            image = (image - low) / (high - low) if high > low else image * 0
        axis.imshow(image, cmap=cmap)
        if titles is not None:
            axis.set_title(titles[index], fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def conv_filters(kernel: np.ndarray, title: str) -> plt.Figure:
    """First-layer conv kernels ``[kh, kw, in, out]`` as a grid of small images."""
    kernel = np.asarray(kernel)
    tiles = kernel.mean(axis=2) if kernel.shape[2] != 3 else kernel
    tiles = np.moveaxis(tiles, -1, 0)
    return image_grid(tiles, title=title, columns=8, cmap="gray", normalize_each=True)


def image_rows(rows: Mapping[str, np.ndarray], title: str, column_titles: Sequence[str] | None = None) -> plt.Figure:
    """Aligned rows of images ``{row label: [N, H, W(, 1)]}``, e.g. originals over reconstructions."""
    labels = list(rows)
    columns = max(len(images) for images in rows.values())
    figure, axes = plt.subplots(len(labels), columns, figsize=(1.2 * columns + 1.2, 1.3 * len(labels) + 0.5),
                                squeeze=False)
    for row, label in enumerate(labels):
        images = np.asarray(rows[label])
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if column < len(images):
                axis.imshow(images[column], cmap="gray", vmin=0.0, vmax=1.0)
            if column == 0:
                axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
            if row == 0 and column_titles is not None and column < len(column_titles):
                axis.set_title(column_titles[column], fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def code_map(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str,
             xlabel: str = "component 1", ylabel: str = "component 2") -> plt.Figure:
    """2-D scatter of codes, one colour per class, with each class's name at its centre."""
    figure, axis = plt.subplots(figsize=(6.4, 5.6))
    colours = plt.get_cmap("tab10")
    for index, name in enumerate(class_names):
        chosen = labels == index
        if not chosen.any():
            continue
        axis.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.6, color=colours(index % 10), label=name)
        centre = np.median(points[chosen], axis=0)
        axis.text(centre[0], centre[1], name, fontsize=12, weight="bold", ha="center", va="center",
                  bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.legend(markerscale=3, fontsize=7, loc="best", ncol=2)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def accuracy_vs_labels(results: Sequence[Mapping[str, float | str]], title: str) -> plt.Figure:
    """Test accuracy against the share of labels used, one line per init: every seed as
    a dot, the mean as a line with a min-max band. ``results``: dicts with
    ``fraction``, ``init`` and ``test_accuracy``."""
    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    inits = sorted({str(row["init"]) for row in results})
    for index, init in enumerate(inits):
        colour = plt.get_cmap("tab10")(index)
        rows = [row for row in results if row["init"] == init]
        fractions = sorted({float(row["fraction"]) for row in rows})
        values = [[float(row["test_accuracy"]) for row in rows if float(row["fraction"]) == f] for f in fractions]
        axis.scatter([f for f, v in zip(fractions, values, strict=True) for _ in v], [x for v in values for x in v],
                     color=colour, s=14, alpha=0.6)
        axis.plot(fractions, [np.mean(v) for v in values], marker="o", color=colour,
                  label=f"{init} init (mean of {max(len(v) for v in values)} seeds)")
        axis.fill_between(fractions, [min(v) for v in values], [max(v) for v in values], color=colour, alpha=0.15)
    axis.set_xscale("log")
    axis.set_xlabel("share of training labels used")
    axis.set_ylabel("test accuracy")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    return figure


def feature_maps(maps: Sequence[tuple[str, np.ndarray]], title: str, channels: int = 8) -> plt.Figure:
    """One row per layer, ``(layer name, [H, W, C] activations)``: the first ``channels``
    channels of each, every tile scaled to its own range (what a layer responds to,
    not how strongly)."""
    columns = max(1, min(channels, max(int(array.shape[-1]) for _, array in maps)))
    figure, axes = plt.subplots(len(maps), columns + 1, figsize=(1.1 * columns + 1.8, 1.15 * len(maps) + 0.6),
                                squeeze=False, gridspec_kw={"width_ratios": [1.6] + [1] * columns})
    for row, (name, array) in enumerate(maps):
        label = axes[row, 0]
        label.axis("off")
        label.text(1.0, 0.5, f"{name}\n{'x'.join(str(s) for s in array.shape)}", ha="right", va="center",
                   fontsize=7, transform=label.transAxes)
        for column in range(columns):
            axis = axes[row, column + 1]
            axis.axis("off")
            if column < array.shape[-1]:
                tile = array[..., column].astype(np.float32)
                low, high = float(tile.min()), float(tile.max())
                axis.imshow((tile - low) / (high - low) if high > low else tile * 0, cmap="viridis")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


FLOAT32_TINY = float(np.finfo(np.float32).tiny)
"""The smallest positive normal float32 (about 1.2e-38)."""


def _log_floor(series: Sequence[np.ndarray]) -> tuple[float, str] | None:
    """Where a log axis draws what it cannot place, and the note saying so: values below
    :data:`FLOAT32_TINY` (zeros included) on a floor at it when some are positive (an
    underflow), else zeros a decade under the smallest positive value; None when every
    value is placeable."""
    values = np.concatenate([np.ravel(ys) for ys in series]) if series else np.array([])
    values = values[np.isfinite(values)]
    if not (values < FLOAT32_TINY).any():
        return None
    if ((values > 0) & (values < FLOAT32_TINY)).any() or not (values > 0).any():
        return FLOAT32_TINY, f"below float32's normal range (< {FLOAT32_TINY:.2g}) or 0"
    return 10.0 ** (np.floor(np.log10(values[values > 0].min())) - 1), "0"


def lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str,
          *, log_x: bool = False, log_y: bool = False) -> plt.Figure:
    """Named ``(x, y)`` series on one chart, e.g. training error per epoch of several nets.
    On a log y axis what it cannot place (:func:`_log_floor`: zeros, values below
    float32's range) is drawn on a dotted floor line as open triangles, with a note
    saying so. The key sits right of the axes, off the curves."""
    figure, axis = plt.subplots(figsize=(8.4, 4.4))
    drawn = {label: (np.asarray(list(xs), dtype=float), np.asarray(list(ys), dtype=float))
             for label, (xs, ys) in series.items()}
    floor = _log_floor([ys for _, ys in drawn.values()]) if log_y else None
    for index, (label, (xs, ys)) in enumerate(drawn.items()):
        colour = plt.get_cmap("tab10")(index % 10)
        below = ys < floor[0] if floor else np.zeros(len(ys), bool)
        if below.any():
            ys = np.where(below, floor[0], ys)
            axis.scatter(xs[below], ys[below], marker="v", s=22, facecolors="white", edgecolors=colour, zorder=3)
        axis.plot(xs, ys, marker="o", markersize=3, color=colour, label=label)
    if log_x:
        axis.set_xscale("log")
    if log_y:
        axis.set_yscale("log")
    if floor:
        axis.axhline(floor[0], color="#555", linestyle=":", linewidth=1.2, zorder=1)
        low, high = axis.get_ylim()
        axis.set_ylim(floor[0] / (high / floor[0]) ** 0.12, high)  # room for the note under the floor
        axis.annotate(f"\u25bd {floor[1]}: drawn on this line", (0.01, floor[0]),
                      xycoords=axis.get_yaxis_transform(), xytext=(0, -6), textcoords="offset points", fontsize=8,
                      color="#333", ha="left", va="top")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def bars(values: Mapping[str, float], title: str, ylabel: str,
         reference: tuple[float, str] | None = None) -> plt.Figure:
    """One bar per named model, its value printed on it; ``reference`` = ``(value,
    label)`` draws a dashed line, e.g. a baseline or a bound."""
    figure, axis = plt.subplots(figsize=(max(4.8, 1.3 * len(values) + 2), 4.2))
    names = list(values)
    drawn = axis.bar(range(len(names)), [values[name] for name in names],
                     color=[plt.get_cmap("tab10")(index % 10) for index in range(len(names))], alpha=0.8)
    axis.bar_label(drawn, fmt="%.3f", fontsize=8)
    if reference is not None:
        axis.axhline(reference[0], linestyle="--", color="black", linewidth=1, label=f"{reference[1]}: "
                                                                                     f"{reference[0]:.3f}")
        axis.legend(fontsize=8, loc="lower right")
    axis.set_xticks(range(len(names)), names, fontsize=8)
    axis.set_ylabel(ylabel)
    low = min([*values.values(), *([reference[0]] if reference else [])])
    axis.set_ylim(max(0.0, low - 0.1), max(values.values()) + 0.05)
    axis.grid(alpha=0.3, axis="y")
    axis.set_title(title)
    figure.tight_layout()
    return figure


Box = tuple[float, float, float, float]
"""(top, left, bottom, right) in pixels."""


def _draw_box(axis: Any, box: Sequence[float], color: str, label: str | None = None) -> None:
    top, left, bottom, right = box
    axis.add_patch(plt.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, color=color,
                                 linewidth=1.2))
    if label:
        axis.text(left, top - 1, label, color=color, fontsize=7, va="bottom")


def detections(images: np.ndarray, truth: Sequence[Sequence[tuple[str, Box]]],
               found: Sequence[Sequence[tuple[str, Box]]], title: str, columns: int = 4) -> plt.Figure:
    """Images with their true boxes (green, label above-left) and found boxes (red)."""
    images = np.asarray(images)
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, int(np.ceil(count / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.0 * rows + 0.5), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(images[index].squeeze(), cmap="gray")
        for label, box in truth[index]:
            _draw_box(axis, box, "lime", label)
        for label, box in found[index]:
            top, left, bottom, right = box
            _draw_box(axis, box, "red")
            axis.text(left, bottom + 1, label, color="red", fontsize=7, va="top")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def heatmaps(images: np.ndarray, maps: Sequence[Sequence[tuple[str, np.ndarray]]], window: tuple[int, int],
             stride: tuple[int, int], title: str) -> plt.Figure:
    """One row per image: the image, then each named heatmap ``[rows, cols]`` drawn over
    it, each cell at the centre of the input window it scores."""
    count = len(images)
    columns = 1 + max((len(row) for row in maps), default=0)
    figure, axes = plt.subplots(count, columns, figsize=(2.6 * columns, 2.6 * count + 0.5), squeeze=False)
    for row, image in enumerate(images):
        height, width = image.shape[:2]
        for column in range(columns):
            axis = axes[row, column]
            axis.axis("off")
            axis.imshow(image.squeeze(), cmap="gray", extent=(0, width, height, 0))
            if column == 0:
                axis.set_title(f"{height}x{width}", fontsize=8)
                continue
            if column - 1 >= len(maps[row]):
                continue
            name, heat = maps[row][column - 1]
            top, left = window[0] / 2 - stride[0] / 2, window[1] / 2 - stride[1] / 2
            axis.imshow(heat, cmap="inferno", alpha=0.6, vmin=0.0, vmax=1.0,
                        extent=(left, left + heat.shape[1] * stride[1], top + heat.shape[0] * stride[0], top))
            axis.set_xlim(0, width)
            axis.set_ylim(height, 0)
            axis.set_title(f"{name} ({heat.shape[0]}x{heat.shape[1]})", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def segmentations(images: np.ndarray, true_masks: np.ndarray, predicted: np.ndarray | None, classes: int,
                  title: str, class_names: Sequence[str] | None = None, per_row: int = 2) -> plt.Figure:
    """Each scene as its image, true mask and (unless ``predicted`` is None) predicted
    mask, ``per_row`` scenes side by side; one colour per class (a class named
    ``background`` dark) with the key beside the grid."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(class_names) if class_names is not None else [str(c) for c in range(classes)]
    palette = plt.get_cmap("tab10" if classes <= 11 else "tab20" if classes <= 21 else "nipy_spectral")
    colours, others = [], 0
    for index in range(classes):
        if index < len(names) and names[index] == "background":
            colours.append((0.13, 0.13, 0.13, 1.0))
            continue
        colours.append(palette(others % palette.N) if classes <= 21 else palette(others / max(classes - 1, 1)))
        others += 1
    cmap = ListedColormap(colours)
    panels = [("image", None), ("true", true_masks)] + ([("predicted", predicted)] if predicted is not None else [])
    count, per_row = len(images), max(1, min(per_row, len(images)))
    rows = max(1, int(np.ceil(count / per_row)))
    # Between two scenes a narrow empty column, so each scene's panels read as one group.
    ratios = [r for group in range(per_row) for r in ([0.15] if group else []) + [1.0] * len(panels)]
    figure = plt.figure(figsize=(1.7 * sum(ratios) + 1.6, 1.7 * rows + 0.7), layout="constrained")
    grid = figure.add_gridspec(rows, len(ratios), width_ratios=ratios)
    for index in range(rows * per_row):
        row, group = divmod(index, per_row)
        for column, (name, masks) in enumerate(panels):
            axis = figure.add_subplot(grid[row, group * (len(panels) + 1) + column])
            axis.axis("off")
            if index >= count:
                continue
            if masks is None:
                axis.imshow(np.asarray(images[index]).squeeze(), cmap="gray")
            else:
                axis.imshow(masks[index], cmap=cmap, vmin=-0.5, vmax=classes - 0.5, interpolation="nearest")
            if row == 0:
                axis.set_title(name, fontsize=9)
    shown = set(range(classes)) if classes <= 21 else {int(v) for masks in (true_masks, predicted)
                                                       if masks is not None for v in np.unique(masks[:count])}
    figure.legend(handles=[Patch(facecolor=colours[c], edgecolor="#888", label=names[c] if c < len(names) else
                                 str(c)) for c in sorted(shown) if c < classes],
                  loc="outside right upper", title="class", fontsize=8, title_fontsize=9, frameon=False)
    figure.suptitle(title, fontsize=11)
    return figure


def _short_count(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def accuracy_vs_flops_panels(models: Sequence[Mapping[str, Any]], frontier: Mapping[str, Sequence[str]],
                             title: str) -> plt.Figure:
    """The report's C17 chart: one panel per dataset (models scored on different data
    never share an axis), test accuracy against forward FLOPs per example (log), bubble
    area proportional to the parameter count, one colour per family; the models on the
    dataset's accuracy-per-parameter frontier (``frontier[dataset]``, as
    ``family/model``) are ringed. The accuracy axis is spaced by the log of the error
    (1 - accuracy), so 0.95, 0.98 and 0.99 stand apart and nets at chance keep their
    place at the bottom. Labels sit in a column beside each panel, never on the data or
    on each other, their leader lines under the bubbles; models that sit together share
    one, and models at chance (:func:`_at_chance`) share a dotted line across the panel
    and one label naming them left to right. The key sits below the panels.
    ``models``: dicts with ``family``, ``model``, ``dataset``, ``accuracy``, ``flops``,
    ``params``."""
    import textwrap

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    datasets = sorted({str(row["dataset"]) for row in models})
    families = sorted({str(row["family"]) for row in models})
    colours = {family: plt.get_cmap("tab10")(index % 10) for index, family in enumerate(families)}
    largest = max((float(row["params"]) for row in models), default=1.0)
    floor = 1e-3  # error shown for a perfect score: accuracy 0.999

    def error(row: Mapping[str, Any]) -> float:
        return min(max(1.0 - float(row["accuracy"]), floor), 1.0)

    labels: dict[str, list[tuple[list[Mapping[str, Any]], str, bool]]] = {}  # (rows, text, at chance)
    for dataset in datasets:
        rows = [row for row in models if str(row["dataset"]) == dataset]
        chance = _at_chance(rows)
        labels[dataset] = [(group, "\n".join(f"{r['model']} ({_short_count(float(r['params']))}, "
                                             f"{float(r['accuracy']):.3f})" for r in group), False)
                           for group in _label_groups([r for r in rows if r not in chance], error)]
        if chance:
            named = ", ".join(f"{r['model']} ({_short_count(float(r['params']))})"
                              for r in sorted(chance, key=lambda r: float(r["flops"])))
            labels[dataset].append((chance, textwrap.fill(
                f"at chance, {float(chance[0]['accuracy']):.3f}, on the dotted line left to right: {named}", 48),
                True))
    heights = [max(2.8, 0.3 * sum(text.count("\n") + 1 for _, text, _ in labels[d]) + 1.2) for d in datasets] or [2.8]
    figure, axes = plt.subplots(len(heights), 1, figsize=(12.5, sum(heights) + 1.6), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for axis, dataset in zip(axes[:, 0], datasets, strict=False):
        rows = [row for row in models if str(row["dataset"]) == dataset]
        ringed = set(frontier.get(dataset, ()))
        for row in rows:
            axis.scatter(float(row["flops"]), error(row), s=30 + 1400 * float(row["params"]) / largest,
                         color=colours[str(row["family"])], alpha=0.45, edgecolors="black",
                         linewidths=2.2 if f"{row['family']}/{row['model']}" in ringed else 0.4, zorder=3)
        flops = [float(row["flops"]) for row in rows]
        errors = [error(row) for row in rows]
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlim(min(flops) / 2.5, max(flops) * 2.5)
        low, high = min(errors) / 1.8, min(max(errors) * 1.8, 1.5)
        axis.set_ylim(high, low)  # inverted: better is higher
        ticks = [e for e in (0.9, 0.5, 0.3, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002, 0.001) if low <= e <= high]
        ticks = ticks[::2] if len(ticks) > 6 else ticks
        axis.yaxis.set_major_locator(FixedLocator(ticks))
        axis.yaxis.set_minor_locator(NullLocator())
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{1 - value:.3g}"))
        axis.set_ylabel("test accuracy\n(spaced by log error)")
        axis.set_xlabel("forward FLOPs per example (log scale)")
        axis.set_title(f"{dataset}: {len(rows)} model{'s' if len(rows) != 1 else ''}", fontsize=12, loc="left")
        axis.grid(alpha=0.3, which="major")
        # Labels in a column right of the panel, in the order of their points, spread apart.
        groups = labels[dataset]
        span = np.log(high) - np.log(low)
        wanted = [(np.log(high) - float(np.mean([np.log(error(r)) for r in g]))) / span for g, _, _ in groups]
        heights_in_lines = [text.count("\n") + 1 for _, text, _ in groups]
        unit = min(0.09, 0.98 / max(sum(heights_in_lines), 1))  # axes height per line of label
        order = sorted(range(len(groups)), key=lambda i: -wanted[i])
        placed: dict[int, float] = {}
        previous, previous_lines = 1.0, 0
        for i in order:
            previous = placed[i] = min(wanted[i], previous - unit * (previous_lines + heights_in_lines[i]) / 2)
            previous_lines = heights_in_lines[i]
        shift = max(0.0, unit * heights_in_lines[order[-1]] / 2 - min(placed.values())) if order else 0.0
        for i, (group, text, chance) in enumerate(groups):
            y = float(np.exp(np.mean([np.log(error(r)) for r in group])))
            if chance:
                axis.axhline(y, color="#777", linestyle=":", linewidth=1.2, zorder=1)
                anchor, coords = (1.0, y), ("axes fraction", "data")
            else:
                anchor, coords = (float(np.exp(np.mean([np.log(float(r["flops"])) for r in group]))), y), "data"
            axis.annotate(text, anchor, xycoords=coords, xytext=(1.02, placed[i] + shift),
                          textcoords="axes fraction", fontsize=9, ha="left", va="center",
                          bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#ccc"},
                          arrowprops={"arrowstyle": "-", "color": "#bbb", "lw": 0.6}, zorder=2,
                          annotation_clip=False)
    handles = [axes[0][0].scatter([], [], color=colours[family], alpha=0.6, s=120, label=family)
               for family in families]
    handles.append(axes[0][0].scatter([], [], facecolors="none", edgecolors="black", linewidths=2.2, s=120,
                                      label="on the accuracy-per-parameter frontier"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=11, frameon=False)
    figure.suptitle(textwrap.fill(title, 110), fontsize=12)
    figure.subplots_adjust(left=0.09, right=0.6, top=1 - 0.9 / (sum(heights) + 1.6),
                           bottom=0.75 / (sum(heights) + 1.6) + 0.04, hspace=0.55)
    return figure


def _label_groups(rows: Sequence[Mapping[str, Any]], error: Callable[[Mapping[str, Any]], float]
                  ) -> list[list[Mapping[str, Any]]]:
    """Rows close enough on the chart to share a label (errors within 12% of each other
    and FLOPs within a quarter decade), best first."""
    groups: list[list[Mapping[str, Any]]] = []
    for row in sorted(rows, key=lambda r: (error(r), float(r["flops"]))):
        for group in groups:
            anchor = group[0]
            if abs(np.log10(error(anchor)) - np.log10(error(row))) <= 0.05 and \
                    abs(np.log10(float(anchor["flops"])) - np.log10(float(row["flops"]))) <= 0.25:
                group.append(row)
                break
        else:
            groups.append([row])
    return groups


def _at_chance(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows that share the panel's lowest accuracy (to 3 decimals) when two or more
    do and it is at most 0.5: nets that learned nothing and answer one class for every
    input score the same; none when no two tie so low."""
    if not rows:
        return []
    lowest = min(float(row["accuracy"]) for row in rows)
    tied = [row for row in rows if round(float(row["accuracy"]), 3) == round(lowest, 3)]
    return tied if len(tied) > 1 and lowest <= 0.5 else []


def side_by_side(panels: dict[str, np.ndarray], title: str) -> Any:
    """Images of any sizes in one row, each titled."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4), squeeze=False)
    for axis, (label, image) in zip(axes[0], panels.items(), strict=True):
        pixels = np.asarray(image)
        axis.imshow(pixels if pixels.dtype == np.uint8 else np.clip(pixels, 0.0, 1.0))
        axis.set_title(label, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    return figure
