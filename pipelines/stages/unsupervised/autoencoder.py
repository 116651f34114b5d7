"""Autoencoder vs PCA (claim C4): the autoencoder's training, then its test error per
pixel next to PCA's with as many components, reconstructions and a map of the codes."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines import tracking
from pipelines.configs.unsupervised import FAMILY
from pipelines.data.prepared import batches
from pipelines.kit import StepContext, Training, builder_kwargs, say, step_of

CODE_MAP_POINTS = 1000
"""Test images drawn in the 2-D map of autoencoder codes (t-SNE cost grows quickly)."""
METRICS = ("test_mse", "pca_test_mse", "mse_ratio_vs_pca")


def pixels(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] -> float32 [N, H*W*C] in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)


@step_of(FAMILY)
def train_autoencoder(step: StepContext) -> dict[str, Any]:
    """Train the autoencoder (``autoencoder`` section) to reproduce its input (MSE),
    nested under the parent run."""
    from models import build_model
    from pipelines.data.prepared import normalize_images

    typed, data = step.config, step.data
    train_x, val_x = data.split("train")[0], data.split("val")[0]

    def images_to_images(images: np.ndarray, shuffle: bool, batch: int) -> Any:
        return batches(images, batch, shuffle=shuffle, seed=typed.train.seed, batched=lambda x: (x, x))

    return step.train(Training(
        "autoencoder", data=data, examples=len(train_x), fit={"loss": "mse", "metrics": ()},
        build=lambda: build_model("autoencoder", input_shape=data.image_shape, **builder_kwargs(typed.autoencoder)),
        datasets=lambda: (images_to_images(train_x, True, typed.train.batch_size),
                          images_to_images(val_x, False, 512) if len(val_x) else None),
        example=normalize_images(train_x[:4])))


@step_of(FAMILY)
def evaluate_autoencoder(step: StepContext) -> dict[str, Any]:
    """Test reconstruction error per pixel of the autoencoder and of PCA with as many
    components as the bottleneck (fitted on the same training split), in the
    autoencoder's run; reconstructions next to originals; a 2-D map of the codes."""
    from sklearn.decomposition import PCA

    from pipelines import plots

    typed, data = step.config, step.data
    trained = step["train_autoencoder"]
    train_x, _ = data.split("train")
    test_x, test_y = data.split("test")
    flat = pixels(test_x)
    components = typed.autoencoder.bottleneck

    def measure(run: Any) -> dict[str, float]:
        model = tracking.load_keras_model(trained["model_uri"])
        images = flat.reshape(test_x.shape)
        reconstructed = np.asarray(model.predict(images, batch_size=512, verbose=0)).reshape(flat.shape)
        train_pixels = pixels(train_x)
        pca = PCA(n_components=min(components, *train_pixels.shape), random_state=0).fit(train_pixels)
        pca_reconstructed = pca.inverse_transform(pca.transform(flat))
        metrics = {"test_mse": float(np.mean((reconstructed - flat) ** 2)),
                   "pca_test_mse": float(np.mean((np.clip(pca_reconstructed, 0, 1) - flat) ** 2))}
        metrics["mse_ratio_vs_pca"] = metrics["test_mse"] / max(metrics["pca_test_mse"], 1e-12)
        run.log_params({"pca.components": components})
        # One test image per class (the first of each), then the next ten.
        firsts = [int(np.flatnonzero(test_y == label)[0]) for label in range(data.num_classes)
                  if (test_y == label).any()]
        chosen = np.array((firsts + [i for i in range(len(test_y)) if i not in firsts])[:20])
        shape = test_x.shape[1:]
        tracking.log_figure(run.run_id, plots.image_rows(
            {"original": flat[chosen].reshape(-1, *shape),
             f"autoencoder\n{components}-d code": reconstructed[chosen].reshape(-1, *shape),
             f"PCA\n{components} comp.": np.clip(pca_reconstructed[chosen], 0, 1).reshape(-1, *shape)},
            f"Test reconstructions: autoencoder MSE {metrics['test_mse']:.4f}, PCA {metrics['pca_test_mse']:.4f}"),
            "plots/reconstructions.png")
        tracking.log_figure(run.run_id, _code_map(model, images, test_y, data.class_names), "plots/code_map.png")
        return metrics

    metrics = step.evaluate_into(trained["run_id"], METRICS, measure)
    say(f"autoencoder: test MSE/pixel {metrics['test_mse']:.4f} vs PCA-{components} "
        f"{metrics['pca_test_mse']:.4f} (ratio {metrics['mse_ratio_vs_pca']:.3f})")
    return {"metrics": metrics}


def _code_map(model: Any, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> Any:
    from sklearn.manifold import TSNE

    from pipelines import plots

    shown = np.random.default_rng(0).permutation(len(labels))[:CODE_MAP_POINTS]
    codes = np.asarray(model.get_layer("encoder").predict(images[shown], batch_size=512, verbose=0))
    if codes.shape[1] > 2:
        from threadpoolctl import threadpool_limits

        # t-SNE keeps neighbours together, so clusters of digits show; PCA smears them. One
        # thread: on shared cores its OpenMP threads wait for each other far longer than the
        # work takes (1,000 points: about 3 s alone, 10-20 s with two threads on 2 busy cores).
        with threadpool_limits(limits=1, user_api="openmp"):
            flat = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(codes) - 1) / 3), max_iter=500,
                        random_state=0).fit_transform(codes)
        axes, how = ("t-SNE 1", "t-SNE 2"), "t-SNE map"
    elif codes.shape[1] == 2:
        flat, axes, how = codes, ("code 1", "code 2"), "the codes themselves"
    else:
        flat, axes, how = np.column_stack([codes[:, 0], np.zeros(len(codes))]), ("code", ""), "the code"
    return plots.code_map(flat, labels[shown], class_names, f"Autoencoder codes of {len(shown)} test images "
                          f"({codes.shape[1]}-d; {how})", *axes)
