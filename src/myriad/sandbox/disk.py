"""Disk quotas of container sandboxes: a loop-mounted image per sandbox, or a per-file cap.

``loop`` (Myriad runs as root and can mount): each sandbox's ``workspace/`` and
``tmp/`` live on their own ext4 file system in a sparse image file
(``<sandbox dir>/disk.img``, mounted ``nosuid,nodev`` at ``<sandbox dir>/disk``). The
kernel stops writes at the quota (``ENOSPC`` inside the sandbox, 422 from the files
API); the image costs what is written plus ~0.7 MiB of metadata. An empty image of
each size is made once (``mkfs.ext4``, ~0.07 s for 1 GiB) under ``<root>/_images`` and
copied sparsely per sandbox; the mount (``mount -o loop``) costs most of the rest. Loop devices are allocated on demand through
``/dev/loop-control`` and freed on unmount (``autoclear``).

``fsize`` (no mount privilege): ``RLIMIT_FSIZE`` caps each file at the quota; the
total is not bounded (many files may exceed it), and sparse files are capped at
their apparent size.

Mounts outlive a killed host: ``release`` (on close) and the sweep on the next start
unmount before deleting, never deleting through a live mount.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Protocol

from myriad.errors import SandboxUnavailable
from myriad.sandbox.copying import copy_file

IMAGE = "disk.img"
MOUNT = "disk"


class DiskQuota(Protocol):
    name: str

    def available(self) -> str | None:
        """``None`` when usable here, else why not."""
        ...

    def create(self, directory: Path, mb: int, uid: int | None) -> Path:
        """Set up a quota'd place under ``directory``; return the directory to hold ``workspace/`` and ``tmp/``."""
        ...

    def release(self, directory: Path) -> None:
        """Undo ``create`` (unmount); idempotent, also for a sandbox a dead host left."""
        ...

    def rlimit_args(self, mb: int | None) -> list[str]:
        """``prlimit`` options for the sandbox's processes."""
        ...


class LoopImage:
    name = "loop"
    _probed: str | None  # None: not probed yet; "": mounting works; else why it cannot

    def available(self) -> str | None:
        if os.geteuid() != 0:
            return "mounting a per-sandbox image needs Myriad to run as root"
        for tool in ("mkfs.ext4", "mount", "umount"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (apt-get install e2fsprogs mount)"
        if not Path("/dev/loop-control").exists():
            return "no /dev/loop-control (loop devices unavailable)"
        return self._probe()

    def _probe(self) -> str | None:
        """Mount a tiny image once: root in a container without CAP_SYS_ADMIN (or without
        loop devices) cannot, and must fall back rather than fail every sandbox."""
        if self._probed is not None:
            return self._probed or None
        base = Path(tempfile.mkdtemp(prefix="myriad-disk-probe-"))
        try:
            self.create(base, 4, None)
            self._probed = ""
        except SandboxUnavailable as e:
            self._probed = e.message
        finally:
            self.release(base)
            shutil.rmtree(base, ignore_errors=True)
        return self._probed or None

    def __init__(self, templates: Path | None = None) -> None:
        self.templates = templates
        """Where an empty image of each size is made once and then copied (sparsely) per sandbox."""
        self._lock = threading.Lock()
        self._probed = None

    def _template(self, mb: int) -> Path | None:
        if self.templates is None:
            return None
        path = self.templates / f"ext4-{int(mb)}m.img"
        with self._lock:
            if not path.exists():
                self.templates.mkdir(parents=True, exist_ok=True)
                os.chmod(self.templates, 0o700)
                tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
                _mkfs(tmp, mb)
                os.replace(tmp, path)
        return path

    def create(self, directory: Path, mb: int, uid: int | None) -> Path:
        image, mount = directory / IMAGE, directory / MOUNT
        template = self._template(mb)
        if template is not None:  # ~1 ms for the ~0.7 MiB of metadata instead of ~70 ms of mkfs
            copy_file(str(template), str(image), 0o600)
        else:
            _mkfs(image, mb)
        mount.mkdir(mode=0o711)
        _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(mount)], "mount the sandbox's disk image")
        with contextlib.suppress(OSError):
            (mount / "lost+found").rmdir()
        if uid is not None:
            os.chown(mount, uid, uid)
        os.chmod(mount, 0o711)
        return mount

    def release(self, directory: Path) -> None:
        unmount(directory / MOUNT)

    def rlimit_args(self, mb: int | None) -> list[str]:
        return []  # the file system is the limit (and sparse files larger than it stay possible)


class FileSizeOnly:
    name = "fsize"

    def available(self) -> str | None:
        return None

    def create(self, directory: Path, mb: int, uid: int | None) -> Path:
        return directory

    def release(self, directory: Path) -> None:
        unmount(directory / MOUNT)  # a root host may have left one

    def rlimit_args(self, mb: int | None) -> list[str]:
        return [f"--fsize={int(mb) * 1024 * 1024}"] if mb else []  # no single file larger than the quota


DISKS: dict[str, type[LoopImage] | type[FileSizeOnly]] = {"loop": LoopImage, "fsize": FileSizeOnly}


def pick(name: str = "auto", templates: Path | None = None) -> DiskQuota:
    """The backend called ``name``, or for ``auto`` loop images where possible, else ``fsize``."""
    if name == "auto":
        loop = LoopImage(templates)
        why = loop.available()
        if why is None:
            return loop
        logging.getLogger("myriad.sandbox").warning(
            "container disk quotas cap single files only (sandbox.disk = fsize): %s", why)
        return FileSizeOnly()
    if name not in DISKS:
        raise SandboxUnavailable(f"unknown disk quota backend {name!r}; choose auto, {', '.join(DISKS)}")
    backend: DiskQuota = LoopImage(templates) if name == "loop" else FileSizeOnly()
    why = backend.available()
    if why:
        raise SandboxUnavailable(f"disk quota backend {name} unavailable: {why}")
    return backend


def unmount(path: Path) -> None:
    """Unmount ``path`` if something is mounted there (lazily if it is still busy)."""
    if not os.path.ismount(path):
        return
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _mkfs(image: Path, mb: int) -> None:
    with open(image, "wb") as f:
        f.truncate(int(mb) * 1024 * 1024)
    os.chmod(image, 0o600)
    _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard",
          str(image)], "make the sandbox's file system")


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxUnavailable(f"could not {what}: {e}") from None
    if done.returncode != 0:
        raise SandboxUnavailable(f"could not {what}: {(done.stderr or done.stdout).strip()}")


__all__ = ["DISKS", "DiskQuota", "FileSizeOnly", "LoopImage", "pick", "unmount"]
