"""Airflow DAG of the style-transfer family (claims C13, C14: iterative vs feed-forward
stylisation); the steps are declared in :mod:`pipelines.configs.style_transfer`."""

from pipelines.configs.style_transfer import FAMILY
from pipelines.dagbuilder import build_dag

dag = build_dag(FAMILY)
