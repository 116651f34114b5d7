"""Unsupervised family: autoencoder vs PCA; RBMs pretrained greedily into a DBN and
fine-tuned with few labels against random init; RBM features on scikit-learn's
protocol. The steps are declared in :mod:`pipelines.configs.unsupervised`; one module
per experiment here, and the comparison and registration in :mod:`.report`.

MLflow: ``prepare_data`` (the kit's) opens one parent run per pipeline run; every
training is a run nested under it; ``compare`` logs the comparison table and plot on
the parent and the kit's ``finish`` ends it (FAILED, naming the failed steps, if
something failed).
"""

from pipelines.stages.unsupervised.autoencoder import evaluate_autoencoder, pixels, train_autoencoder
from pipelines.stages.unsupervised.dbn import finetune, plan_finetuning, pretrain_rbm_layer
from pipelines.stages.unsupervised.rbm_features import evaluate_rbm_features
from pipelines.stages.unsupervised.report import compare, format_table, register, summarize

__all__ = ["compare", "evaluate_autoencoder", "evaluate_rbm_features", "finetune", "format_table", "pixels",
           "plan_finetuning", "pretrain_rbm_layer", "register", "summarize", "train_autoencoder"]

