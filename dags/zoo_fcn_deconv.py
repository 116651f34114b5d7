"""Airflow DAG of the FCN and deconvolution family (claims C9-C12: a classifier's dense
head as convolutions, heatmaps and boxes, learned-upsampling segmentation, a generator
from class + pose); the steps are declared in :mod:`pipelines.configs.fcn_deconv`."""

from pipelines.configs.fcn_deconv import FAMILY
from pipelines.dagbuilder import build_dag

dag = build_dag(FAMILY)
