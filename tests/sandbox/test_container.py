"""The container tier: exec, processes, pause/resume, snapshots, expiry, cleanup."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from myriad.errors import Conflict, InvalidRequest, NotFound, SandboxTimeout
from myriad.sandbox import ContainerSandbox, Limits, Sandboxes

pytestmark = pytest.mark.integration


async def test_exec_basics(box: ContainerSandbox) -> None:
    res = await box.exec("echo out; echo err >&2; exit 7")
    assert (res.stdout, res.stderr, res.exit_code) == ("out\n", "err\n", 7)
    res = await box.exec(["sh", "-c", 'echo "$GREETING from $(pwd) as $(id -un)"'], env={"GREETING": "hi"}, cwd="/tmp")
    assert res.stdout == "hi from /tmp as sandbox\n"
    res = await box.exec("wc -c", stdin=b"12345")
    assert res.stdout.strip() == "5"
    assert (await box.run("print(2 ** 10)", language="python")).stdout == "1024\n"
    assert (await box.run("console.log([1, 2].length)", language="javascript")).stdout == "2\n"


async def test_exec_streams_output(box: ContainerSandbox) -> None:
    seen: list[tuple[str, bytes, float]] = []

    async def on_output(stream: str, chunk: bytes) -> None:
        seen.append((stream, chunk, time.monotonic()))

    started = time.monotonic()
    res = await box.exec("echo one; sleep 0.3; echo two >&2", on_output=on_output)
    assert res.exit_code == 0
    assert [(s, c) for s, c, _ in seen] == [("stdout", b"one\n"), ("stderr", b"two\n")]
    assert seen[0][2] - started < 0.25, "the first chunk was not streamed before the command ended"


async def test_output_cap_and_timeout(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"shell"}, limits=Limits(output_bytes=1000, timeout=1))
    res = await box.exec("head -c 100000 /dev/zero | tr '\\0' x")
    assert res.truncated and len(res.stdout) == 1000
    started = time.monotonic()
    with pytest.raises(SandboxTimeout) as err:
        await box.exec("echo partial; sleep 30")
    assert time.monotonic() - started < 5
    assert err.value.details["stdout"] == "partial\n"
    # per-call timeouts can only tighten
    with pytest.raises(SandboxTimeout, match="0.2 s"):
        await box.exec("sleep 5", timeout=0.2)


async def test_workspace_persists_and_tmp_is_private(sandboxes: Sandboxes) -> None:
    a = await sandboxes.open(needs={"filesystem"})
    b = await sandboxes.open(needs={"filesystem"})
    await a.exec("echo state > /workspace/file; echo t > /tmp/t")
    assert (await a.exec("cat /workspace/file /tmp/t")).stdout == "state\nt\n"
    res = await b.exec("ls -A /workspace /tmp")
    assert "file" not in res.stdout and "t\n" not in res.stdout


async def test_invalid_input(box: ContainerSandbox) -> None:
    with pytest.raises(InvalidRequest):
        await box.exec("")
    with pytest.raises(InvalidRequest):
        await box.exec([])
    with pytest.raises(InvalidRequest, match="environment variable name"):
        await box.exec("true", env={"BAD NAME": "x"})
    with pytest.raises(InvalidRequest, match="cwd"):
        await box.exec("true", cwd="relative")
    with pytest.raises(InvalidRequest, match="unknown language"):
        await box.run("x", language="cobol")


async def test_background_processes(box: ContainerSandbox) -> None:
    p = await box.start_process("for i in 1 2 3; do echo tick $i; sleep 0.1; done; echo bye >&2")
    assert p.status == "running" and p.id == "proc_1"
    long = await box.start_process(["sleep", "60"])
    assert {x.id for x in box.list_processes()} == {p.id, long.id}
    done = await box.wait_process(p.id, timeout=5)
    assert done.status == "exited" and done.exit_code == 0
    logs = box.process_logs(p.id)
    assert logs["stdout"] == "tick 1\ntick 2\ntick 3\n" and logs["stderr"] == "bye\n"
    killed = await box.kill_process(long.id)
    assert killed.status == "killed"
    with pytest.raises(NotFound):
        box.process_logs("proc_99")


async def test_pause_and_resume_freeze_processes(box: ContainerSandbox) -> None:
    if box.group.backend == "rlimit":
        pytest.skip("pause needs the cgroup freezer")
    await box.start_process("i=0; while true; do i=$((i+1)); echo $i > /workspace/count; sleep 0.02; done")

    def count() -> int:
        try:
            return int(box.files.read("count") or 0)
        except (NotFound, ValueError):
            return 0

    for _ in range(250):  # the machine may be busy: wait for the counter to run
        if count() > 2:
            break
        await asyncio.sleep(0.02)
    await box.pause()
    assert box.info().status == "paused"
    first = box.files.read("count")
    await asyncio.sleep(0.3)
    assert box.files.read("count") == first, "a paused sandbox kept running"
    with pytest.raises(Conflict, match="paused"):
        await box.exec("true")
    await box.resume()
    frozen_at = int(first or 0)
    for _ in range(250):
        if count() > frozen_at:
            break
        await asyncio.sleep(0.02)
    assert count() > frozen_at


async def test_snapshot_restore_fork(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"snapshot"}, owner="t1", id="dev")
    await box.exec("mkdir -p src && echo v1 > src/main.txt && ln -s main.txt src/link")
    snap = await sandboxes.snapshot("t1", "dev")
    assert snap.bytes > 0
    await box.exec("echo v2 > src/main.txt && touch extra")
    await sandboxes.restore("t1", "dev", snap.id)
    assert (await box.exec("cat src/link; ls")).stdout == "v1\nsrc\n"
    child = await sandboxes.fork("t1", "dev", new_id="dev-fork")
    await child.exec("echo forked > src/main.txt")
    assert (await box.exec("cat src/main.txt")).stdout == "v1\n"
    assert (await child.exec("cat src/main.txt")).stdout == "forked\n"
    # snapshots are scoped to their owner
    with pytest.raises(NotFound):
        sandboxes.get_snapshot("t2", snap.id)
    with pytest.raises(NotFound):
        await sandboxes.restore("t2", "dev", snap.id)


async def test_idle_timeout_and_max_lifetime(sandboxes: Sandboxes) -> None:
    idle = await sandboxes.open(needs={"shell"}, limits=Limits(idle_timeout=5), owner="o", id="idle")
    old = await sandboxes.open(needs={"shell"}, limits=Limits(max_lifetime=50), owner="o", id="old")
    fresh = await sandboxes.open(needs={"shell"}, owner="o", id="fresh")
    await idle.start_process(["sleep", "60"])
    now = time.time()
    assert await sandboxes.reap(now) == []
    gone = await sandboxes.reap(now + 10)
    assert gone == ["idle"] and idle.closed and not idle.dir.exists()
    await old.exec("true")  # use does not extend a lifetime
    assert await sandboxes.reap(now + 60) == ["old"]
    assert not fresh.closed
    with pytest.raises(NotFound):
        sandboxes.get("o", "idle")


async def test_delete_removes_everything(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"shell"}, owner="o", id="gone")
    await box.start_process(["sleep", "60"])
    cgroup_dirs = list(getattr(box.group, "dirs", {}).values()) or [getattr(box.group, "path", None)]
    await sandboxes.close("o", "gone")
    assert not box.dir.exists()
    assert all(d is None or not d.exists() for d in cgroup_dirs)
    with pytest.raises(NotFound):
        await sandboxes.close("o", "gone")


_HOST_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from myriad.sandbox import Sandboxes
    from myriad.settings import SandboxSettings

    async def main():
        sbs = Sandboxes(SandboxSettings(root=sys.argv[1]))
        box = await sbs.open(needs={"shell"}, id="survivor")
        await box.start_process(["sleep", sys.argv[2]])
        await box.exec("true")
        print(json.dumps({"dir": str(box.dir), "cgroup": box.group.backend}), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_host_killed_leaves_nothing_after_sweep(tmp_path: Path) -> None:
    from tests.sandbox.conftest import sandbox_root, host_pids_with

    root = sandbox_root(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    marker = f"3600.{os.getpid()}{int.from_bytes(os.urandom(2), 'big')}"  # unique: other checkouts run this too
    host = subprocess.Popen([sys.executable, "-c", _HOST_SCRIPT, str(root), marker], stdout=subprocess.PIPE, env=env)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(host.stdout.readline), 30)  # type: ignore[union-attr]
        info = json.loads(line)
        assert host_pids_with(f"sleep {marker}"), "the background process did not start"
    finally:
        host.kill()
        host.wait()
    # --die-with-parent: the sandbox's processes die with the host
    for _ in range(100):
        if not host_pids_with(f"sleep {marker}"):
            break
        await asyncio.sleep(0.05)
    assert not host_pids_with(f"sleep {marker}")
    assert Path(info["dir"]).exists()  # the directory stays until a new host sweeps
    from tests.sandbox.conftest import make_settings

    sbs = Sandboxes(make_settings(tmp_path))
    try:
        await sbs.open(needs={"shell"})  # first use checks the tier, which sweeps
        backend = sbs.tier("container").backend  # type: ignore[attr-defined]
        assert not any(".survivor." in name for name in backend.orphans())
    finally:
        await sbs.aclose()
    assert not Path(info["dir"]).exists()
