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


def lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str,
          *, log_x: bool = False, log_y: bool = False) -> plt.Figure:
    """Named ``(x, y)`` series on one chart, e.g. training error per epoch of several nets."""
    figure, axis = plt.subplots(figsize=(6.6, 4.4))
    for index, (label, (xs, ys)) in enumerate(series.items()):
        axis.plot(list(xs), list(ys), marker="o", markersize=3, color=plt.get_cmap("tab10")(index % 10), label=label)
    if log_x:
        axis.set_xscale("log")
    if log_y:
        axis.set_yscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
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


def segmentations(images: np.ndarray, true_masks: np.ndarray, predicted: np.ndarray, classes: int,
                  title: str) -> plt.Figure:
    """Columns: image, true mask, predicted mask (one colour per class, background dark)."""
    figure, axes = plt.subplots(len(images), 3, figsize=(7.5, 2.5 * len(images) + 0.5), squeeze=False)
    for row in range(len(images)):
        for column, (picture, name) in enumerate(((images[row].squeeze(), "image"), (true_masks[row], "true"),
                                                  (predicted[row], "predicted"))):
            axis = axes[row, column]
            axis.axis("off")
            if column:
                axis.imshow(picture, cmap="tab20" if classes <= 20 else "nipy_spectral", vmin=0, vmax=max(classes, 20) - 1,
                            interpolation="nearest")
            else:
                axis.imshow(picture, cmap="gray")
            if row == 0:
                axis.set_title(name, fontsize=9)
    figure.suptitle(title)
    figure.tight_layout()
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
    place at the bottom; labels sit in a column beside each panel, never on each other,
    and models that sit together share one. ``models``: dicts with ``family``,
    ``model``, ``dataset``, ``accuracy``, ``flops``, ``params``."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    datasets = sorted({str(row["dataset"]) for row in models})
    families = sorted({str(row["family"]) for row in models})
    colours = {family: plt.get_cmap("tab10")(index % 10) for index, family in enumerate(families)}
    largest = max((float(row["params"]) for row in models), default=1.0)
    floor = 1e-3  # error shown for a perfect score: accuracy 0.999

    def error(row: Mapping[str, Any]) -> float:
        return min(max(1.0 - float(row["accuracy"]), floor), 1.0)

    grouped = {d: _label_groups([r for r in models if str(r["dataset"]) == d], error) for d in datasets}
    heights = [max(2.8, 0.3 * sum(min(len(g), 3) for g in grouped[d]) + 1.2) for d in datasets] or [2.8]
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
        groups = grouped[dataset]
        span = np.log(high) - np.log(low)
        wanted = [(np.log(high) - np.log(float(np.exp(np.mean([np.log(error(r)) for r in g]))))) / span
                  for g in groups]
        texts = []
        for group in groups:
            names = [f"{r['model']} ({_short_count(float(r['params']))}, {float(r['accuracy']):.3f})" for r in group]
            texts.append("\n".join(names if len(names) <= 2 else [*names[:2], f"+{len(names) - 2} more"]))
        lines = [text.count("\n") + 1 for text in texts]
        unit = min(0.09, 0.98 / max(sum(lines), 1))  # axes height per line of label
        order = sorted(range(len(groups)), key=lambda i: -wanted[i])
        placed: dict[int, float] = {}
        previous, previous_lines = 1.0, 0
        for i in order:
            previous = placed[i] = min(wanted[i], previous - unit * (previous_lines + lines[i]) / 2)
            previous_lines = lines[i]
        shift = max(0.0, unit * lines[order[-1]] / 2 - min(placed.values())) if order else 0.0
        for i, group in enumerate(groups):
            x = float(np.exp(np.mean([np.log(float(r["flops"])) for r in group])))
            y = float(np.exp(np.mean([np.log(error(r)) for r in group])))
            text = texts[i]
            axis.annotate(text, (x, y), xytext=(1.02, placed[i] + shift), textcoords="axes fraction", fontsize=9,
                          ha="left", va="center",
                          bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#ccc", "alpha": 0.9},
                          arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.6}, zorder=4, annotation_clip=False)
    handles = [axes[0][0].scatter([], [], color=colours[family], alpha=0.6, s=80, label=family) for family in families]
    handles.append(axes[0][0].scatter([], [], facecolors="none", edgecolors="black", linewidths=2.2, s=80,
                                      label="on the accuracy-per-parameter frontier"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=10, frameon=False)
    import textwrap

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
