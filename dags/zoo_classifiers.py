"""Airflow DAG of the classifiers family, built from its one pipeline declaration in
pipelines/configs/classifiers.py (steps, what each consumes, what is mapped, what trains).
The task graph, trigger form and task docs shown in the UI all come from there."""

from pipelines.configs.classifiers import FAMILY
from pipelines.dagbuilder import build_dag

dag = build_dag(FAMILY)
