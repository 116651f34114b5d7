"""MLflow's tracking server as ``nnzoo ui`` serves it: ``mlflow server --app-name nnzoo``.

MLflow 3.17's UI opens every experiment in its GenAI view (traces, evaluations) unless
the URL says ``workflowType=machine_learning`` or the browser remembers the sidebar's
switch (``localStorage["mlflow.workflowType_v1"]``); the experiment's
``mlflow.experimentKind`` tag does not change that in this version. nnzoo's experiments
are model training, so this app is MLflow's own ASGI app with one difference: its
start page sets that remembered choice to the model-training view *when the browser has
none yet*, so an experiment opened from MLflow's own lists, a run page or the registry
shows runs, metrics and models. A user who flips the switch keeps their choice.
"""

from __future__ import annotations

import json
from typing import Any

from mlflow.server.fastapi_app import app as mlflow_app

WORKFLOW_KEY = "mlflow.workflowType_v1"
DEFAULT_WORKFLOW = "machine_learning"
_KEY, _VALUE = json.dumps(WORKFLOW_KEY), json.dumps(json.dumps(DEFAULT_WORKFLOW))
SCRIPT = (f"<script>try{{if(!localStorage.getItem({_KEY}))localStorage.setItem({_KEY},{_VALUE})}}"
          "catch(e){}</script>").encode()


def with_default_view(html: bytes) -> bytes:
    """The start page with the default-view script first in its ``<head>``."""
    index = html.find(b"<head>")
    if index < 0:
        return SCRIPT + html
    index += len(b"<head>")
    return html[:index] + SCRIPT + html[index:]


class DefaultViewMiddleware:
    """ASGI middleware: rewrites HTML responses of GET ``/`` (the UI's start page)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "GET" or scope.get("path") not in ("/", ""):
            await self.inner(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body = bytearray()

        async def buffered(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body"):
                return
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            content = bytes(body)
            if any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                content = with_default_view(content)
            headers.append((b"content-length", str(len(content)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": content})

        await self.inner(scope, receive, buffered)


app = DefaultViewMiddleware(mlflow_app)
