"""Resource limits of container sandboxes: cgroup v2, cgroup v1, or rlimits only.

Each backend is registered by name in ``BACKENDS``; ``pick(name)`` returns the
first that works on this machine for ``"auto"``. A backend makes one ``Group``
per sandbox. bwrap is started blocked (``--block-fd``): the host moves its
processes into the group (``attach``) *before* the sandboxed command runs, so
nothing it forks can start outside the limits; rlimits are set by a ``prlimit``
wrapper in front of bwrap (``rlimit_args``). Both keep the host on the cheap vfork
spawn path (no ``preexec_fn``, which would copy the whole host process).

What each limit relies on:

=========  ============================  ============================  =======================
limit      v2                            v1                            rlimit (floor)
=========  ============================  ============================  =======================
memory     memory.max (+swap.max 0)      memory.limit_in_bytes         RLIMIT_AS per process
cpu        cpu.max                       cpu.cfs_quota_us              (none)
pids       pids.max                      pids.max                      RLIMIT_NPROC (not as root)
pause      cgroup.freeze                 freezer.state                 (unavailable)
kill all   cgroup.kill                   freeze + SIGKILL each pid     pid namespace teardown
=========  ============================  ============================  =======================
"""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path
from typing import Callable, Protocol

from myriad.errors import SandboxUnavailable
from myriad.sandbox.interface import Limits

_CPU_PERIOD_US = 100_000


class Group(Protocol):
    """The limits of one sandbox."""

    backend: str

    def attach(self, pids: list[int]) -> None:
        """Move blocked, not yet running processes into the group."""
        ...

    def rlimit_args(self) -> list[str]:
        """Options for ``prlimit`` run in front of bwrap (inherited by everything in the sandbox)."""
        ...

    def pids(self) -> list[int]:
        """Host pids of every process in the group (empty when unknown)."""
        ...

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def kill_all(self) -> None:
        """SIGKILL every process in the group and wait until it is empty."""
        ...

    def destroy(self) -> None:
        """Kill what is left and remove the group; idempotent."""
        ...

    def memory_bytes(self) -> int: ...

    def oom_kills(self) -> int: ...

    def cpu_ns(self) -> int | None:
        """CPU time used by every process ever in the group, in ns (``None``: not measurable)."""
        ...


class Backend(Protocol):
    name: str

    def available(self) -> str | None:
        """``None`` when usable here, else why not."""
        ...

    def create(self, name: str, limits: Limits) -> Group: ...

    def orphans(self) -> list[str]:
        """Names of groups under our parent (for the sweep on start)."""
        ...

    def remove(self, name: str) -> None:
        """Kill and remove a group by name (sweep)."""
        ...

    def cpu_ns(self, name: str) -> int | None:
        """The CPU counter of a group by name (the sweep charges what a dead host did not)."""
        ...


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text()
    except OSError:
        return default


def _floor_rlimits() -> list[str]:
    """No core dumps and a sane descriptor cap, whatever the backend."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    return ["--core=0", f"--nofile={want}"]


def _mounts(fstype: str) -> list[tuple[str, set[str]]]:
    """(mount point, super options) of every mount of ``fstype``."""
    out: list[tuple[str, set[str]]] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        parts = right.split()
        if len(parts) >= 3 and parts[0] == fstype:
            out.append((left.split()[4], set(parts[2].split(","))))
    return out


def _kill_pids(read_pids: Callable[[], list[int]], deadline_s: float = 5.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        pids = read_pids()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


# -- cgroup v1 ------------------------------------------------------------------------


class _V1Group:
    backend = "v1"

    def __init__(self, dirs: dict[str, Path], limits: Limits) -> None:
        self.dirs = dirs
        self.limits = limits

    def attach(self, pids: list[int]) -> None:
        for pid in pids:
            for d in self.dirs.values():
                _write(d / "cgroup.procs", str(pid))

    def rlimit_args(self) -> list[str]:
        return _floor_rlimits()

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.dirs["pids"] / "cgroup.procs").split()]

    def freeze(self) -> None:
        d = self.dirs["freezer"]
        _write(d / "freezer.state", "FROZEN")
        end = time.monotonic() + 5
        while _read(d / "freezer.state").strip() != "FROZEN" and time.monotonic() < end:
            time.sleep(0.002)

    def thaw(self) -> None:
        _write(self.dirs["freezer"] / "freezer.state", "THAWED")

    def kill_all(self) -> None:
        # Freeze first so nothing forks while we kill, then thaw so SIGKILL lands.
        try:
            self.freeze()
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            self.thaw()
        _kill_pids(self.pids)

    def destroy(self) -> None:
        if not self.dirs["pids"].exists():
            return
        self.kill_all()
        for d in self.dirs.values():
            for _ in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)

    def memory_bytes(self) -> int:
        return int(_read(self.dirs["memory"] / "memory.usage_in_bytes", "0").strip() or 0)

    def cpu_ns(self) -> int | None:
        d = self.dirs.get("cpuacct")
        raw = _read(d / "cpuacct.usage").strip() if d is not None else ""
        return int(raw) if raw.isdigit() else None

    def oom_kills(self) -> int:
        for line in _read(self.dirs["memory"] / "memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return int(_read(self.dirs["memory"] / "memory.failcnt", "0").strip() or 0)


class CgroupV1:
    """Legacy hierarchies, one mount per controller (memory, pids, cpu, freezer)."""

    name = "v1"
    controllers = ("memory", "pids", "cpu", "freezer")
    optional = ("cpuacct",)  # the CPU counter that meters every CPU-second (often co-mounted with cpu)

    def __init__(self, parent: str = "myriad-sandboxes") -> None:
        self.parent = parent

    def _roots(self) -> dict[str, Path]:
        roots: dict[str, Path] = {}
        for point, opts in _mounts("cgroup"):
            for c in self.controllers + self.optional:
                if c in opts and c not in roots:
                    roots[c] = Path(point)
        return roots

    def available(self) -> str | None:
        roots = self._roots()
        missing = [c for c in self.controllers if c not in roots]
        if missing:
            return f"cgroup v1 controllers not mounted: {', '.join(missing)}"
        for c, root in roots.items():
            if not os.access(root, os.W_OK):
                return f"cgroup v1 {c} hierarchy at {root} is not writable (run as root or delegate it)"
        return None

    def create(self, name: str, limits: Limits) -> _V1Group:
        roots = self._roots()
        dirs = {c: roots[c] / self.parent / name for c in self.controllers + self.optional if c in roots}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        if limits.memory_mb:
            mem = int(limits.memory_mb) * 1024 * 1024
            _write(dirs["memory"] / "memory.limit_in_bytes", str(mem))
            if (dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
                try:
                    _write(dirs["memory"] / "memory.memsw.limit_in_bytes", str(mem))
                except OSError:
                    pass
        if limits.pids:
            _write(dirs["pids"] / "pids.max", str(int(limits.pids)))
        if limits.cpu:
            _write(dirs["cpu"] / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(max(1000, int(limits.cpu * _CPU_PERIOD_US))))
        return _V1Group(dirs, limits)

    def orphans(self) -> list[str]:
        roots = self._roots()
        base = roots.get("pids")
        if base is None or not (base / self.parent).is_dir():
            return []
        return [p.name for p in (base / self.parent).iterdir() if p.is_dir()]

    def remove(self, name: str) -> None:
        roots = self._roots()
        _V1Group({c: roots[c] / self.parent / name for c in self.controllers + self.optional if c in roots},
                 Limits()).destroy()

    def cpu_ns(self, name: str) -> int | None:
        root = self._roots().get("cpuacct")
        if root is None or not (root / self.parent / name).is_dir():
            return None
        return _V1Group({"cpuacct": root / self.parent / name}, Limits()).cpu_ns()


# -- cgroup v2 ------------------------------------------------------------------------


class _V2Group:
    backend = "v2"

    def __init__(self, path: Path) -> None:
        self.path = path

    def attach(self, pids: list[int]) -> None:
        for pid in pids:
            _write(self.path / "cgroup.procs", str(pid))

    def rlimit_args(self) -> list[str]:
        return _floor_rlimits()

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.path / "cgroup.procs").split()]

    def freeze(self) -> None:
        _write(self.path / "cgroup.freeze", "1")
        end = time.monotonic() + 5
        while "frozen 1" not in _read(self.path / "cgroup.events") and time.monotonic() < end:
            time.sleep(0.002)

    def thaw(self) -> None:
        _write(self.path / "cgroup.freeze", "0")

    def kill_all(self) -> None:
        if (self.path / "cgroup.kill").exists():
            _write(self.path / "cgroup.kill", "1")
        _kill_pids(self.pids)

    def destroy(self) -> None:
        if not self.path.exists():
            return
        self.kill_all()
        for _ in range(200):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.005)

    def memory_bytes(self) -> int:
        return int(_read(self.path / "memory.current", "0").strip() or 0)

    def cpu_ns(self) -> int | None:
        for line in _read(self.path / "cpu.stat").splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) * 1000
        return None

    def oom_kills(self) -> int:
        for line in _read(self.path / "memory.events").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0


class CgroupV2:
    """The unified hierarchy; needs the memory, pids and cpu controllers delegated to us."""

    name = "v2"
    controllers = ("memory", "pids", "cpu")

    def __init__(self, parent: str = "myriad-sandboxes") -> None:
        self.parent = parent

    def _root(self) -> Path | None:
        mounts = _mounts("cgroup2")
        return Path(mounts[0][0]) if mounts else None

    def available(self) -> str | None:
        root = self._root()
        if root is None:
            return "no cgroup2 mount"
        have = set(_read(root / "cgroup.controllers").split())
        missing = [c for c in self.controllers if c not in have]
        if missing:
            return f"cgroup v2 at {root} lacks controllers: {', '.join(missing)}"
        if not os.access(root, os.W_OK):
            return f"cgroup v2 at {root} is not writable (run as root or delegate a subtree)"
        return None

    def _parent_dir(self) -> Path:
        root = self._root()
        assert root is not None
        parent = root / self.parent
        parent.mkdir(parents=True, exist_ok=True)
        enable = " ".join(f"+{c}" for c in self.controllers)
        levels = [root] + [root.joinpath(*Path(self.parent).parts[: i + 1]) for i in range(len(Path(self.parent).parts))]
        for d in levels:  # every level down to the parent delegates the controllers
            if not set(self.controllers) <= set(_read(d / "cgroup.subtree_control").split()):
                _write(d / "cgroup.subtree_control", enable)
        return parent

    def create(self, name: str, limits: Limits) -> _V2Group:
        path = self._parent_dir() / name
        path.mkdir(exist_ok=True)
        if limits.memory_mb:
            _write(path / "memory.max", str(int(limits.memory_mb) * 1024 * 1024))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
        if limits.pids:
            _write(path / "pids.max", str(int(limits.pids)))
        if limits.cpu:
            _write(path / "cpu.max", f"{max(1000, int(limits.cpu * _CPU_PERIOD_US))} {_CPU_PERIOD_US}")
        return _V2Group(path)

    def orphans(self) -> list[str]:
        root = self._root()
        if root is None or not (root / self.parent).is_dir():
            return []
        return [p.name for p in (root / self.parent).iterdir() if p.is_dir()]

    def remove(self, name: str) -> None:
        root = self._root()
        if root is not None:
            _V2Group(root / self.parent / name).destroy()

    def cpu_ns(self, name: str) -> int | None:
        root = self._root()
        if root is None or not (root / self.parent / name).is_dir():
            return None
        return _V2Group(root / self.parent / name).cpu_ns()


# -- rlimits only ---------------------------------------------------------------------


class _RlimitGroup:
    backend = "rlimit"

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def attach(self, pids: list[int]) -> None:
        return None

    def rlimit_args(self) -> list[str]:
        args = _floor_rlimits()
        if self.limits.memory_mb:
            args.append(f"--as={int(self.limits.memory_mb) * 1024 * 1024}")
        if self.limits.pids:
            args.append(f"--nproc={int(self.limits.pids)}")
        return args

    def pids(self) -> list[int]:
        return []

    def freeze(self) -> None:
        raise SandboxUnavailable("pause needs the cgroup freezer, which this machine does not give Myriad")

    thaw = freeze

    def kill_all(self) -> None:
        return None  # the sandbox kills its bwrap processes; their pid namespaces die with them

    def destroy(self) -> None:
        return None

    def memory_bytes(self) -> int:
        return 0

    def oom_kills(self) -> int:
        return 0

    def cpu_ns(self) -> int | None:
        return None


class Rlimits:
    """No cgroups: per-process rlimits only (the floor)."""

    name = "rlimit"

    def __init__(self, parent: str = "myriad-sandboxes") -> None:
        self.parent = parent

    def available(self) -> str | None:
        return None

    def create(self, name: str, limits: Limits) -> _RlimitGroup:
        return _RlimitGroup(limits)

    def orphans(self) -> list[str]:
        return []

    def remove(self, name: str) -> None:
        return None

    def cpu_ns(self, name: str) -> int | None:
        return None


BACKENDS: dict[str, type[CgroupV1] | type[CgroupV2] | type[Rlimits]] = {"v2": CgroupV2, "v1": CgroupV1, "rlimit": Rlimits}


def pick(name: str = "auto", parent: str = "myriad-sandboxes") -> Backend:
    """The backend called ``name``, or for ``auto`` the first of v2, v1, rlimit that works here."""
    if name != "auto":
        cls = BACKENDS.get(name)
        if cls is None:
            raise SandboxUnavailable(f"unknown cgroup backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
        backend = cls(parent)
        why = backend.available()
        if why:
            raise SandboxUnavailable(f"cgroup backend {name} unavailable: {why}")
        return backend
    for cls in BACKENDS.values():
        backend = cls(parent)
        if backend.available() is None:
            return backend
    return Rlimits(parent)


__all__ = ["BACKENDS", "Backend", "Group", "CgroupV1", "CgroupV2", "Rlimits", "pick"]
