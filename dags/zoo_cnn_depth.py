"""Airflow DAG of the CNN depth family (claims C1, C2, C3, C7, C8, C17); the steps are
declared in :mod:`pipelines.configs.cnn_depth`."""

from pipelines.configs.cnn_depth import FAMILY
from pipelines.dagbuilder import build_dag

dag = build_dag(FAMILY)
