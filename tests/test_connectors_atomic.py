"""atomic_path: a file or folder appears complete under its final name, or not at all."""

from __future__ import annotations

import pytest

from connectors.atomic import atomic_path


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_file_appears_only_after_the_block(tmp_path):
    final = tmp_path / "scores.csv"
    with atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".scores.csv.")
        tmp.write_text("a,b\n")
        assert not final.exists()
    assert final.read_text() == "a,b\n"
    assert _entries(tmp_path) == ["scores.csv"]


def test_exception_leaves_nothing_and_keeps_the_old_file(tmp_path):
    final = tmp_path / "scores.csv"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert _entries(tmp_path) == []
    final.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("new, half")
        raise RuntimeError("killed")
    assert final.read_text() == "old" and _entries(tmp_path) == ["scores.csv"]


def test_folders_are_written_and_replaced_whole(tmp_path):
    final = tmp_path / "nested" / "dataset"
    for version in ("v1", "v2"):
        with atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / "part.txt").write_text(version)
    assert (final / "part.txt").read_text() == "v2"
    assert _entries(final.parent) == ["dataset"]
    with pytest.raises(ValueError), atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "part.txt").write_text("v3, half")
        raise ValueError("bad data")
    assert (final / "part.txt").read_text() == "v2"
    assert _entries(final.parent) == ["dataset"]


def test_refuses_to_swap_files_and_folders_and_to_publish_nothing(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError), atomic_path(tmp_path / "dir") as tmp:
        tmp.write_text("x")
    (tmp_path / "file").write_text("keep")
    with pytest.raises(NotADirectoryError), atomic_path(tmp_path / "file") as tmp:
        tmp.mkdir()
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "never"):
        pass
    assert _entries(tmp_path) == ["dir", "file"]
    assert (tmp_path / "file").read_text() == "keep"
