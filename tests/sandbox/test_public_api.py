"""The sandbox room's public surface is exactly what it means to export."""

import myriad.sandbox


def test_exported_names() -> None:
    assert set(myriad.sandbox.__all__) == {
        "CAPABILITIES", "ContainerSandbox", "ContainerTier", "EgressHook", "EgressPolicy", "EgressProxy",
        "EgressRequest", "EventKind", "FileInfo", "Hooks", "IsolateSandbox", "IsolateTier", "Limits", "ProcessInfo",
        "RunResult", "Sandbox", "SandboxEvent", "SandboxHook", "SandboxInfo", "Sandboxes", "Snapshot", "TIERS", "Tier", "Tool", "render_typescript", "tool",
    }
    for name in myriad.sandbox.__all__:
        assert getattr(myriad.sandbox, name) is not None


def test_every_tier_satisfies_the_protocol() -> None:
    from myriad.sandbox.interface import CAPABILITIES

    for cls in (myriad.sandbox.IsolateSandbox, myriad.sandbox.ContainerSandbox):
        assert cls.capabilities <= set(CAPABILITIES)
        for attr in ("run", "info", "close", "closed"):
            assert hasattr(cls, attr), (cls, attr)
