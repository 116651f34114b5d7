"""Errors a user can act on. The CLI prints them as one line without a traceback (exit
2 for bad values, 1 for the rest); inside a run they end the MLflow run FAILED with the
message as its ``nnzoo.failure_reason``; in an Airflow task the message is the task
log's last line, and a bad value fails the task without retries (a retry cannot fix it).
"""


class NnzooError(Exception):
    """Base of the errors that carry a message meant for the user."""


class BadValueError(NnzooError, ValueError):
    """A value the user chose (a param, a file, a registry version) cannot work: the
    message names the value and says what was expected."""


class StoreUnavailableError(NnzooError, RuntimeError):
    """A store (MLflow tracking server, artifact or data folder) cannot be used."""
