"""Who a worker is: ``machine#pid``, and whether a process on this machine is still alive.

The machine part (host name, MAC address, boot id) tells a dead process on this
machine (noticed at once by :func:`harness.study.reap`) from a worker elsewhere
(noticed when its heartbeat goes stale).
"""
from __future__ import annotations

import contextlib
import os
import socket
import uuid
from pathlib import Path


def _machine_id() -> str:
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    return f"{socket.gethostname()}/{uuid.getnode():012x}/{boot}"


MACHINE = _machine_id()


def worker_id() -> str:
    """``machine#pid`` of this process (machine = host name, MAC address, boot id)."""
    return f"{MACHINE}#{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine (or cannot be signalled: someone else's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
