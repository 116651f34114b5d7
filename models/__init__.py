"""Keras 3 model builders, one module per family. Pure Keras: no MLflow, no Airflow,
no file I/O. Builders register themselves by name (:mod:`models.registry`)."""

from models.registry import build_model, get_builder, model_names, register_model

__all__ = ["build_model", "get_builder", "model_names", "register_model"]
