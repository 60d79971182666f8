"""The examples in docs/models.md run and print what the page says they print."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"
PAIRS = re.findall(r"```python\n(.*?)```\n\nOutput:\n\n```text\n(.*?)```", DOC.read_text(), re.S)


def test_the_page_has_its_examples():
    assert len(PAIRS) == 2


@pytest.mark.parametrize("code,shown", PAIRS, ids=["agent", "failover"])
def test_example_runs_and_matches_the_page(tmp_path, code, shown):
    script = tmp_path / "example.py"
    script.write_text(code)
    src = str(DOC.parents[1] / "src")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=src))
    assert out.returncode == 0, out.stderr
    assert out.stdout == shown
