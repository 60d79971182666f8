"""The room's public surface, its import boundaries, and that it runs without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import myriad.models

ROOM = Path(myriad.models.__file__).parent
SRC = str(ROOM.parent.parent)
ENV = {**__import__("os").environ, "PYTHONPATH": SRC}
ALLOWED = {"myriad.errors", "myriad.safe_json", "myriad.models", "myriad.identity", "myriad.metering", "myriad.telemetry",
           "myriad.mcp", "myriad.storage"}  # storage: the PostgreSQL helpers of the shared response store


def test_public_surface_is_exactly_this():
    assert sorted(myriad.models.__all__) == sorted([
        "ChatChunk", "ChatResult", "Deployment", "EmbeddingResult", "Gateway", "GatewayConfig", "ModelsClient",
        "Provider", "Usage", "UsageRecord", "VirtualModel", "register_provider", "register_strategy",
        "simulated_config"])
    for name in myriad.models.__all__:
        assert getattr(myriad.models, name) is not None


def test_models_imports_no_upper_room():
    bad = []
    for path in ROOM.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                if n.startswith("myriad") and not any(n == a or n.startswith(a + ".") for a in ALLOWED):
                    bad.append(f"{path.relative_to(ROOM)} imports {n}")
    assert not bad, bad


def test_gateway_runs_without_torch_and_imports_nothing_heavy():
    code = (
        "import sys, asyncio\n"
        "sys.modules['torch'] = None\n"  # any import of torch now fails loudly
        "sys.modules['sentence_transformers'] = None\n"
        "import myriad.models\n"
        "from myriad.models import Gateway\n"
        "async def main():\n"
        "    g = Gateway.simulated()\n"
        "    r = await g.chat({'messages': [{'role': 'user', 'content': 'hi'}], 'cache': True})\n"
        "    await g.embed(['x'])\n"
        "    print(r.text[:11])\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("[simulated")


def test_local_embedder_without_the_extra_names_it():
    code = (
        "import sys, asyncio\n"
        "sys.modules['sentence_transformers'] = None\n"
        "from myriad.models import Gateway, GatewayConfig\n"
        "g = Gateway(GatewayConfig.from_toml('[[deployment]]\\nmodel = \"e\"\\nprovider = \"local\"\\nkind = \"embedding\"\\n'))\n"
        "try:\n"
        "    asyncio.run(g.embed(['x']))\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    assert "ConfigError" in out.stdout and "embeddings" in out.stdout and "torch==2.13.0" in out.stdout


def test_importing_models_starts_nothing():
    code = ("import threading, sys\nbefore = threading.active_count()\nimport myriad.models, myriad.models.simulated\n"
            "assert threading.active_count() == before\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
