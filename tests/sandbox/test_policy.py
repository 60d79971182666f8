"""The tier policy: lightest tier that covers the needs, clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from myriad.errors import Conflict, InvalidRequest, NotFound, SandboxUnavailable, TierUnavailable
from myriad.sandbox import ContainerSandbox, IsolateSandbox, Limits, Sandboxes
from tests.sandbox.conftest import make_settings


async def test_lightest_tier_is_chosen(sandboxes: Sandboxes) -> None:
    assert isinstance(await sandboxes.open(needs={"javascript"}), IsolateSandbox)
    assert isinstance(await sandboxes.open(needs={"tools"}), IsolateSandbox)
    assert isinstance(await sandboxes.open(), IsolateSandbox)
    for needs in ({"filesystem"}, {"binaries", "javascript"}, {"git"}, {"processes"}):
        assert isinstance(await sandboxes.open(needs=needs), ContainerSandbox), needs
    assert isinstance(await sandboxes.open(network={"allow": ["example.com"]}), ContainerSandbox)


async def test_asking_a_tier_the_impossible_is_an_error(sandboxes: Sandboxes) -> None:
    with pytest.raises(TierUnavailable, match="the isolate tier cannot provide binaries, filesystem") as e:
        await sandboxes.open(tier="isolate", needs={"filesystem", "binaries"})
    assert e.value.status == 400 and e.value.details["missing"] == ["binaries", "filesystem"]
    with pytest.raises(TierUnavailable, match="cannot provide network"):
        await sandboxes.open(tier="isolate", network=True)
    with pytest.raises(TierUnavailable, match="cannot provide tools"):
        await sandboxes.open(tier="container", needs={"tools"})
    with pytest.raises(TierUnavailable, match="no sandbox tier on this host provides"):
        await sandboxes.open(needs={"tools", "filesystem"})
    with pytest.raises(TierUnavailable, match="unknown sandbox tier 'vm'"):
        await sandboxes.open(tier="vm")
    with pytest.raises(InvalidRequest, match="unknown need"):
        await sandboxes.open(needs={"teleport"})


async def test_missing_bubblewrap_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap anywhere on PATH
    sbs = Sandboxes(make_settings(tmp_path))
    try:
        with pytest.raises(SandboxUnavailable, match=r"bubblewrap not installed: apt-get install bubblewrap") as e:
            await sbs.open(needs={"filesystem"})
        assert e.value.status == 503
        # the isolate tier is unaffected
        assert isinstance(await sbs.open(needs={"javascript"}), IsolateSandbox)
        assert sbs.available()["container"].startswith("bubblewrap not installed")
        assert sbs.available()["isolate"] is None
    finally:
        await sbs.aclose()


async def test_limits_only_tighten(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"shell"}, limits=Limits(memory_mb=10_000_000, timeout=5, pids=16))
    assert box.limits.memory_mb == 256 and box.limits.timeout == 5 and box.limits.pids == 16
    iso = await sandboxes.open(needs={"javascript"}, limits=Limits(memory_mb=16))
    assert iso.limits.memory_mb == 16


def test_limits_from_json() -> None:
    assert Limits.from_json({"memory_mb": 128, "timeout": 2.5}) == Limits(timeout=2.5, memory_mb=128)
    for bad, msg in (({"memory": 1}, "unknown limit"), ({"pids": "10"}, "must be a number"),
                     ({"cpu": -1}, "must be positive"), ({"timeout": True}, "must be a number"), ([1], "object")):
        with pytest.raises(InvalidRequest, match=msg):
            Limits.from_json(bad)  # type: ignore[arg-type]


async def test_owners_are_isolated(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"javascript"}, owner="tenant-a", id="s1")
    assert sandboxes.get("tenant-a", "s1") is box
    with pytest.raises(NotFound):
        sandboxes.get("tenant-b", "s1")
    with pytest.raises(NotFound):
        await sandboxes.close("tenant-b", "s1")
    assert sandboxes.list("tenant-b") == [] and sandboxes.list("tenant-a") == [box]
    with pytest.raises(InvalidRequest, match="sandbox id"):
        await sandboxes.open(owner="tenant-a", id="../etc")


async def test_reopening_with_more_needs_is_refused(sandboxes: Sandboxes) -> None:
    await sandboxes.open(needs={"javascript"}, owner="o", id="x")
    with pytest.raises(TierUnavailable, match="is a isolate sandbox"):
        await sandboxes.open(needs={"filesystem"}, owner="o", id="x")


async def test_open_for_api_bodies(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open_for("t", {"tier": "isolate", "id": "api1", "limits": {"timeout": 3}})
    assert box.id == "api1" and box.limits.timeout == 3
    with pytest.raises(Conflict):
        await sandboxes.open_for("t", {"id": "api1"})
    for body, msg in (({"tier": 3}, "tier must be a string"), ({"needs": "fs"}, "needs must be a list"),
                      ({"bogus": 1}, "unknown field"), ({"network": "yes"}, "network must be")):
        with pytest.raises(InvalidRequest, match=msg):
            await sandboxes.open_for("t", body)


async def test_default_root_under_a_private_directory_falls_back(tmp_path: Path) -> None:
    import os
    import shutil

    from myriad.settings import SandboxSettings

    if os.geteuid() != 0:
        pytest.skip("only root runs sandboxes as other uids")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    sbs = Sandboxes(SandboxSettings(), data_dir=private / "data")  # no explicit root: <data_dir>/sandboxes
    try:
        box = await sbs.open(needs={"shell"})
        assert str(box.dir).startswith("/var/lib/myriad/sandboxes/")
        assert (await box.exec("echo ok")).stdout == "ok\n"
        fallback = box.dir.parent
    finally:
        await sbs.aclose()
    shutil.rmtree(fallback, ignore_errors=True)
    # an explicit root that cannot be reached is a clear error instead
    sbs = Sandboxes(SandboxSettings(root=str(private / "explicit")))
    try:
        with pytest.raises(SandboxUnavailable, match="lacks o\\+x"):
            await sbs.open(needs={"shell"})
    finally:
        await sbs.aclose()


async def test_containers_per_owner_are_capped(tmp_path: Path) -> None:
    from myriad.errors import RateLimited

    sbs = Sandboxes(make_settings(tmp_path, max_containers_per_owner=2))
    try:
        a = await sbs.open(needs={"shell"}, owner="t")
        await sbs.open(needs={"shell"}, owner="t")
        with pytest.raises(RateLimited, match="limit 2") as e:
            await sbs.open(needs={"shell"}, owner="t")
        assert e.value.status == 429
        await sbs.open(needs={"shell"}, owner="other")  # per owner
        await sbs.open(needs={"javascript"}, owner="t")  # isolates are bounded by the warm LRU instead
        await sbs.close("t", a.id)
        await sbs.open(needs={"shell"}, owner="t")
    finally:
        await sbs.aclose()


@pytest.mark.integration
async def test_snapshots_per_owner_are_capped(tmp_path) -> None:
    # each snapshot is at most one (quota'd, sparse) workspace; their number is capped too,
    # or a tenant could fill the host's disk one snapshot at a time
    from myriad.errors import RateLimited
    from tests.sandbox.conftest import make_settings

    sbs = Sandboxes(make_settings(tmp_path, max_snapshots_per_owner=2))
    try:
        await sbs.open(owner="a", id="c", needs={"filesystem"})
        first = await sbs.snapshot("a", "c")
        await sbs.snapshot("a", "c")
        with pytest.raises(RateLimited, match="2 snapshots"):
            await sbs.snapshot("a", "c")
        await sbs.delete_snapshot("a", first.id)
        await sbs.snapshot("a", "c")
        await sbs.open(owner="b", id="c", needs={"filesystem"})
        await sbs.snapshot("b", "c")  # another owner has its own count
    finally:
        await sbs.aclose()
