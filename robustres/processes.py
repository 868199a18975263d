"""Is a process alive, and when did it start: how claims and temporary files tell a dead
writer's litter from a live one's (Linux /proc where it exists)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux), so that a recycled pid is not
    mistaken for the process that wrote a claim. None where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
