"""Airflow DAG of the toy family, built from its pipeline declaration."""

from pipelines.configs.toy import FAMILY
from pipelines.dagbuilder import build_dag

dag = build_dag(FAMILY)
