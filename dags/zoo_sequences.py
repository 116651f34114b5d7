"""Airflow DAG of the sequence family (claims C15, C16: RNN vs LSTM vs GRU, one- vs
bidirectional); the steps are declared in :mod:`pipelines.configs.sequences`."""

from pipelines.configs.sequences import FAMILY
from pipelines.dagbuilder import build_dag

dag = build_dag(FAMILY)
