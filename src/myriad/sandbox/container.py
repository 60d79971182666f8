"""The container tier: bubblewrap namespaces + cgroups, for coding agents.

A ``ContainerSandbox`` (process plumbing in ``processes.py``) is a directory on the host (``<root>/<id>/`` with
``workspace/`` and ``tmp/``), a cgroup (``cgroups.py``) and the processes it runs.
Each ``exec`` or background process is one ``bwrap`` (``bwrap.py``) joining the
sandbox's cgroup before it execs, so the namespaces are fresh per process while the
files, limits and freezer are the sandbox's. A command's leftover children die with
it (its pid namespace ends when it exits); ``start_process`` is for long runners.

Life: ``idle_timeout`` and ``max_lifetime`` are enforced by ``Sandboxes``'s reaper;
``close`` kills everything in the cgroup, removes it and the directory.
``--die-with-parent`` takes the processes down if the host dies, and
``ContainerTier.sweep`` (on start) removes what a dead host left on disk and in
the cgroup tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from myriad.errors import Conflict, InvalidRequest, NotFound, SandboxError, SandboxTimeout, SandboxUnavailable
from myriad.sandbox import bwrap as _bwrap
from myriad.sandbox import cgroups, disk, seccomp
from myriad.sandbox.copying import check_tree, copy_tree
from myriad.sandbox.egress import Attachment, EgressPolicy, EgressProxy, proxy_env
from myriad.sandbox.events import NO_HOOKS, CloseReason, Hooks, SandboxEvent
from myriad.sandbox.journal import alive as _alive
from myriad.sandbox.journal import host_tag as _host_tag
from myriad.sandbox.files import FileInfo, Workspace
from myriad.sandbox.processes import BackgroundProcess, Capture, ProcessInfo, feed, kill, pump, read_pipe
from myriad.sandbox.interface import Limits, OutputCallback, RunResult, SandboxInfo

RUNNERS: dict[str, list[str]] = {
    "sh": ["/bin/sh", "-c"],
    "bash": ["/bin/bash", "-c"],
    "python": ["python3", "-c"],
    "javascript": ["node", "-e"],
    "js": ["node", "-e"],
}
MAX_PROCESSES = 64


class ContainerSandbox:
    """A bubblewrap sandbox with a persistent workspace."""

    tier = "container"
    capabilities = frozenset({"filesystem", "binaries", "shell", "processes", "network", "git", "python",
                              "javascript", "snapshot", "pause"})
    events: Hooks = NO_HOOKS
    """Where this sandbox announces its operations (``Sandboxes`` sets its own)."""

    def __init__(self, tier: "ContainerTier", *, id: str, owner: str, limits: Limits, group: cgroups.Group,
                 network: EgressPolicy | None, uid: int | None = None, dirname: str | None = None,
                 instance: str = "", base: Path | None = None) -> None:
        self._tier = tier
        self.id = id
        self.owner = owner
        self.limits = limits
        self.group = group
        self.network = network
        self.dir = tier.root / (dirname or id)
        base = base or self.dir  # the quota'd file system (disk.py) holding workspace/ and tmp/
        self.workspace_dir = base / "workspace"
        self.tmp_dir = base / "tmp"
        self.uid = uid
        """Host uid the sandbox runs as (``None``: Myriad's own, when not root)."""
        self.files = Workspace(self.workspace_dir, owner=uid)
        self.created_at = time.time()
        self.last_used_at = self.created_at
        self.status = "running"
        self._live: set[asyncio.subprocess.Process] = set()
        self._attachments: set[Attachment] = set()
        self._processes: dict[str, BackgroundProcess] = {}
        self._next_process = 0
        self.cgroup_name = ""
        self.instance = instance
        self._cpu_reported_ns = 0
        self._cpu_lock = threading.Lock()

    def _event(self, kind: Any, **fields: Any) -> SandboxEvent:
        return SandboxEvent(kind, owner=self.owner, sandbox_id=self.id, tier=self.tier, instance=self.instance,
                            limits=self.limits, sandbox=self, **fields)

    def take_cpu_ms(self) -> float | None:
        """CPU (ms) every process of the sandbox used since the last call, from the cgroup's
        counter (background processes and killed commands included); ``None`` without one.
        The reported total is kept in ``meta.json``, so work done before a crash is still
        charged when the next host sweeps the sandbox."""
        with self._cpu_lock:
            total = self.group.cpu_ns()
            if total is None:
                return None
            delta = max(0, total - self._cpu_reported_ns)
            if delta:
                self._cpu_reported_ns = total
                _update_meta(self.dir, cpu_reported_ns=total)
            return delta / 1e6

    # -- state --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.status == "closed"

    def touch(self) -> None:
        self.last_used_at = time.time()

    def _usable(self) -> None:
        if self.status == "closed":
            raise SandboxError(f"sandbox {self.id} is closed")
        if self.status == "paused":
            raise Conflict(f"sandbox {self.id} is paused; resume it first")
        self.touch()

    def expiry_reason(self, now: float) -> str | None:
        """Why the reaper should delete this sandbox now, or ``None``."""
        if self.limits.max_lifetime and now - self.created_at > self.limits.max_lifetime:
            return f"reached its maximum lifetime of {self.limits.max_lifetime:g} s"
        if self.limits.idle_timeout and now - self.last_used_at > self.limits.idle_timeout:
            return f"idle for more than {self.limits.idle_timeout:g} s"
        return None

    def info(self) -> SandboxInfo:
        return SandboxInfo(
            id=self.id, tier=self.tier, owner=self.owner, status=self.status, created_at=self.created_at,
            last_used_at=self.last_used_at, limits=self.limits.to_json(), capabilities=sorted(self.capabilities),
            network=self.network.to_json() if self.network else None,
        )

    def memory_bytes(self) -> int:
        return self.group.memory_bytes()

    # -- spawning -----------------------------------------------------------------------

    async def _spawn(self, argv: list[str], env: dict[str, str] | None, cwd: str | None,
                     stdin: bool) -> tuple[asyncio.subprocess.Process, Attachment | None]:
        """Start ``bwrap ... -- argv`` blocked, put it in the cgroup (and the network), then release it."""
        full_env = _bwrap.base_env(env)
        if self.network is not None:
            full_env.update(proxy_env())
        child_fds: list[int] = []
        info_r = block_w = -1
        try:
            ws_fd = os.open(self.workspace_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            child_fds.append(ws_fd)
            tmp_fd = os.open(self.tmp_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            child_fds.append(tmp_fd)
            args = self._tier.layout.argv(workspace_fd=ws_fd, tmp_fd=tmp_fd, cwd=_bwrap.check_cwd(cwd), env=full_env)
            if self._tier.seccomp_program:
                r, w = os.pipe()
                os.write(w, self._tier.seccomp_program)
                os.close(w)
                child_fds.append(r)
                args += ["--seccomp", str(r)]
            info_r, info_w = os.pipe()
            block_r, block_w = os.pipe()
            child_fds += [info_w, block_r]
            args += ["--info-fd", str(info_w), "--block-fd", str(block_r)]
            # As root, bwrap runs as the sandbox's own unprivileged uid (setpriv keeps
            # the vfork spawn path; a preexec_fn would force a full fork of the host).
            prefix = ["prlimit", *self.group.rlimit_args(), *self._tier.disk.rlimit_args(self.limits.disk_mb), "--"]
            if self.uid is not None:
                prefix += ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]
            try:
                proc = await asyncio.create_subprocess_exec(
                    *prefix, self._tier.bwrap, *args, "--", *argv,
                    stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    pass_fds=[*child_fds, *self._tier.layout.fds], start_new_session=True, env={},
                )
            except Exception as e:
                raise SandboxError(f"could not start a process in sandbox {self.id}: {e}") from None
        except BaseException:
            for fd in (info_r, block_w):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        attachment = None
        try:
            raw = await read_pipe(info_r)
            info_r = -1  # owned (and closed) by the pipe transport now
            if not raw:
                err = (await proc.stderr.read()).decode(errors="replace").strip() if proc.stderr else ""
                raise SandboxError(f"bubblewrap failed to start in sandbox {self.id}: {err or 'no detail'}")
            child = int(json.loads(raw)["child-pid"])
            # Only the sandbox's pid 1: what it forks inherits the group. (Each cgroup
            # migration costs an RCU grace period; bwrap's outer monitor stays outside,
            # it is killed through ``proc`` and dies with pid 1 anyway.)
            try:
                try:
                    self.group.attach([child])
                except FileNotFoundError:  # the group was removed under us: make it again
                    backend = self._tier.backend
                    assert backend is not None
                    self.group = await asyncio.to_thread(backend.create, self.cgroup_name, self.limits)
                    self.group.attach([child])
            except OSError as e:
                detail = ""
                if proc.stderr is not None:
                    with contextlib.suppress(Exception):
                        detail = (await asyncio.wait_for(proc.stderr.read(), 2)).decode(errors="replace").strip()
                raise SandboxError(f"could not put sandbox {self.id}'s process into its cgroup ({e}); "
                                   f"bubblewrap said: {detail or 'nothing'}") from None
            if self.network is not None:
                attachment = await self._tier.egress.attach(child, self.network, sandbox_id=self.id, owner=self.owner)
                self._attachments.add(attachment)
            os.write(block_w, b"1")
        except BaseException:
            kill(proc)
            if attachment is not None:
                attachment.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.communicate(), 5)
            raise
        finally:
            if info_r >= 0:
                os.close(info_r)
            os.close(block_w)
        return proc, attachment

    @staticmethod
    def _argv(cmd: str | Sequence[str]) -> list[str]:
        if isinstance(cmd, str):
            if not cmd.strip():
                raise InvalidRequest("command is empty")
            return ["/bin/sh", "-c", cmd]
        argv = list(cmd)
        if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
            raise InvalidRequest("command must be a string or a non-empty list of strings")
        return argv

    def _timeout(self, timeout: float | None) -> float:
        cap = self.limits.timeout or 30.0
        if timeout is None:
            return cap
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidRequest(f"timeout must be a positive number of seconds, got {timeout!r}")
        return min(float(timeout), cap)

    # -- exec ---------------------------------------------------------------------------

    async def exec(self, cmd: str | Sequence[str], *, timeout: float | None = None, env: dict[str, str] | None = None,
                   cwd: str | None = None, stdin: bytes | str | None = None,
                   on_output: OutputCallback | None = None) -> RunResult:
        """Run a command to completion (a string runs under ``/bin/sh -c``).

        Output is captured up to ``limits.output_bytes`` per stream and, if given,
        streamed to ``on_output(stream, chunk)``. Past ``timeout`` the command and
        everything it started are killed and ``SandboxTimeout`` is raised with the
        partial output in its details. A process killed at the memory limit shows
        in ``RunResult.error``.
        """
        return await self._exec("exec", cmd, timeout=timeout, env=env, cwd=cwd, stdin=stdin, on_output=on_output)

    async def _exec(self, kind: Any, cmd: str | Sequence[str], *, timeout: float | None = None,
                    env: dict[str, str] | None = None, cwd: str | None = None, stdin: bytes | str | None = None,
                    on_output: OutputCallback | None = None, language: str | None = None) -> RunResult:
        argv = self._argv(cmd)
        self._usable()
        wall = self._timeout(timeout)
        async with self.events.around(self._event(kind, timeout=wall, language=language)) as event:
            started = time.perf_counter()
            try:
                event.result = await self._run_process(argv, wall, {**event.env, **(env or {})} if event.env else env,
                                                       cwd, stdin, on_output)
                return event.result  # type: ignore[no-any-return]
            finally:
                event.wall_ms = (time.perf_counter() - started) * 1000
                event.cpu_ms = await asyncio.to_thread(self.take_cpu_ms)

    async def _run_process(self, argv: list[str], wall: float, env: dict[str, str] | None, cwd: str | None,
                           stdin: bytes | str | None, on_output: OutputCallback | None) -> RunResult:
        limit = int(self.limits.output_bytes or 1_048_576)
        ooms = self.group.oom_kills()
        started = time.perf_counter()
        proc, attachment = await self._spawn(argv, env, cwd, stdin is not None)
        self._live.add(proc)
        out, err = Capture(limit), Capture(limit)
        work = asyncio.gather(pump(proc.stdout, out, "stdout", on_output), pump(proc.stderr, err, "stderr", on_output),
                              feed(proc, stdin), proc.wait())
        try:
            await asyncio.wait_for(work, wall)
        except asyncio.TimeoutError:
            kill(proc)
            await proc.wait()
            raise SandboxTimeout(
                f"command ran longer than the {wall:g} s limit and was killed",
                details={"stdout": out.text(), "stderr": err.text()},
            ) from None
        except BaseException:
            kill(proc)
            raise
        finally:
            self._live.discard(proc)
            if attachment is not None:
                attachment.close()
                self._attachments.discard(attachment)
            self.touch()
        code = proc.returncode if proc.returncode is not None else -1
        error = None
        if self.group.oom_kills() > ooms:
            error = f"out of memory: a process was killed at the {self.limits.memory_mb} MiB limit"
        return RunResult(stdout=out.text(), stderr=err.text(), exit_code=code, duration_ms=round((time.perf_counter() - started) * 1000, 3),
                         truncated=out.truncated or err.truncated, error=error)

    async def run(self, code: str, *, language: str | None = None, timeout: float | None = None) -> RunResult:
        """Run a snippet: shell by default, or ``python`` / ``javascript`` / ``bash``."""
        runner = RUNNERS.get(language or "sh")
        if runner is None:
            raise InvalidRequest(f"unknown language {language!r}; choose one of {', '.join(RUNNERS)}")
        return await self._exec("run", [*runner, code], timeout=timeout, language=language or "sh")

    async def git_clone(self, url: str, path: str = "repo", *, ref: str | None = None, depth: int | None = None,
                        timeout: float | None = None) -> RunResult:
        """``git clone`` (and check out ``ref``) inside the sandbox; network goes through the proxy."""
        if not isinstance(url, str) or url.startswith("-") or not url:
            raise InvalidRequest("url must be a repository URL")
        async with self.events.around(self._event("git_clone")):
            return await self._git_clone(url, path, ref=ref, depth=depth, timeout=timeout)

    async def _git_clone(self, url: str, path: str, *, ref: str | None, depth: int | None,
                         timeout: float | None) -> RunResult:
        dest = path if path.startswith("/") else f"/workspace/{path}"
        argv = ["git", "clone", "--quiet"]
        if depth:
            argv += ["--depth", str(int(depth))]
        argv += ["--", url, dest]
        res = await self.exec(argv, timeout=timeout)
        if res.exit_code == 0 and ref:
            res = await self.exec(["git", "-C", dest, "checkout", "--quiet", ref], timeout=timeout)
        return res

    # -- background processes -----------------------------------------------------------

    async def start_process(self, cmd: str | Sequence[str], *, env: dict[str, str] | None = None,
                            cwd: str | None = None) -> ProcessInfo:
        """Start a long-running process; it lives until it exits, is killed or the sandbox goes."""
        argv = self._argv(cmd)
        self._usable()
        if sum(1 for p in self._processes.values() if p.proc.returncode is None) >= MAX_PROCESSES:
            raise Conflict(f"sandbox {self.id} already runs {MAX_PROCESSES} background processes")
        async with self.events.around(self._event("start_process")) as event:
            event.result = await self._start_process(argv, {**event.env, **(env or {})} if event.env else env, cwd)
            return event.result  # type: ignore[no-any-return]

    async def _start_process(self, argv: list[str], env: dict[str, str] | None, cwd: str | None) -> ProcessInfo:
        proc, attachment = await self._spawn(argv, env, cwd, False)
        self._next_process += 1
        bp = BackgroundProcess(f"proc_{self._next_process}", argv, proc, attachment, int(self.limits.output_bytes or 1_048_576))
        self._processes[bp.id] = bp
        self._live.add(proc)

        async def watch() -> None:
            try:
                await asyncio.gather(pump(proc.stdout, bp.stdout, "stdout", None), pump(proc.stderr, bp.stderr, "stderr", None), proc.wait())
            finally:
                bp.ended_at = time.time()
                self._live.discard(proc)
                if attachment is not None:
                    attachment.close()
                    self._attachments.discard(attachment)

        bp.task = asyncio.ensure_future(watch())
        return bp.info()

    def list_processes(self) -> list[ProcessInfo]:
        return [p.info() for p in self._processes.values()]

    def _process(self, pid: str) -> BackgroundProcess:
        p = self._processes.get(pid)
        if p is None:
            raise NotFound(f"sandbox {self.id} has no process {pid!r}")
        return p

    def process_logs(self, pid: str) -> dict[str, Any]:
        """The tail of a background process's stdout and stderr."""
        p = self._process(pid)
        self.touch()
        return {"id": p.id, "stdout": p.stdout.text(), "stderr": p.stderr.text(),
                "truncated": p.stdout.truncated or p.stderr.truncated, "status": p.info().status}

    async def wait_process(self, pid: str, timeout: float | None = None) -> ProcessInfo:
        p = self._process(pid)
        async with self.events.around(self._event("wait_process", timeout=timeout)):
            return await self._wait_process(p, timeout)

    async def _wait_process(self, p: BackgroundProcess, timeout: float | None) -> ProcessInfo:
        if p.task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(p.task), timeout)
        return p.info()

    async def kill_process(self, pid: str) -> ProcessInfo:
        """Kill a background process and everything it started."""
        p = self._process(pid)
        self.touch()
        async with self.events.around(self._event("kill_process")):
            if p.proc.returncode is None:
                p.killed = True
                kill(p.proc)
                if p.task is not None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(p.task), 5)
            return p.info()

    # -- files --------------------------------------------------------------------------

    async def read_file(self, path: str) -> bytes:
        self._usable()
        async with self.events.around(self._event("read_file")):
            return await asyncio.to_thread(self.files.read, path)

    async def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> int:
        self._usable()
        async with self.events.around(self._event("write_file")):
            return await asyncio.to_thread(self.files.write, path, data, mode)

    async def list_files(self, path: str = ".", recursive: bool = False) -> list[FileInfo]:
        self._usable()
        async with self.events.around(self._event("list_files")):
            return await asyncio.to_thread(self.files.list, path, recursive)

    async def mkdir(self, path: str) -> None:
        self._usable()
        async with self.events.around(self._event("mkdir")):
            await asyncio.to_thread(self.files.mkdir, path)

    async def delete_file(self, path: str, recursive: bool = False) -> None:
        self._usable()
        async with self.events.around(self._event("delete_file")):
            await asyncio.to_thread(self.files.delete, path, recursive)

    async def exists(self, path: str) -> bool:
        self._usable()
        async with self.events.around(self._event("exists")):
            return await asyncio.to_thread(self.files.exists, path)

    # -- pause, snapshot ----------------------------------------------------------------

    async def pause(self) -> None:
        """Freeze every process of the sandbox (cgroup freezer)."""
        if self.status == "closed":
            raise SandboxError(f"sandbox {self.id} is closed")
        if self.status == "paused":
            return
        async with self.events.around(self._event("pause")):
            await asyncio.to_thread(self.group.freeze)
            self.status = "paused"
        self.touch()

    async def resume(self) -> None:
        if self.status != "paused":
            return
        async with self.events.around(self._event("resume")):
            await asyncio.to_thread(self.group.thaw)
            self.status = "running"
        self.touch()

    async def _snapshot_to(self, dest: Path) -> None:
        """Copy the workspace to ``dest`` with the sandbox frozen (no file can change mid-copy)."""
        if self.status == "closed":
            raise SandboxError(f"sandbox {self.id} is closed")
        def copy() -> None:
            check_tree(self.workspace_dir)  # a fifo, socket or device: a clean 409 before any copy
            copy_tree(self.workspace_dir, dest)

        async with self._frozen():
            await asyncio.to_thread(copy)
        self.touch()

    async def _restore_from(self, src: Path) -> None:
        """Replace the workspace with the snapshot at ``src``."""
        self._usable()

        def replace() -> None:
            for entry in os.scandir(self.workspace_dir):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            copy_tree(src, self.workspace_dir, dirs_exist_ok=True)
            if self.uid is not None:
                chown_tree(self.workspace_dir, self.uid)

        async with self._frozen():
            await asyncio.to_thread(replace)

    @contextlib.asynccontextmanager
    async def _frozen(self) -> Any:
        froze = False
        if self.status == "running" and self.group.backend != "rlimit":
            await asyncio.to_thread(self.group.freeze)
            froze = True
        try:
            yield
        finally:
            if froze:
                await asyncio.to_thread(self.group.thaw)

    # -- the end ------------------------------------------------------------------------

    async def close(self, *, reason: CloseReason = "deleted") -> None:
        """Kill every process, remove the cgroup and the sandbox's directory; idempotent."""
        if self.status == "closed":
            return
        self.status = "closed"
        async with self.events.around(self._event("close", reason=reason)) as event:
            await self._close()
            event.cpu_ms = self._final_cpu_ms

    async def _close(self) -> None:
        self._final_cpu_ms: float | None = None
        for proc in list(self._live):
            kill(proc)
        for a in list(self._attachments):
            a.close()

        def destroy() -> None:
            self.group.kill_all()
            self._final_cpu_ms = self.take_cpu_ms()  # after the kill: nothing runs any more
            self.group.destroy()

        await asyncio.to_thread(destroy)
        await asyncio.to_thread(self._tier.disk.release, self.dir)
        for proc in list(self._live):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
        for p in self._processes.values():
            if p.task is not None:
                p.task.cancel()
        await asyncio.to_thread(shutil.rmtree, self.dir, True)


def _update_meta(directory: Path, **fields: Any) -> None:
    meta = directory / "meta.json"
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return
    data.update(fields)
    tmp = meta.with_name("meta.json.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(data))
        os.replace(tmp, meta)


def chown_tree(path: Path, uid: int) -> None:
    """Give a copied tree to the sandbox's uid (never following symlinks)."""
    os.chown(path, uid, uid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


def _untraversable(path: Path) -> Path | None:
    """The first ancestor of ``path`` that other users cannot walk through, if any."""
    for p in [path.resolve(), *path.resolve().parents]:
        if not os.stat(p).st_mode & 0o001:
            return p
    return None


FALLBACK_ROOT = Path("/var/lib/myriad/sandboxes")


def _drop_to(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


@dataclass
class Swept:
    """A sandbox whose host died, as the sweep found it."""

    id: str
    owner: str
    instance: str
    cpu_ms: float | None
    """CPU its cgroup used after the last charge (``None``: no counter)."""


class ContainerTier:
    """Makes ``ContainerSandbox``es under ``root`` (sweeping what dead hosts left there)."""

    name = "container"
    weight = 100
    capabilities = ContainerSandbox.capabilities

    def __init__(self, settings: Any, root: Path, egress: EgressProxy | None = None, explicit_root: bool = True) -> None:
        self.settings = settings
        self.root = Path(root)
        self.explicit_root = explicit_root
        self.egress = egress or EgressProxy()
        self.tag = _host_tag()
        self._checked = False
        self.bwrap = ""
        self.layout: Any = None
        self.backend: cgroups.Backend | None = None
        self.seccomp_program: bytes | None = None
        self.privileged = False
        self.cgroup_prefix = ""
        self.disk: disk.DiskQuota = disk.FileSizeOnly()
        self.swept: list[Swept] = []
        """What the sweep on start removed (``Sandboxes.recover`` announces them)."""

    def check(self) -> None:
        """Verify bwrap works here (once); pick the cgroup backend; sweep leftovers."""
        if self._checked:
            return
        self.bwrap = _bwrap.bwrap_path()
        self.root.mkdir(parents=True, exist_ok=True)
        self.privileged = os.geteuid() == 0
        if self.privileged:
            # bwrap runs as each sandbox's unprivileged uid and must walk to its
            # directories: traversable (0711), never listable.
            os.chmod(self.root, 0o711)
            blocked = _untraversable(self.root)
            if blocked is not None and not self.explicit_root:
                # The default <data_dir>/sandboxes sits under a private directory (e.g.
                # /root): keep this host's sandboxes under a traversable system path.
                digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:12]
                self.root = FALLBACK_ROOT / digest
                self.root.mkdir(parents=True, exist_ok=True)
                for p in (FALLBACK_ROOT.parent, FALLBACK_ROOT, self.root):
                    os.chmod(p, 0o711)
                blocked = _untraversable(self.root)
            if blocked is not None:
                raise SandboxUnavailable(
                    f"the sandbox root {self.root} is not reachable by the unprivileged sandbox users: {blocked} lacks "
                    "o+x (chmod o+x it, or set sandbox.root / MYRIAD_SANDBOX__ROOT to a directory whose parents are "
                    "traversable)"
                )
        else:
            os.chmod(self.root, 0o700)
        self.layout = _bwrap.Layout(getattr(self.settings, "base", "host"), self.root)
        self.layout.prepare()
        probe_uid = int(getattr(self.settings, "uid_base", 200_000)) if self.privileged else None
        for tool in ("prlimit", "setpriv") if self.privileged else ("prlimit",):
            if shutil.which(tool) is None:
                raise SandboxUnavailable(f"{tool} not installed (it sets the sandbox's rlimits / uid): apt-get install util-linux")
        _bwrap.probe(self.bwrap, self.layout, preexec=(lambda: _drop_to(probe_uid)) if probe_uid is not None else None)
        # Cgroups are shared by every host on the machine (some may live in other pid
        # namespaces, where our pids look dead): this root's sandboxes live under their
        # own <cgroup_parent>/<hash of the root>, and only that subtree is ever swept.
        self.cgroup_prefix = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:12]
        parent = f"{getattr(self.settings, 'cgroup_parent', 'myriad-sandboxes')}/{self.cgroup_prefix}"
        self.backend = cgroups.pick(getattr(self.settings, "cgroup", "auto"), parent)
        if getattr(self.settings, "seccomp", True):
            self.seccomp_program = seccomp.program()
        self.disk = disk.pick(getattr(self.settings, "disk", "auto"), templates=self.root / "_images")
        self._checked = True
        self.sweep()

    def sweep(self) -> list[str]:
        """Remove sandboxes (directories and cgroups) whose host process is gone. Returns their ids."""
        assert self.backend is not None
        removed = []
        for entry in self.root.iterdir() if self.root.is_dir() else []:
            if entry.name.startswith("_") or not entry.is_dir():
                continue
            try:
                meta = json.loads((entry / "meta.json").read_text())
            except (OSError, ValueError):
                meta = {}
            tag = meta.get("host", "")
            if tag and (tag == self.tag or _alive(tag)):
                continue
            cpu_ms = None
            if meta.get("cgroup"):
                with contextlib.suppress(OSError, ValueError):
                    used = self.backend.cpu_ns(meta["cgroup"])
                    if used is not None:
                        cpu_ms = max(0, used - int(meta.get("cpu_reported_ns", 0))) / 1e6
                with contextlib.suppress(OSError):
                    self.backend.remove(meta["cgroup"])
            with contextlib.suppress(OSError):
                self.disk.release(entry)  # never delete through a live mount
            if os.path.ismount(entry / disk.MOUNT):
                continue  # still busy: the next sweep tries again
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
            if meta.get("id"):
                instance = str(meta.get("instance") or entry.name.rpartition(".")[2])
                self.swept.append(Swept(str(meta["id"]), str(meta.get("owner", "")), instance, cpu_ms))
        for name in self.backend.orphans():  # this root's subtree only
            tag = name.split(".", 1)[0]
            if tag != self.tag and not _alive(tag):
                with contextlib.suppress(OSError):
                    self.backend.remove(name)
        return removed

    async def create(self, *, id: str, owner: str, limits: Limits, network: EgressPolicy | None = None,
                     from_dir: Path | None = None, **options: Any) -> ContainerSandbox:
        self.check()
        assert self.backend is not None
        if network is not None and not self.privileged:
            raise SandboxUnavailable("sandbox network egress needs Myriad to run as root "
                                     "(the proxy enters each sandbox's network namespace)")
        # ids are per owner; on disk and in the cgroup tree each sandbox gets a unique name
        instance = str(options.get("instance") or secrets.token_hex(6))
        dirname = f"{id}.{instance}"
        d = self.root / dirname
        cgroup_name = f"{self.tag}.{dirname}"
        uid = int(getattr(self.settings, "uid_base", 200_000)) + secrets.randbelow(65536) if self.privileged else None

        def setup() -> tuple[cgroups.Group, Path]:
            d.mkdir(mode=0o711 if uid is not None else 0o700)
            os.chmod(d, 0o711 if uid is not None else 0o700)
            (d / "meta.json").write_text(json.dumps({"id": id, "owner": owner, "host": self.tag, "cgroup": cgroup_name,
                                                     "uid": uid, "created_at": time.time(), "instance": instance,
                                                     "cpu_reported_ns": 0}))
            base = self.disk.create(d, limits.disk_mb, uid) if limits.disk_mb else d
            if from_dir is not None:
                copy_tree(from_dir, base / "workspace")
            else:
                (base / "workspace").mkdir()
            (base / "tmp").mkdir(mode=0o700)
            if uid is not None:
                chown_tree(base / "workspace", uid)
                os.chown(base / "tmp", uid, uid)
            return self.backend.create(cgroup_name, limits), base  # type: ignore[union-attr]

        def undo() -> None:
            with contextlib.suppress(OSError):
                self.disk.release(d)
            shutil.rmtree(d, ignore_errors=True)

        try:
            group, base = await asyncio.to_thread(setup)
        except OSError as e:
            await asyncio.to_thread(undo)
            raise SandboxUnavailable(f"could not set up sandbox {id}: {e}") from None
        except BaseException:
            await asyncio.to_thread(undo)
            raise
        sandbox = ContainerSandbox(self, id=id, owner=owner, limits=limits, group=group, network=network, uid=uid,
                                   dirname=dirname, instance=instance, base=base)
        sandbox.cgroup_name = cgroup_name
        return sandbox

    async def aclose(self) -> None:
        await self.egress.aclose()
        if self.layout is not None:
            self.layout.close()
            self._checked = False


__all__ = ["ContainerSandbox", "ContainerTier", "ProcessInfo", "RUNNERS"]
