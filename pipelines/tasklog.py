"""Task logs without false alarms.

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
