"""The atomic-write helpers every write site uses: a reader never sees half a file or directory."""

from __future__ import annotations

import json

import pytest
import torch

from metanas._io import atomic_dir, atomic_write, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_without_leftovers(tmp_path):
    path = tmp_path / "x.pt"
    atomic_write(path, lambda f: torch.save({"a": torch.ones(2)}, f))
    atomic_write(path, lambda f: torch.save({"a": torch.zeros(2)}, f))
    assert torch.load(path)["a"].tolist() == [0.0, 0.0]
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = atomic_write_json({"v": 1}, tmp_path / "a.json")

    def broken(f):
        f.write("{")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken, binary=False)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        atomic_write_text("one", tmp / "a.txt")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "one"
    with pytest.raises(FileExistsError):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("two")
            raise RuntimeError("stop")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the old directory is untouched
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary siblings left
