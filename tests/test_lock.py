"""One writer per run and iteration: a second writer fails clearly (or waits); a dead writer's lock is taken over."""

import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
import yaml

from sppo import iteration
from sppo.iteration import IterationLocked, iteration_lock
from sppo.store import ArtifactStore


def test_second_writer_fails_naming_the_holder(tmp_path):
    store = ArtifactStore(tmp_path)
    url = store.join("run", "iter-001.lock")
    with iteration_lock(store, url):
        with pytest.raises(IterationLocked, match=r"held by pid \d+ on .* another run of this iteration"):
            with iteration_lock(store, url):
                pass
        assert store.exists(url)
    assert not store.exists(url)


def test_second_writer_can_wait_for_the_first(tmp_path):
    store = ArtifactStore(tmp_path)
    url = store.join("run", "iter-001.lock")
    order = []

    def first():
        with iteration_lock(store, url):
            order.append("first in")
            time.sleep(0.5)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    while not store.exists(url):
        time.sleep(0.01)
    with iteration_lock(store, url, wait_seconds=30, poll_seconds=0.05):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    store = ArtifactStore(tmp_path)
    url = store.join("run", "iter-001.lock")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.put_bytes(url, json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": "then"}).encode())
    with iteration_lock(store, url):
        assert json.loads(store.read_bytes(url))["pid"] != dead.pid


@pytest.mark.parametrize("content", [b"", b"[1,2]", b"{not json"])
def test_unreadable_lock_waits_then_says_what_to_do(tmp_path, content):
    store = ArtifactStore(tmp_path)
    url = store.join("run", "iter-001.lock")
    store.put_bytes(url, content)
    with pytest.raises(IterationLocked, match=r"exists but is not a lock this code wrote.*delete it and run again"):
        with iteration_lock(store, url, poll_seconds=0.01, unreadable_grace_seconds=0.1):
            pass
    assert store.read_bytes(url) == content, "someone else's object is left alone"


def test_lock_is_created_with_its_content(tmp_path):
    store = ArtifactStore(tmp_path)
    url = store.join("run", "iter-001.lock")
    store.create_exclusive(url, b'{"pid": 1}')
    assert store.read_bytes(url) == b'{"pid": 1}'
    with pytest.raises(FileExistsError):
        store.create_exclusive(url, b"other")
    assert store.read_bytes(url) == b'{"pid": 1}'
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["iter-001.lock"], "no temporary file is left"


def test_two_takers_of_a_dead_lock_never_both_hold_it(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    url = store.join("run", "iter-001.lock")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.put_bytes(url, json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": "then"}).encode())
    alive = iteration.process_alive

    def slow_process_alive(pid):  # both takers read the dead holder before either takes over
        time.sleep(0.3)
        return alive(pid)

    monkeypatch.setattr(iteration, "process_alive", slow_process_alive)
    inside, overlaps, problems = [], [], []
    start = threading.Barrier(2)

    def taker(name):
        start.wait()
        try:
            with iteration_lock(store, url, wait_seconds=30, poll_seconds=0.05):
                inside.append(name)
                if len(inside) > 1:
                    overlaps.append(list(inside))
                held = store.read_bytes(url)
                time.sleep(0.6)
                if store.read_bytes(url) != held:
                    problems.append(f"{name}'s lock was replaced while it held it")
                inside.remove(name)
        except Exception as err:  # noqa: BLE001 - a taker whose lock was deleted under it reports it here
            problems.append(f"{name}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=taker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not overlaps and not problems
    assert not store.exists(url), "the last holder released it"


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    store = ArtifactStore(tmp_path)
    url = store.join("run", "iter-001.lock")
    with iteration_lock(store, url):
        store.put_bytes(url, b'{"host": "elsewhere", "pid": 7, "since": "now", "token": "theirs"}')
    assert json.loads(store.read_bytes(url))["token"] == "theirs"


def test_prepare_base_never_writes_while_the_base_is_locked(tmp_path, capsys):
    from sppo.__main__ import main
    from sppo.store import RunLayout

    from .conftest import REPO

    recipe = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    recipe["store"] = str(tmp_path / "store")
    recipe["model"]["base"] = f"random:{REPO / 'configs' / 'tiny-llama.json'}"
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    layout = RunLayout(ArtifactStore(tmp_path / "store"), "r")
    with iteration_lock(layout.store, layout.lock_url(0)):  # as the iteration-1 flow holds it
        assert main(["prepare-base", "--run", "r", "--config", str(config)]) == 2
        assert not (tmp_path / "store" / "r" / "iter-000").exists(), "nothing written, not even scratch"
    assert re.search(r"iter-001\.lock is held by pid \d+ on ", capsys.readouterr().err)
    assert main(["prepare-base", "--run", "r", "--config", str(config)]) == 0
    assert layout.store.manifest(layout.model_url(0)) is not None
    assert not layout.store.exists(layout.lock_url(0)), "released"
