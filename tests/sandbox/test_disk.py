"""Disk quota backends: where mounting is impossible, sandboxes still open (per-file cap)."""

from __future__ import annotations

import pytest

from myriad.errors import SandboxUnavailable
from myriad.sandbox import disk


def test_auto_falls_back_when_mounting_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # root in a container without CAP_SYS_ADMIN: the probe's mount fails -> fsize, not a broken tier
    real = disk._run

    def no_mount(argv: list[str], what: str) -> None:
        if argv[0] == "mount":
            raise SandboxUnavailable("could not mount the sandbox's disk image: permission denied")
        real(argv, what)

    monkeypatch.setattr(disk, "_run", no_mount)
    monkeypatch.setattr(disk.os, "geteuid", lambda: 0)
    backend = disk.pick("auto")
    assert backend.name == "fsize"
    assert backend.rlimit_args(16) == [f"--fsize={16 << 20}"]
    with pytest.raises(SandboxUnavailable, match="permission denied"):
        disk.pick("loop")
