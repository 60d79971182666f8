"""Which sandboxes each host process has open, on disk, so a restart after kill -9 knows.

One append-only file per host process (``<root>/_live/<pid>-<starttime>``): a line
``+ {json}`` when a sandbox opens, ``- instance`` when it closes. A file whose
process is gone (``dead``) lists the sandboxes that died with it; ``Sandboxes.recover``
announces each as closed (``reason="crashed"``), so the hooks give back their
live-sandbox slots and charge their last work, then ``forget``s the file.
Lines are flushed, not fsynced: a power loss may lose the last few, a kill -9 does not.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, IO


def host_tag() -> str:
    """This host process, as ``pid-starttime`` (pids are reused; start times are not)."""
    return f"{os.getpid()}-{start_time(os.getpid())}"


def start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def alive(tag: str) -> bool:
    pid_s, _, start = tag.partition("-")
    return pid_s.isdigit() and start != "" and start_time(int(pid_s)) == start


class LiveJournal:
    """The open sandboxes of this host process, and of dead ones."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: IO[str] | None = None
        self._tag = ""
        self._pid = 0
        self._open: dict[str, str] = {}  # instance -> its "+" line (to compact the file)
        self._lines = 0

    def _out(self) -> IO[str]:
        pid = os.getpid()
        if self._file is None or pid != self._pid:  # a forked child writes its own
            tag = host_tag()  # reads /proc: once per process, not per sandbox
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            self._tag, self._pid = tag, pid
            self._file = open(self.directory / tag, "a", encoding="utf-8")
        return self._file

    def opened(self, instance: str, owner: str, id: str, tier: str) -> None:
        f = self._out()
        line = "+ " + json.dumps({"instance": instance, "owner": owner, "id": id, "tier": tier}) + "\n"
        self._open[instance] = line
        f.write(line)
        f.flush()
        self._lines += 1

    def closed(self, instance: str) -> None:
        f = self._out()
        self._open.pop(instance, None)
        f.write(f"- {instance}\n")
        f.flush()
        self._lines += 1
        if self._lines > 4 * len(self._open) + 10_000:
            self._compact()

    def _compact(self) -> None:
        """Rewrite this host's file with only the open sandboxes (atomically)."""
        assert self._file is not None
        path = self.directory / self._tag
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(self._open.values()), encoding="utf-8")
        self._file.close()
        os.replace(tmp, path)
        self._file = open(path, "a", encoding="utf-8")
        self._lines = len(self._open)

    def dead(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """``(tag, sandboxes still open)`` for each journal whose host process is gone."""
        out: list[tuple[str, list[dict[str, Any]]]] = []
        if not self.directory.is_dir():
            return out
        for path in self.directory.iterdir():
            if path.name == self._tag or path.name.endswith(".tmp") or alive(path.name):
                continue
            open_: dict[str, dict[str, Any]] = {}
            with contextlib.suppress(OSError):
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                    if line.startswith("+ "):
                        with contextlib.suppress(ValueError, KeyError, TypeError):
                            rec = json.loads(line[2:])
                            open_[str(rec["instance"])] = rec
                    elif line.startswith("- "):
                        open_.pop(line[2:].strip(), None)
            out.append((path.name, list(open_.values())))
        return out

    def forget(self, tag: str) -> None:
        with contextlib.suppress(OSError):
            (self.directory / tag).unlink()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


__all__ = ["LiveJournal", "alive", "host_tag", "start_time"]
