"""The house rules that code review would otherwise have to remember (DESIGN.md)."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "myriad"

# room -> rooms it may import (besides errors/settings, which every room may use)
ALLOWED = {
    "storage": set(),
    "telemetry": set(),
    "identity": {"storage", "telemetry"},
    "metering": {"storage", "identity", "telemetry"},
    "models": {"identity", "metering", "telemetry", "storage", "mcp"},
    "sandbox": {"identity", "metering", "telemetry", "storage"},
    "agents": {"storage", "telemetry", "identity", "metering", "models", "sandbox", "mcp"},
    "mcp": {"sandbox"},
    "cluster": {"agents", "storage", "telemetry", "identity", "server"},
    "server": {"agents", "storage", "sandbox", "models", "identity", "metering", "telemetry", "mcp"},
    "bench": {"agents", "storage", "sandbox", "models", "identity", "metering", "telemetry", "server", "mcp", "cluster"},
}
COMMON = {"errors", "settings", "safe_json"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "myriad" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_lower_rooms_never_import_upper_rooms():
    violations = []
    for room, allowed in ALLOWED.items():
        for path in (SRC / room).rglob("*.py"):
            for imported in _imports(path) - allowed - COMMON - {room}:
                violations.append(f"{path.relative_to(SRC)} imports myriad.{imported}")
    assert not violations, "\n".join(violations)


def test_importing_myriad_does_nothing():
    code = (
        "import sys, threading; before = threading.active_count(); import myriad, myriad.agents, myriad.server, "
        "myriad.storage, myriad.identity; "
        "assert threading.active_count() == before, 'threads started at import'; "
        "heavy = [m for m in ('torch', 'ray', 'asyncpg', 'psycopg', 'sentence_transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SRC.parents[1],
                   env={"PYTHONPATH": str(SRC.parent), "PATH": "/usr/bin:/bin"})


def test_public_surface():
    import myriad
    import myriad.agents

    assert set(myriad.__all__) == {"Agent", "ChatAgent", "Connection", "Settings", "callable", "tool", "__version__"}
    for name in myriad.agents.__all__:
        assert hasattr(myriad.agents, name)
    assert myriad.Agent is myriad.agents.Agent
