"""Copying a workspace (snapshot, restore, fork) the way a sandbox's files deserve.

- Holes stay holes: a regular file is copied extent by extent (``SEEK_DATA`` /
  ``SEEK_HOLE``), so a 10 GiB sparse file with 4 KiB of data costs 4 KiB, not 10 GiB
  (``shutil.copytree`` wrote every zero).
- Only directories, regular files and symlinks (copied as links, never followed) are
  copied. A fifo, socket or device node raises ``SpecialFile`` (409) naming it, before
  anything is written: ``check_tree`` runs first, and a copy that still fails midway is
  removed by its caller, so no partial copy stays on disk.
- Mode bits are kept except set-uid/set-gid; owners are the caller's to set.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from myriad.errors import Conflict, SandboxLimitExceeded

_KINDS = {stat.S_IFIFO: "a fifo", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}
_CHUNK = 8 * 1024 * 1024


class SpecialFile(Conflict):
    """The workspace holds something that is not a file, directory or symlink."""


def _special(root: Path, path: str, mode: int) -> SpecialFile:
    rel = os.path.relpath(path, root)
    what = _KINDS.get(stat.S_IFMT(mode), "a special file")
    return SpecialFile(f"/workspace/{rel} is {what}; snapshots and forks copy regular files, directories and "
                       "symlinks only: delete it first", details={"path": f"/workspace/{rel}", "kind": what})


def check_tree(root: Path) -> int:
    """Raise ``SpecialFile`` for the first special file under ``root``; return the bytes the
    tree occupies on disk (allocated blocks, so holes count nothing)."""
    used = 0
    stack = [str(root)]
    while stack:
        current = stack.pop()
        with os.scandir(current) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                elif not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    raise _special(root, entry.path, st.st_mode)
                used += st.st_blocks * 512
    return used


def copy_tree(src: Path, dest: Path, *, dirs_exist_ok: bool = False) -> None:
    """Copy ``src`` to ``dest`` (see the module docstring). ``dest`` must not exist unless
    ``dirs_exist_ok``. Call ``check_tree(src)`` first to refuse special files up front."""
    os.makedirs(dest, exist_ok=dirs_exist_ok)
    _copy_dir(str(src), str(dest), Path(src))
    os.chmod(dest, stat.S_IMODE(os.lstat(src).st_mode) & 0o1777)


def _copy_dir(src: str, dest: str, root: Path) -> None:
    with os.scandir(src) as it:
        for entry in it:
            st = entry.stat(follow_symlinks=False)
            target = os.path.join(dest, entry.name)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(target, 0o700)
                _copy_dir(entry.path, target, root)
                os.chmod(target, stat.S_IMODE(st.st_mode) & 0o1777)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(entry.path), target)
            elif stat.S_ISREG(st.st_mode):
                copy_file(entry.path, target, stat.S_IMODE(st.st_mode) & 0o1777)
            else:
                raise _special(root, entry.path, st.st_mode)


def copy_file(src: str, dest: str, mode: int = 0o644) -> None:
    """Copy one regular file, its holes kept (data extents only)."""
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fin)
        if not stat.S_ISREG(st.st_mode):
            raise _special(Path(src).parent, src, st.st_mode)
        fout = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            size = st.st_size
            pos = 0
            while pos < size:
                try:
                    data = os.lseek(fin, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                end = os.lseek(fin, data, os.SEEK_HOLE)
                _copy_range(fin, fout, data, end)
                pos = end
            os.ftruncate(fout, size)
            os.fchmod(fout, mode)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise SandboxLimitExceeded("the copy does not fit in the sandbox's disk quota") from None
            raise
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_range(fin: int, fout: int, start: int, end: int) -> None:
    pos = start
    while pos < end:
        n = min(_CHUNK, end - pos)
        try:
            done = os.copy_file_range(fin, fout, n, pos, pos)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            done = 0
        if done <= 0:  # not supported here (or a short file): plain reads and writes
            chunk = os.pread(fin, n, pos)
            if not chunk:
                return
            done = os.pwrite(fout, chunk, pos)
        pos += done


__all__ = ["SpecialFile", "check_tree", "copy_file", "copy_tree"]
