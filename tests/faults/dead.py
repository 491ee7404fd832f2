"""A process identity whose process is dead: what a SIGKILLed run leaves in its claims and temporary names."""

from __future__ import annotations

import signal
import socket
import subprocess
from typing import Any

from cgaug.storage.fs import host_tag, start_ticks


def dead_owner() -> dict[str, Any]:
    """The identity (as `process_identity` records it) of a process that was just SIGKILLed and reaped."""
    proc = subprocess.Popen(["sleep", "60"])
    start = start_ticks(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"host": socket.gethostname(), "host_tag": host_tag(), "pid": proc.pid, "start": start}


def temp_token(owner: dict[str, Any]) -> str:
    """The owner part of a temporary name (``.name.tmp-<token>-<uuid>``) written by `owner`."""
    return f"{owner['host_tag']}.{owner['pid']}.{owner['start']}"
