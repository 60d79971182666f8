"""The files API of a container sandbox (host side, confined to /workspace)."""

from __future__ import annotations

import pytest

from myriad.errors import Conflict, InvalidRequest, NotFound
from myriad.sandbox import ContainerSandbox
from myriad.sandbox.files import normalize

pytestmark = pytest.mark.integration


def test_normalize() -> None:
    assert normalize("a/b") == "a/b"
    assert normalize("/workspace/a/../b") == "b"
    assert normalize("../../x") == "x"
    assert normalize("/workspace") == "."
    with pytest.raises(InvalidRequest):
        normalize("/etc/passwd")
    with pytest.raises(InvalidRequest):
        normalize("a\0b")


async def test_files_roundtrip(box: ContainerSandbox) -> None:
    assert await box.write_file("src/app/main.py", "print('hi')\n") == 12
    assert await box.read_file("/workspace/src/app/main.py") == b"print('hi')\n"
    assert await box.exists("src/app") and not await box.exists("nope")
    await box.mkdir("data/raw")
    names = [(f.path, f.type) for f in await box.list_files(".", recursive=True)]
    assert ("/workspace/src/app/main.py", "file") in names and ("/workspace/data/raw", "dir") in names
    # what the host wrote, the sandbox can change (same owner inside)
    res = await box.exec("python3 src/app/main.py && echo more >> src/app/main.py && rm -r data && touch data2")
    assert res.exit_code == 0, res.stderr
    assert (await box.read_file("src/app/main.py")).endswith(b"more\n")
    assert not await box.exists("data")
    with pytest.raises(Conflict, match="not empty"):
        await box.delete_file("src")
    await box.delete_file("src", recursive=True)
    assert not await box.exists("src")
    with pytest.raises(NotFound):
        await box.delete_file("src")
    with pytest.raises(NotFound):
        await box.read_file("src/app/main.py")
    with pytest.raises(InvalidRequest, match="is a directory"):
        await box.mkdir("d") or await box.read_file("d")
    await box.write_file("bin.dat", bytes(range(256)))
    assert await box.read_file("bin.dat") == bytes(range(256))
    assert (await box.exec("wc -c < bin.dat")).stdout.strip() == "256"
