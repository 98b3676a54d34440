"""Atomic writes: the target is the old file or the complete new one, and no temp file is left."""

from __future__ import annotations

import errno
import json
import stat

import numpy as np
import pytest

from captioning.storage import atomic


def test_failure_inside_the_block_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "weights.npy"
    np.save(target, np.arange(3))
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic.atomic_output(target, suffix=".npy") as temp:
            np.save(temp, np.arange(1000))  # half of a new file, then the writer fails
            assert temp.parent == tmp_path and temp.name.startswith(".weights.npy.") and temp.stat().st_size > 0
            raise RuntimeError("writer died")
    assert np.array_equal(np.load(target), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.npy"]


def test_ctrl_c_inside_the_block_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_output(target) as temp:
            temp.write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_success_replaces_the_target_with_an_ordinary_file(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with atomic.atomic_output(target, suffix=".png") as temp:
        assert temp.suffix == ".png"  # writers that pick the format from the name see it
        temp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == atomic.FILE_MODE  # not mkstemp's private 0600
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_json_is_indented_utf8_with_a_trailing_newline(tmp_path):
    target = tmp_path / "captions.json"
    atomic.write_json_atomic(target, {"b": "café", "a": [1, 2]})
    text = target.read_text(encoding="utf-8")
    assert text == '{\n  "b": "café",\n  "a": [\n    1,\n    2\n  ]\n}\n'
    atomic.write_json_atomic(target, {"b": 1, "a": 2}, sort_keys=True)
    assert list(json.loads(target.read_text(encoding="utf-8"))) == ["a", "b"]


def test_unserialisable_json_leaves_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    atomic.write_text_atomic(target, "old\n")
    with pytest.raises(TypeError):
        atomic.write_json_atomic(target, {"bad": object()})
    assert target.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_full_disk_while_writing_text_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "vocab.json"
    atomic.write_text_atomic(target, "old\n")
    real_write_text = type(target).write_text

    def fill_the_disk(self, text, encoding=None):
        real_write_text(self, text[:2], encoding=encoding)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(target), "write_text", fill_the_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text_atomic(target, "new content\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_missing_folder_is_an_os_error_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic.write_text_atomic(tmp_path / "missing" / "file.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from-a").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "from-b").write_text("b")
    if not atomic.exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this system or file system has no atomic exchange (renameat2 RENAME_EXCHANGE)")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["from-b"]
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from-a"]
    with pytest.raises(FileNotFoundError):
        atomic.exchange(tmp_path / "a", tmp_path / "missing")


def test_write_bytes_atomic_replaces_the_file_or_leaves_it(tmp_path, monkeypatch):
    target = tmp_path / "w.h5"
    atomic.write_bytes_atomic(target, b"old")
    atomic.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == atomic.FILE_MODE

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(target), "write_bytes", full)
    with pytest.raises(OSError):
        atomic.write_bytes_atomic(target, b"newer")
    assert [p.name for p in tmp_path.iterdir()] == ["w.h5"] and target.read_text() == "new"
