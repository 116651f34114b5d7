"""Errors a user can act on. The CLI prints them as one line (exit 2 for bad
values, 1 for the rest); inside a run they end the MLflow run FAILED with the
message as its ``nnzoo.failure_reason``."""


class NnzooError(Exception):
    """Base of the errors that carry a message meant for the user."""


class StoreUnavailableError(NnzooError, RuntimeError):
    """A store (MLflow tracking server, artifact or data folder) cannot be used."""
