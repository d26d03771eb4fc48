"""fastload's one worker framework: fresh worker interpreters, the report of a worker that
died, and one transport for work, values and errors. No pickle: work is named
(``"module:qualname"``), values travel as JSON with raw byte attachments, errors as JSON
reports rebuilt into their class (pickle would let a message run code, and ties both ends to
the same class layouts).

Modules: ``process`` (spawn, stop, death report), ``channel`` (bytes and messages on pipes),
``codec`` (values as JSON), ``failures`` (errors as JSON), ``names`` (``"module:qualname"``),
``ordered`` (the ordered map of pack, inspect and sample; its worker is ``map_worker``), ``slots``
(shared-memory slots the workers inherit). The DALI feed's pool (``fastload.backends.dali.pool``)
and the host stage's processes (``host_pool``) run on ``process``, ``channel`` and ``slots``.
"""

from .channel import read_exact, read_message, send_message, write_all
from .failures import error_report, rebuild_error
from .names import reference, resolve
from .ordered import default_workers, ordered_map
from .process import WorkerProcess, spawn, stop, worker_stdio

__all__ = [
    "WorkerProcess", "default_workers", "error_report", "ordered_map", "read_exact", "read_message",
    "rebuild_error", "reference", "resolve", "send_message", "spawn", "stop", "worker_stdio", "write_all",
]
