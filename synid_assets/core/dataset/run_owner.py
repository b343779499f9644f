"""Which process owns a run, and whether that process still lives (Dagster-free).

A run records its owner as run tags when it starts: the host name, the pid and the process start
identity (boot id plus start time in clock ticks, from /proc on Linux). The start identity tells a live
owner from an unrelated process that got the same pid later, after the owner died or the machine
rebooted. Liveness can only be judged on the owner's own host; elsewhere it is unknown.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

HOST_TAG = "synid/host"
PID_TAG = "synid/pid"
PROCESS_START_TAG = "synid/process_start"


def _process_start(pid: int) -> str | None:
    """'<boot id>/<start ticks>' of a live Linux process, None where /proc does not say."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counts from the field after the command name, which may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    return f"{boot_id}/{fields[19]}" if len(fields) > 19 else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@dataclass(frozen=True)
class RunOwner:
    host: str
    pid: int
    process_start: str | None = None

    @classmethod
    def current(cls) -> RunOwner:
        return cls.of_process(os.getpid())

    @classmethod
    def of_process(cls, pid: int) -> RunOwner:
        """The owner identity of a process of this host."""
        return cls(socket.gethostname(), pid, _process_start(pid))

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> RunOwner | None:
        """The owner recorded in a run's tags, None when the run has none (or they are malformed)."""
        host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
        if not host or not pid or not pid.isdigit():
            return None
        return cls(host, int(pid), tags.get(PROCESS_START_TAG) or None)

    def tags(self) -> dict[str, str]:
        tags = {HOST_TAG: self.host, PID_TAG: str(self.pid)}
        if self.process_start:
            tags[PROCESS_START_TAG] = self.process_start
        return tags

    def is_local(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool | None:
        """True/False on the owner's host; None on another host, where this process cannot tell."""
        if not self.is_local():
            return None
        if not _pid_exists(self.pid):
            return False
        if self.process_start is None:
            return True
        current = _process_start(self.pid)
        # A different start identity under the same pid: the owner died and the pid was reused.
        return current is None or current == self.process_start

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}"
