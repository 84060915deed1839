"""Tests of infrastructure/io.py: the lock, the atomic writers, the rank helpers."""

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from infrastructure import io
from infrastructure.io import (
    atomic_path,
    file_lock,
    global_rank,
    is_global_zero,
    json_safe,
    local_rank,
    try_file_lock,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from tests.support.modes import UMASKS, umask, wrong_modes
from tests.support.paths import REPO_ROOT


def test_lock_excludes_other_holders_and_is_free_after_the_block(tmp_path):
    lock_path = tmp_path / "sub" / ".lock"  # the folder is created
    with file_lock(lock_path):
        assert try_file_lock(lock_path) is None  # held: another open of the file cannot take it
    held = try_file_lock(lock_path)
    assert held is not None and held.is_locked
    assert try_file_lock(lock_path) is None
    held.release()
    assert lock_path.exists()  # left in place for the next holder
    with file_lock(lock_path):
        pass


HOLDER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from infrastructure.io import file_lock
    with file_lock({lock!r}):
        print("held", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.slow
def test_lock_of_a_killed_process_is_released(tmp_path):
    lock_path = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=str(REPO_ROOT), lock=str(lock_path))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert try_file_lock(lock_path) is None  # another process holds it
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        deadline = time.monotonic() + 10
        while (held := try_file_lock(lock_path)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held is not None  # the kernel dropped the killed holder's lock
        held.release()
    finally:
        holder.kill()
        holder.wait()


def test_atomic_writes(tmp_path):
    target = tmp_path / "out" / "file.txt"
    assert write_text_atomic(target, "héllo\n") == target
    assert target.read_bytes() == "héllo\n".encode()
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    write_json_atomic(tmp_path / "a.json", {"b": 1, "a": [1.5, None]}, sort_keys=True)
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "nan.json", {"x": math.nan})  # strict JSON
    assert not (tmp_path / "nan.json").exists()
    mask = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "mode.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "mode.txt").stat().st_mode & 0o777 == 0o640  # the umask's, not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "file.txt"
    target.write_text("old")

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", crash)
    with pytest.raises(OSError):
        write_text_atomic(target, "new")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]
    assert list(tmp_path.glob(io.TEMP_GLOB)) == []


def test_atomic_path_for_files_a_library_writes(tmp_path):
    target = tmp_path / "x.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.json.tmp-")
        tmp.write_text(json.dumps([1]))
        assert not target.exists()
    assert json.loads(target.read_text()) == [1]


@pytest.mark.parametrize("mask", UMASKS)
def test_every_atomic_writer_gives_the_umasks_mode_whoever_created_the_file(tmp_path, mask):
    """mkstemp creates 0600 whatever the umask: a file a library made that way still ends up at the umask's mode."""
    with umask(mask):
        root = tmp_path / "root"
        write_bytes_atomic(root / "a" / "bytes.bin", b"1")  # folders created on the way
        write_text_atomic(root / "text.txt", "x")
        write_json_atomic(root / "data.json", {"a": 1})
        with atomic_path(root / "library.png") as tmp:
            handle, made = tempfile.mkstemp(dir=tmp.parent)  # a writer that creates 0600
            os.close(handle)
            os.replace(made, tmp)
        with atomic_path(root / "private.txt") as tmp:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))
        assert io.umask_mode() == 0o666 & ~mask and io.umask_mode(directory=True) == 0o777 & ~mask
        assert io.current_umask() == mask
    assert wrong_modes(root, mask) == []
    assert len([p for p in root.rglob("*") if p.is_file()]) == 5


def test_json_safe_replaces_non_finite_numbers():
    value = {"a": math.nan, "b": [1.0, math.inf, (-math.inf, 2)], "c": "nan", "d": 3}
    assert json_safe(value) == {"a": None, "b": [1.0, None, [None, 2]], "c": "nan", "d": 3}


@pytest.mark.parametrize("env, local, rank, zero", [
    ({}, 0, 0, True),
    ({"LOCAL_RANK": "1", "RANK": "1"}, 1, 1, False),
    ({"SLURM_LOCALID": "0", "SLURM_PROCID": "4"}, 0, 4, False),  # first task of another node
    ({"LOCAL_RANK": "0", "RANK": "0", "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}, 0, 0, True),  # launcher first
    ({"RANK": "", "SLURM_PROCID": "2"}, 0, 2, False),  # empty means unset
])
def test_ranks_from_the_environment(monkeypatch, env, local, rank, zero):
    for name in ("LOCAL_RANK", "RANK", "SLURM_LOCALID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert (local_rank(), global_rank(), is_global_zero()) == (local, rank, zero)
