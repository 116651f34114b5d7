"""The unsupervised family's comparison (DBN vs random init by share of labels, with the
autoencoder's and RBM features' figures on the parent run) and its registrations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipelines import tracking
from pipelines.configs.unsupervised import FAMILY, INITS
from pipelines.kit import StepContext, step_of


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (fraction, init): mean, sample standard deviation, min, max over seeds; and
    per fraction the paired DBN - random difference (same seed = same labels)."""
    rows = []
    for fraction in sorted({float(r["fraction"]) for r in results}):
        paired: dict[str, dict[int, float]] = {}
        for init in INITS:
            values = [float(r["test_accuracy"]) for r in results if float(r["fraction"]) == fraction
                      and r["init"] == init]
            paired[init] = {int(r["seed"]): float(r["test_accuracy"]) for r in results
                            if float(r["fraction"]) == fraction and r["init"] == init}
            if not values:
                continue
            rows.append({"fraction": fraction, "init": init, "seeds": len(values),
                         "labelled_examples": max(int(r["labelled_examples"]) for r in results
                                                  if float(r["fraction"]) == fraction),
                         "mean": float(np.mean(values)),
                         "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                         "min": float(np.min(values)), "max": float(np.max(values))})
        common = sorted(set(paired.get("dbn", {})) & set(paired.get("random", {})))
        if common:
            gains = [paired["dbn"][s] - paired["random"][s] for s in common]
            rows.append({"fraction": fraction, "init": "dbn - random (paired)", "seeds": len(gains),
                         "mean": float(np.mean(gains)),
                         "std": float(np.std(gains, ddof=1)) if len(gains) > 1 else 0.0,
                         "min": float(np.min(gains)), "max": float(np.max(gains)),
                         "dbn_wins": int(sum(g > 0 for g in gains))})
    return rows


def fewest_labels_gain(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Claim C6's figures: the paired DBN - random gain at the smallest share of labels
    with a paired row (mean and sample sd over seeds) and that share; nothing without a
    paired row."""
    paired = [row for row in rows if "dbn_wins" in row]
    if not paired:
        return {}
    fewest = min(paired, key=lambda row: row["fraction"])
    return {"finetune_gain_fewest_labels_mean": fewest["mean"], "finetune_gain_fewest_labels_std": fewest["std"],
            "finetune_fewest_labels_fraction": fewest["fraction"]}


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| labels | init | seeds | mean | std | min | max |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        share = f"{row['fraction']:.0%}" + (f" ({row['labelled_examples']})" if "labelled_examples" in row else "")
        wins = f" (DBN better in {row['dbn_wins']}/{row['seeds']})" if "dbn_wins" in row else ""
        lines.append(f"| {share} | {row['init']}{wins} | {row['seeds']} | {row['mean']:+.4f} | {row['std']:.4f} | "
                     f"{row['min']:+.4f} | {row['max']:+.4f} |" if "dbn_wins" in row else
                     f"| {share} | {row['init']} | {row['seeds']} | {row['mean']:.4f} | {row['std']:.4f} | "
                     f"{row['min']:.4f} | {row['max']:.4f} |")
    return "\n".join(lines)


@step_of(FAMILY)
def compare(step: StepContext) -> dict[str, Any]:
    """DBN vs random init by label fraction (mean, spread, paired difference): table
    and plot on the parent run, with the autoencoder's and RBM-feature figures; the gain
    at the fewest labels (C6) as ``finetune_gain_fewest_labels_mean`` / ``_std``."""
    from pipelines import plots

    typed = step.config
    results = step.mapped("finetune", "no fine-tuning results: check finetune.label_fractions and seeds")
    rows = summarize(results)
    table = format_table(rows)
    metrics: dict[str, float] = {}
    for row in rows:
        init = "gain" if "dbn_wins" in row else row["init"]
        metrics[f"finetune_{init}_{row['fraction']:g}_mean"] = row["mean"]
        metrics[f"finetune_{init}_{row['fraction']:g}_std"] = row["std"]
    metrics.update(fewest_labels_gain(rows))
    for key, value in step["evaluate_autoencoder"]["metrics"].items():
        metrics[f"autoencoder_{key}"] = value
    for key, value in (step["evaluate_rbm_features"].get("metrics") or {}).items():
        if key.endswith("accuracy"):
            metrics[key] = value
    step.report(metrics, name="finetune", data={"rows": rows, "results": results},
                text=f"# DBN vs random init, test accuracy by share of labels ({typed.profile})\n\n{table}\n",
                figures={"plots/accuracy_vs_labels.png": plots.accuracy_vs_labels(
                    results, "Fine-tuning from DBN pretraining vs random init "
                    f"({'-'.join(str(units) for units in typed.rbm.layers)} sigmoid units)")})
    return {"rows": rows, "table": table}


@step_of(FAMILY)
def register(step: StepContext) -> dict[str, Any]:
    """Register (once per run) and promote: the autoencoder (lower test MSE is better),
    the best DBN-initialised classifier on the largest label share (test accuracy),
    and each RBM layer (validation pseudo-likelihood)."""
    decisions = {"autoencoder": step.register("autoencoder", step["train_autoencoder"], "test_mse",
                                              step["evaluate_autoencoder"]["metrics"]["test_mse"],
                                              higher_is_better=False)}
    results = step.get("finetune") or []
    largest = max((float(r["fraction"]) for r in results), default=None)
    candidates = [r for r in results if r["init"] == "dbn" and float(r["fraction"]) == largest and r["model_uri"]]
    if candidates:
        best = max(candidates, key=lambda r: (r["test_accuracy"], -r["seed"]))
        decisions["dbn"] = step.register("dbn", best, "test_accuracy", best["test_accuracy"])
    for layer in step["pretrain_rbm_layer"]["stack"]:
        run = tracking.get_run(layer["run_id"])
        value = run.data.metrics.get("val_pseudo_likelihood", run.data.metrics.get("pseudo_likelihood"))
        if value is None or not math.isfinite(value):
            raise ValueError(f"rbm layer {layer['layer']} (run {layer['run_id']}) has no pseudo-likelihood logged")
        decisions[f"rbm-layer-{layer['layer']}"] = step.register(f"rbm-layer-{layer['layer']}", layer,
                                                                 "val_pseudo_likelihood", value)
    return {"versions": decisions}
