"""Task logs: without false alarms, and for `make run`'s tasks too.

An Airflow 3 task's stderr becomes ERROR lines in its log. TensorFlow's C++ runtime
writes its start-up notes there (``oneDNN custom operations are on``, CPU feature
hints, ``All log messages before absl::InitializeLog() ...``) before any setting can
silence them (``TF_CPP_MIN_LOG_LEVEL`` no longer does in this TensorFlow). Inside a
task, :func:`route_native_stderr` passes file descriptor 2 through a filter: the
runtime's informational and warning lines go to stdout (INFO in the task log),
everything else, its errors included, still goes to stderr.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from pathlib import Path
from typing import Any

# glog/absl lines: severity letter, MMDD, time, thread, file:line]. I and W are notes;
# E and F are errors and stay on stderr.
_NOTE = re.compile(rb"^(?:[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
                   rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                   rb"|To enable the following instructions: .* rebuild TensorFlow)")

_state: dict[str, object] = {}


def is_runtime_note(line: bytes) -> bool:
    """Whether a stderr line is a TensorFlow/absl informational or warning note."""
    return bool(_NOTE.match(line))


def route_native_stderr() -> bool:
    """Filter fd 2 of this process as described above (once; True if installed now)."""
    if "thread" in _state:
        return False
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    os.write(1 if is_runtime_note(line) else original, line + b"\n")
            if pending:
                os.write(1 if is_runtime_note(pending) else original, pending)

    thread = threading.Thread(target=pump, name="nnzoo-stderr-filter", daemon=True)
    thread.start()
    _state.update(thread=thread, original=original)
    atexit.register(restore_stderr)
    return True


def restore_stderr(timeout: float = 5.0) -> None:
    """Put the original stderr back and let the filter pass on what it still holds."""
    thread, original = _state.pop("thread", None), _state.pop("original", None)
    if thread is None or original is None:
        return
    import sys

    sys.stderr.flush()
    os.dup2(original, 2)  # closes the pipe's last write end: the pump sees end of file
    thread.join(timeout)  # type: ignore[attr-defined]
    os.close(original)


# --- task logs of `airflow dags test` ----------------------------------------------------
#
# `airflow dags test` runs every task inside its own process and writes what the tasks
# say to its output, not to the task log files the Airflow UI shows. `make run` passes
# that output through :class:`DagTestLogs`, which cuts it at the runner's "[DAG TEST]
# starting task_id=... map_index=..." lines into one file per task try, where and how
# the api-server reads task logs (JSON lines under ``[logging] base_log_folder``, named
# by Airflow's default ``log_filename_template``).

_STARTING = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
_RUNNING = re.compile(r"\[DAG TEST\] running task <TaskInstance: (\S+?)\.(\S+) (\S+) (?:map_index=-?\d+ )?\[")
_ENDED = re.compile(r"\[DAG TEST\] end task task_id=")
_STRUCTURED = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z) \[(\w+)\s*\] (.*)$")


def task_log_path(base: Path, dag_id: str, run_id: str, task_id: str, map_index: int, attempt: int) -> Path:
    """Where Airflow's default ``log_filename_template`` puts a task try's log."""
    mapped = f"map_index={map_index}/" if map_index >= 0 else ""
    return base / f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/{mapped}attempt={attempt}.log"


def log_record(line: str, last_timestamp: str | None) -> dict[str, str]:
    """A line of output as a record of Airflow's JSON task log: its own timestamp and
    level when it has them (Airflow's lines), else the last timestamp seen, level info."""
    match = _STRUCTURED.match(line)
    if match:
        return {"timestamp": match[1], "level": match[2].lower(), "event": match[3]}
    record = {"level": "info", "event": line}
    if last_timestamp:
        record["timestamp"] = last_timestamp
    return record


class DagTestLogs:
    """Feed it ``airflow dags test``'s output line by line; it writes each task try's
    lines to its Airflow log file as they come (a UI open meanwhile shows them live)."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.tries: dict[tuple[str, int], int] = {}
        self.pending: tuple[str, int] | None = None
        self.held: list[str] = []
        self.file: Any = None
        self.timestamp: str | None = None
        self.written: list[Path] = []

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        match = _STRUCTURED.match(line)
        if match:
            self.timestamp = match[1]
        if (started := _STARTING.search(line)) is not None:
            self.close()
            self.pending = (started[1], int(started[2]))
            self.held = [line]
            return
        if self.pending is not None:
            self.held.append(line)
            running = _RUNNING.search(line)
            if running is not None:
                self._open(running[1], running[3])
            return
        if self.file is not None:
            self._write(line)
            if _ENDED.search(line):
                self.close()

    def _open(self, dag_id: str, run_id: str) -> None:
        assert self.pending is not None
        task_id, map_index = self.pending
        attempt = self.tries.get(self.pending, 0) + 1
        self.tries[self.pending] = attempt
        path = task_log_path(self.base, dag_id, run_id, task_id, map_index, attempt)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w")  # noqa: SIM115 - closed at the task's end or by close()
        self.written.append(path)
        self.pending = None
        for held in self.held:
            self._write(held)
        self.held = []

    def _write(self, line: str) -> None:
        import json

        self.file.write(json.dumps(log_record(line, self.timestamp)) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.pending, self.held = None, []
