"""CPU time of a whole process, finer than ``/proc/<pid>/stat``'s 10 ms ticks."""

from __future__ import annotations

import os


def process_cpu_s(pid: int) -> float:
    """CPU seconds of every thread of ``pid``, in ns resolution from each thread's
    ``schedstat`` (``/proc/<pid>/stat`` counts 10 ms ticks: +-7 % on a 100-turn block)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        total = 0
    if total:
        return total / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads


__all__ = ["process_cpu_s"]
