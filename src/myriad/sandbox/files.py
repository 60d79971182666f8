"""Host-side file access to a sandbox workspace that cannot be walked out of.

Sandboxed code controls the workspace, so any path in it may be a symlink to
``/etc/shadow`` or a FIFO that blocks a reader. Every lookup here goes through
``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` relative to an open
descriptor of the workspace: ``..`` and symlinks are resolved *inside* it, race
free, so the host never touches a file outside. Files are opened non-blocking and
must be regular files. Where ``openat2`` is missing (Linux < 5.6) the API refuses
to work rather than fall back to a racy check.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import shutil
import stat
from dataclasses import asdict, dataclass
from typing import Any

from myriad.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, SandboxLimitExceeded, SandboxUnavailable

_SYS_OPENAT2 = 437  # the same number on every architecture (added in 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
MOUNT_POINT = "/workspace"


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc: Any = None


def _openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    while True:
        fd = _libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.EAGAIN:  # a concurrent rename inside the root; retry
            continue
        if err == errno.ENOSYS:
            raise SandboxUnavailable("the files API needs openat2 (Linux 5.6 or newer)")
        raise OSError(err, os.strerror(err), path)


@dataclass
class FileInfo:
    """One entry of a listing."""

    name: str
    path: str
    type: str  # "file", "dir", "symlink", "other"
    size: int
    mtime: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def normalize(path: str) -> str:
    """A client path (relative, or absolute under /workspace) as a path relative to the root."""
    if not isinstance(path, str) or "\0" in path:
        raise InvalidRequest("path must be a string without NUL bytes")
    if path.startswith("/"):
        if path != MOUNT_POINT and not path.startswith(MOUNT_POINT + "/"):
            raise InvalidRequest(f"the files API reaches {MOUNT_POINT} only, not {path!r}")
        path = path[len(MOUNT_POINT):]
    rel = posixpath.normpath("/" + path).lstrip("/")
    return rel or "."


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


class Workspace:
    """File operations confined to one directory (a sandbox's /workspace)."""

    def __init__(self, root: str | os.PathLike[str], owner: int | None = None) -> None:
        self.root = os.fspath(root)
        self.owner = owner
        """Host uid (and gid) that files created here are given, so the sandbox user can change them."""

    def _root_fd(self) -> int:
        return os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def _open(self, rel: str, flags: int, mode: int = 0) -> int:
        root = self._root_fd()
        try:
            return _openat2(root, rel, flags, mode)
        except FileNotFoundError:
            raise NotFound(f"{MOUNT_POINT}/{rel} does not exist") from None
        except NotADirectoryError:
            raise InvalidRequest(f"a parent of {MOUNT_POINT}/{rel} is not a directory") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise InvalidRequest(f"{MOUNT_POINT}/{rel} has too many levels of symlinks") from None
            raise
        finally:
            os.close(root)

    def _parent(self, rel: str, create: bool = False) -> tuple[int, str]:
        parent, name = posixpath.split(rel)
        if name in ("", ".", ".."):
            raise InvalidRequest("the workspace root itself cannot be used here")
        if create and parent:
            self.mkdir(parent, parents=True)
        return self._open(parent or ".", os.O_PATH | os.O_DIRECTORY), name

    def read(self, path: str, max_bytes: int = 64 * 1024 * 1024) -> bytes:
        rel = normalize(path)
        fd = self._open(rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise InvalidRequest(f"{MOUNT_POINT}/{rel} is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise InvalidRequest(f"{MOUNT_POINT}/{rel} is not a regular file")
            if st.st_size > max_bytes:
                raise PayloadTooLarge(f"{MOUNT_POINT}/{rel} is {st.st_size} bytes, more than {max_bytes}")
            chunks, total = [], 0
            while chunk := os.read(fd, 1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise PayloadTooLarge(f"{MOUNT_POINT}/{rel} is larger than {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, path: str, data: bytes | str, mode: int = 0o644, make_parents: bool = True) -> int:
        rel = normalize(path)
        if rel == ".":
            raise InvalidRequest("cannot write to the workspace root")
        if make_parents and posixpath.dirname(rel):
            self.mkdir(posixpath.dirname(rel), parents=True)
        raw = data.encode() if isinstance(data, str) else bytes(data)
        fd = self._open(rel, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY, mode & 0o777)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidRequest(f"{MOUNT_POINT}/{rel} is not a regular file")
            if self.owner is not None:
                os.fchown(fd, self.owner, self.owner)
            os.ftruncate(fd, 0)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            return len(raw)
        except OSError as e:
            if e.errno == errno.ENXIO:
                raise InvalidRequest(f"{MOUNT_POINT}/{rel} is not a regular file") from None
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SandboxLimitExceeded(f"{MOUNT_POINT}/{rel}: the sandbox's disk quota is full") from None
            raise
        finally:
            os.close(fd)

    def mkdir(self, path: str, parents: bool = True) -> None:
        rel = normalize(path)
        if rel == ".":
            return
        parts = rel.split("/")
        for i in range(1, len(parts) + 1) if parents else [len(parts)]:
            sub = "/".join(parts[:i])
            dfd, name = self._parent(sub)
            try:
                os.mkdir(name, 0o755, dir_fd=dfd)
                if self.owner is not None:
                    os.chown(name, self.owner, self.owner, dir_fd=dfd, follow_symlinks=False)
            except FileExistsError:
                if not parents:
                    raise Conflict(f"{MOUNT_POINT}/{sub} already exists") from None
                try:  # may be a symlink: resolve it inside the root, never outside
                    os.close(self._open(sub, os.O_PATH | os.O_DIRECTORY))
                except (InvalidRequest, OSError):
                    raise Conflict(f"{MOUNT_POINT}/{sub} exists and is not a directory") from None
            finally:
                os.close(dfd)

    def list(self, path: str = ".", recursive: bool = False, limit: int = 10_000) -> list[FileInfo]:
        rel = normalize(path)
        out: list[FileInfo] = []
        pending = [rel]
        while pending and len(out) < limit:
            current = pending.pop()
            fd = self._open(current, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name)
                    for e in entries:
                        st = e.stat(follow_symlinks=False)
                        child = e.name if current == "." else f"{current}/{e.name}"
                        kind = _kind(st.st_mode)
                        out.append(FileInfo(e.name, f"{MOUNT_POINT}/{child}", kind, st.st_size, st.st_mtime))
                        if recursive and kind == "dir":
                            pending.append(child)
            finally:
                os.close(fd)
        return out[:limit]

    def exists(self, path: str) -> bool:
        rel = normalize(path)
        try:
            os.close(self._open(rel, os.O_PATH))
            return True
        except NotFound:
            return False

    def delete(self, path: str, recursive: bool = False) -> None:
        rel = normalize(path)
        dfd, name = self._parent(rel)
        try:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise NotFound(f"{MOUNT_POINT}/{rel} does not exist") from None
            if stat.S_ISDIR(st.st_mode):
                if recursive:
                    shutil.rmtree(name, dir_fd=dfd)
                else:
                    try:
                        os.rmdir(name, dir_fd=dfd)
                    except OSError as e:
                        if e.errno == errno.ENOTEMPTY:
                            raise Conflict(f"{MOUNT_POINT}/{rel} is not empty; pass recursive=true") from None
                        raise
            else:
                os.unlink(name, dir_fd=dfd)
        finally:
            os.close(dfd)


__all__ = ["FileInfo", "Workspace", "normalize", "MOUNT_POINT"]
