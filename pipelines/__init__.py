"""nnzoo pipelines: configs, data, tracking, training and the stages DAGs call.

Importing this package is cheap; TensorFlow, Keras and MLflow are imported only by
the modules that need them.
"""

__version__ = "0.1.0"
