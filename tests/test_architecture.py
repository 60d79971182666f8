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


# -- visibility: one __all__ per package, private modules stay in their room -----------------

def _all_of(init: Path) -> list[str] | None:
    """The literal ``__all__`` of a package's ``__init__`` (None if it has none)."""
    found = None
    for node in ast.parse(init.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert found is None, f"{init.relative_to(SRC)}: __all__ is assigned twice"
            found = ast.literal_eval(node.value)  # a literal list: tools (and readers) can see it without importing
    return found


def test_every_package_has_one_all_and_every_name_in_it_exists():
    import importlib

    problems = []
    for init in sorted(SRC.rglob("__init__.py")):
        if not [p for p in init.parent.glob("*.py") if p.name != "__init__.py"] and "import" not in init.read_text():
            continue  # a data-only package (telemetry/dashboard: static files)
        package = ".".join(("myriad",) + init.parent.relative_to(SRC).parts)
        names = _all_of(init)
        if names is None:
            problems.append(f"{package}: no __all__")
            continue
        if len(set(names)) != len(names):
            problems.append(f"{package}: __all__ lists a name twice")
        module = importlib.import_module(package)
        problems += [f"{package}.__all__ names {n!r}, which it does not define" for n in names if not hasattr(module, n)]
    assert not problems, "\n".join(problems)


def _private_imports(path: Path) -> set[str]:
    """``myriad`` modules or names with a private part (``myriad.metering._store``) that
    ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "myriad" and any(p.startswith("_") and not p.startswith("__") for p in parts):
                found.add(name)
    return found


# Crossings that predate the rule (each is debt: export the name from the room, or move the code).
PRIVATE_CROSSINGS = {
    ("bench/gateway.py", "myriad.models.providers._http"),
    ("bench/mcp.py", "myriad.models._tokens"),
    ("bench/metering.py", "myriad.metering._sqlite"),
    ("bench/metering.py", "myriad.metering._store"),
    ("bench/storage.py", "myriad.storage.postgres._sqlfile"),
    ("cli.py", "myriad.cluster._cli"),
    ("server/gateway_api.py", "myriad.models._tokenizers"),
}


def test_private_modules_are_imported_only_inside_their_room():
    """A module with a private part (``_x``) belongs to its room (``myriad.<room>``): other
    rooms use what the room's ``__init__`` exports."""
    violations = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        room = rel.parts[0] if len(rel.parts) > 1 else None
        for name in _private_imports(path):
            if name.split(".")[1] != room and (rel.as_posix(), _module_of(name)) not in PRIVATE_CROSSINGS:
                violations.append(f"{rel} imports {name}")
    assert not violations, "\n".join(violations)


def _module_of(name: str) -> str:
    """``myriad.metering._store.UsageQuery`` -> ``myriad.metering._store`` (the first private part ends it)."""
    parts = name.split(".")
    first = next(i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__"))
    return ".".join(parts[:first + 1])


# Tests that reach into private modules, from before the rule: each is debt (test through the
# room's exported names instead). New tests use public names only.
TESTS = SRC.parents[1] / "tests"
PRIVATE_IN_TESTS = {
    ("agents/test_chat.py", "myriad.agents.chat._ui"),
    ("cluster/test_cluster.py", "myriad.metering._store"),
    ("identity/test_vault.py", "myriad.identity._box"),
    ("integration/test_metered_gateway.py", "myriad.metering._sqlite"),
    ("integration/test_metered_sandbox.py", "myriad.metering._events"),
    ("integration/test_sandbox_limits.py", "myriad.metering._sqlite"),
    ("integration/test_usage_api.py", "myriad.metering._sqlite"),
    ("metering/_worker.py", "myriad.metering._store"),
    ("metering/conftest.py", "myriad.metering._postgres"),
    ("metering/conftest.py", "myriad.metering._store"),
    ("metering/test_budget_race.py", "myriad.metering._store"),
    ("metering/test_budgets.py", "myriad.metering._store"),
    ("metering/test_crash.py", "myriad.metering._store"),
    ("metering/test_gateway.py", "myriad.metering._gateway"),
    ("metering/test_ledger.py", "myriad.metering._events"),
    ("metering/test_ledger.py", "myriad.metering._sqlite"),
    ("metering/test_limits.py", "myriad.metering._store"),
    ("metering/test_local.py", "myriad.metering._local"),
    ("metering/test_local.py", "myriad.metering._sqlite"),
    ("metering/test_pg_outage.py", "myriad.metering._store"),
    ("models/test_quality_routing.py", "myriad.models._batching"),
    ("models/test_responses.py", "myriad.models.simulated._schema"),
    ("models/test_simulated.py", "myriad.models.simulated._engine"),
    ("models/test_wire.py", "myriad.models.providers._wire"),
    ("pg.py", "myriad.bench._postgres"),
    ("server/test_dbcopy.py", "myriad.metering._store"),
    ("storage/test_postgres.py", "myriad.storage.postgres._sqlfile"),
    ("telemetry/test_otlp.py", "myriad.telemetry._otlp"),  # white-box: our encoder against the SDK's
    ("telemetry/test_otlp.py", "myriad.telemetry._span"),
}


def test_tests_import_only_public_names():
    found = set()
    for path in sorted(TESTS.rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        found |= {(path.relative_to(TESTS).as_posix(), _module_of(n)) for n in _private_imports(path)}
    assert not found - PRIVATE_IN_TESTS, "tests importing private modules or names (use the room's exports):\n" + \
        "\n".join(f"{f} imports {m}" for f, m in sorted(found - PRIVATE_IN_TESTS))
    # an entry whose import is gone is paid debt: take it off the list, so it cannot come back
    assert not PRIVATE_IN_TESTS - found, sorted(PRIVATE_IN_TESTS - found)


def test_private_crossings_list_is_current():
    found = {(p.relative_to(SRC).as_posix(), _module_of(n)) for p in SRC.rglob("*.py") for n in _private_imports(p)}
    assert not PRIVATE_CROSSINGS - found, f"no longer imported, take off PRIVATE_CROSSINGS: {sorted(PRIVATE_CROSSINGS - found)}"
