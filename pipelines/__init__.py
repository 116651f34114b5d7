"""nnzoo pipelines: configs, data, tracking, training and the stages DAGs call.

Importing this package is cheap; TensorFlow, Keras and MLflow are imported only by
the modules that need them.
"""

import os as _os

__version__ = "0.1.0"

# MLflow's usage telemetry (on by default since MLflow 3) sends events to a remote
# endpoint, which nnzoo never calls at run time, and its client thread sets and unsets
# an environment variable while other threads read os.environ (a KeyError in requests,
# seen under load). Off before anything imports mlflow; set it to "false" to keep it.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
