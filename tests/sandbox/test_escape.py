"""The escape suite: real attempts to get out of a container sandbox. Every one must fail.

(The isolate half lives in test_isolate.py: runaway loops, allocation bombs,
unbound globals, state leaking between isolates.)
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest

from myriad.errors import Conflict, InvalidRequest, NotFound, SandboxTimeout
from myriad.sandbox import ContainerSandbox, Limits, Sandboxes
from tests.sandbox.conftest import host_pids_with

pytestmark = pytest.mark.integration

SECRET = "myriad-escape-canary-7f3c"
# Other checkouts may run this suite on the same machine at the same time: host-wide
# process scans look for this run's own marker only.
TOKEN = f"{os.getpid()}{int.from_bytes(os.urandom(2), 'big')}"


@pytest.fixture
def host_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A secret in the data directory and in the host's environment."""
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    monkeypatch.setenv("MYRIAD_ESCAPE_CANARY", SECRET)
    return path


@pytest.fixture
def host_service():
    """A TCP service on the host's 127.0.0.1 that records whether anyone connected."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    hits: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            hits.append(conn.recv(100))
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1], hits
    srv.close()


async def test_cannot_read_host_files(box: ContainerSandbox, host_secret: Path, sandboxes: Sandboxes) -> None:
    res = await box.exec(
        f"cat {host_secret}; cat /etc/shadow; cat {sandboxes.root}/*/meta.json; ls /root /home; cat /proc/1/environ;"
        f"grep -r {SECRET} /proc/*/environ /etc /workspace /tmp 2>/dev/null; env; echo END"
    )
    assert SECRET not in res.stdout + res.stderr
    assert res.stdout.rstrip().endswith("END")
    assert "No such file or directory" in res.stderr  # the host paths simply do not exist in here
    res = await box.exec("ls -1A /etc; test -e /etc/ssl/private && echo SSL-PRIVATE; true")
    names = set(res.stdout.split())
    assert not names & {"shadow", "gshadow", "sudoers", "ssh", "SSL-PRIVATE", "machine-id"}, names
    assert {"passwd", "ld.so.cache"} <= names
    # the sandbox's own host directory and other sandboxes are invisible
    other = await sandboxes.open(needs={"filesystem"})
    await other.exec(f"echo {SECRET} > /workspace/mine")
    res = await box.exec(f"find / -xdev -name mine 2>/dev/null; cat {other.workspace_dir}/mine")
    assert SECRET not in res.stdout


async def test_cannot_write_outside_workspace(box: ContainerSandbox, tmp_path: Path) -> None:
    target = tmp_path / "planted"
    res = await box.exec(
        f"for p in /usr/bin/planted /etc/planted /planted /proc/sys/kernel/hostname /sys/planted {target}; do "
        "  (echo x > $p) 2>/dev/null && echo WROTE $p; done; "
        "mount -o remount,rw /usr 2>/dev/null && echo REMOUNTED; echo done"
    )
    assert "WROTE" not in res.stdout and "REMOUNTED" not in res.stdout, res.stdout
    assert not target.exists()
    assert not Path("/usr/bin/planted").exists() and not Path("/etc/planted").exists()
    # /tmp inside is private: not the host's /tmp
    await box.exec("echo inside > /tmp/myriad-escape-tmp-probe")
    assert not Path("/tmp/myriad-escape-tmp-probe").exists()


async def test_cannot_reach_host_loopback_service(box: ContainerSandbox, host_service) -> None:
    port, hits = host_service
    res = await box.run(
        f"import socket\ntry:\n  socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi'); print('CONNECTED')\n"
        "except OSError as e:\n  print('refused', e)",
        language="python",
    )
    assert "CONNECTED" not in res.stdout and "refused" in res.stdout
    await asyncio.sleep(0.05)
    assert hits == []


async def test_no_network_without_grant(box: ContainerSandbox) -> None:
    # 192.0.2.1 is TEST-NET-1: documentation only, never routed
    res = await box.run(
        "import socket\ntry:\n  socket.create_connection(('192.0.2.1', 80), timeout=2); print('CONNECTED')\n"
        "except OSError as e:\n  print('failed', e.errno)\n"
        "import os\nprint(sorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') else 'no-sysfs')\n"
        "print(open('/proc/net/dev').read())",
        language="python",
    )
    assert "CONNECTED" not in res.stdout and "failed" in res.stdout
    interfaces = [line.split(":")[0].strip() for line in res.stdout.splitlines() if ":" in line and "|" not in line]
    assert interfaces == ["lo"], res.stdout
    res = await box.exec("getent hosts example.com || echo NO-DNS")
    assert "NO-DNS" in res.stdout


async def test_cannot_see_host_processes(box: ContainerSandbox) -> None:
    res = await box.exec("ls /proc | grep -E '^[0-9]+$' | wc -l; ps -eo pid,comm 2>/dev/null || true")
    count = int(res.stdout.split()[0])
    assert count <= 5, res.stdout
    assert "pytest" not in res.stdout and "python" not in res.stdout
    res = await box.exec(f"kill -0 {os.getpid()} && echo SIGNALLED || echo no-such-process")
    assert "SIGNALLED" not in res.stdout


async def test_cannot_regain_privileges(box: ContainerSandbox) -> None:
    res = await box.exec(
        "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; "
        "su -c id root </dev/null 2>&1 && echo SU-OK; "
        "unshare -U -r id 2>&1 && echo UNSHARE-OK; "
        "unshare -m id 2>&1 && echo UNSHARE-M-OK; "
        "mount -t tmpfs none /tmp 2>&1 && echo MOUNT-OK; "
        "chroot / true 2>&1 && echo CHROOT-OK; "
        "python3 -c 'import os; os.setuid(0)' 2>&1 && echo SETUID-OK; "
        "echo end"
    )
    out = res.stdout
    assert "CapEff:\t0000000000000000" in out and "CapBnd:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out
    for marker in ("SU-OK", "UNSHARE-OK", "UNSHARE-M-OK", "MOUNT-OK", "CHROOT-OK", "SETUID-OK"):
        assert marker not in out, out
    # setuid binaries do not raise privileges under no_new_privs: find one and run it
    suid = (await box.exec("find /usr/bin /usr/sbin -perm -4000 -type f 2>/dev/null | head -1")).stdout.strip()
    if suid:
        res = await box.exec(f"{suid} --help >/dev/null 2>&1; grep CapEff /proc/self/status")
        assert "0000000000000000" in res.stdout


async def test_seccomp_denies_kernel_attack_surface(box: ContainerSandbox) -> None:
    if box._tier.seccomp_program is None:
        pytest.skip("seccomp filter is x86_64 only")
    res = await box.run(
        "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "for name, nr in [('keyctl', 250), ('bpf', 321), ('perf_event_open', 298), ('io_uring_setup', 425), ('ptrace', 101)]:\n"
        "    r = libc.syscall(nr, 0, 0, 0, 0, 0)\n"
        "    print(name, r, errno.errorcode.get(ctypes.get_errno()))\n",
        language="python",
    )
    lines = res.stdout.split("\n")
    for name in ("keyctl", "bpf", "perf_event_open", "io_uring_setup", "ptrace"):
        assert f"{name} -1 EPERM" in lines, res.stdout
    assert "Seccomp:\t2" in (await box.exec("grep Seccomp: /proc/self/status")).stdout


async def test_fork_bomb_is_contained(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"shell"}, limits=Limits(pids=40, timeout=10))
    res = await box.run(
        "import os, time\nn = 0\nkids = []\ntry:\n"
        "    while n < 1000:\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n            time.sleep(5); os._exit(0)\n"
        "        kids.append(pid); n += 1\n"
        "except OSError as e:\n    print('stopped at', n, e.errno)\n"
        "for k in kids: os.kill(k, 9)\n",
        language="python",
    )
    assert "stopped at" in res.stdout, res.stdout + res.stderr
    assert int(res.stdout.split()[2]) < 40
    # a real fork bomb: bounded by pids.max, and gone once the command ends or times out
    try:
        await box.exec("bomb() { bomb | bomb & }; bomb; sleep 30", timeout=2)
    except SandboxTimeout:
        pass
    assert await _settles(lambda: box.group.pids() == [])
    if box.group.backend == "v1":
        events = (box.group.dirs["pids"] / "pids.events").read_text()
        assert int(events.split()[1]) > 0, "the bomb never reached pids.max"
    assert (await box.exec("echo still-works")).stdout == "still-works\n"


async def test_memory_bomb_is_contained(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"shell"}, limits=Limits(memory_mb=64))
    res = await box.run("x = bytearray(400 * 1024 * 1024); print('ALLOCATED')", language="python")
    assert "ALLOCATED" not in res.stdout
    assert res.exit_code != 0
    if box.group.backend != "rlimit":
        assert res.error and "out of memory" in res.error
    assert (await box.exec("echo alive")).stdout == "alive\n"


async def test_cannot_outlive_a_timeout(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"shell"})
    with pytest.raises(SandboxTimeout):
        await box.exec(f"(setsid sleep 777.{TOKEN} &); nohup sleep 778.{TOKEN} >/dev/null 2>&1 & sleep 779.{TOKEN}",
                       timeout=0.5)
    assert await _settles(lambda: box.group.pids() == [] and not host_pids_with(f".{TOKEN}"))


async def test_no_processes_left_after_delete(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"shell"}, owner="o", id="leaver")
    t = TOKEN
    await box.start_process(f"setsid sh -c 'sleep 881.{t} & sleep 882.{t}' & nohup sleep 883.{t} & sleep 884.{t}")
    await box.exec(f"(setsid sleep 885.{t} &) ; true")
    assert await _settles(lambda: len(host_pids_with(f".{t}")) >= 3)
    await sandboxes.close("o", "leaver")
    assert not host_pids_with(f".{t}")  # close() waits until the cgroup is empty


async def test_files_api_cannot_be_walked_out(box: ContainerSandbox, host_secret: Path) -> None:
    await box.exec(
        f"ln -s {host_secret} link; ln -s / rootlink; ln -s ../../../../.. up; mkfifo fifo; ln -s /etc etcdir"
    )
    for path in ("link", "rootlink/etc/shadow", "up/etc/shadow", f"../..{host_secret}", "etcdir/shadow"):
        with pytest.raises((NotFound, InvalidRequest)):
            await box.read_file(path)
    with pytest.raises(InvalidRequest, match="not a regular file"):
        await asyncio.wait_for(box.read_file("fifo"), 5)  # must not block on the FIFO
    with pytest.raises(InvalidRequest, match="reaches /workspace only"):
        await box.read_file("/etc/passwd")
    # symlinks resolve inside the workspace: writing through one never reaches the host
    with pytest.raises((NotFound, Conflict)):
        await box.write_file("etcdir/planted", "x")
    assert not Path("/etc/planted").exists()
    with pytest.raises(NotFound):
        await box.write_file("link", "overwritten")
    assert host_secret.read_text() == SECRET
    await box.exec("mkdir -p etc && ln -s ../etc inner")
    await box.write_file("inner/planted", "x")
    assert (await box.exec("cat /workspace/etc/planted")).stdout == "x"
    assert not Path("/etc/planted").exists()
    await box.delete_file("rootlink")
    assert Path("/etc/passwd").exists()


async def test_snapshot_does_not_copy_host_files_through_symlinks(sandboxes: Sandboxes, host_secret: Path) -> None:
    box = await sandboxes.open(needs={"snapshot"}, owner="o", id="snapper")
    await box.exec(f"ln -s {host_secret} secret-link; ln -s {host_secret.parent} dir-link")
    snap = await sandboxes.snapshot("o", "snapper")
    copied = sandboxes.root / "_snapshots" / snap.id / "workspace"
    assert (copied / "secret-link").is_symlink() and (copied / "dir-link").is_symlink()
    fork = await sandboxes.fork("o", "snapper")
    res = await fork.exec("cat secret-link dir-link/secret.txt 2>&1; echo")
    assert SECRET not in res.stdout


async def _settles(check, within: float = 2.0) -> bool:
    """True once ``check()`` holds (the kernel tears a pid namespace down asynchronously)."""
    for _ in range(int(within / 0.02)):
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


async def test_cpu_is_capped(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"shell"}, limits=Limits(cpu=0.2))
    if box.group.backend == "rlimit":
        pytest.skip("a CPU cap needs cgroups")
    res = await box.run(
        "import time, os\nend = time.monotonic() + 1.0\nwhile time.monotonic() < end: pass\n"
        "t = os.times()\nprint(t.user + t.system)",
        language="python",
    )
    used = float(res.stdout)
    assert used < 0.4, f"a 0.2-core sandbox burned {used:.2f} CPU-seconds in one wall second"
