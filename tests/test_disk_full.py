"""A full disk is reported once, naming where the write went and how much space there is, and never retried."""

import errno
from pathlib import Path

import pytest

from sppo.store import ArtifactStore, DiskFullError, commit_stage


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")  # as a buffered write reports it: no file name


def test_stage_that_fills_the_disk_names_its_folder_and_the_free_space(tmp_path):
    store = ArtifactStore(tmp_path)
    out = store.join("run", "iter-001", "rank")
    message = r"no space left on the device writing .*\.rank\.tmp: [\d.]+ [KMGT]?i?B free; free space there"
    with pytest.raises(DiskFullError, match=message):
        commit_stage(store, out, "rank", "f", {}, _no_space)
    assert not store.exists(out)


def test_small_write_names_its_file_the_space_needed_and_free(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    monkeypatch.setattr(Path, "write_bytes", _no_space)
    with pytest.raises(DiskFullError, match=r"writing .*answers\.json: .* free, 2\.0 MiB needed"):
        store.put_bytes(store.join("run", "answers.json"), b"x" * (2 << 20))


def test_disk_full_is_not_retried():
    from prefect import flow, task

    from tasks.stages import STAGE

    calls = []

    @task(**{**STAGE, "retry_delay_seconds": 0})
    def fills_the_disk():
        calls.append(1)
        _no_space()

    @flow
    def once():
        with pytest.raises(OSError):
            fills_the_disk()

    once()
    assert len(calls) == 1
