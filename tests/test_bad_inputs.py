"""The bad-input catalogue: every case runs a real command line (the iteration and campaign flows, `python -m
sppo`) in this process against one finished smoke run, and checks three things: the exit code, that the
one-line message names the culprit (file, field, row, run or variable) and the fix, and that every finished
artifact is unchanged afterwards (file hashes; for cases that repair damage, the repaired store holds what
the undamaged run held). The flows share one temporary Prefect API started once for the module.

Each case prints `catalogue | case | exit code | first line of the message`: `pytest tests/test_bad_inputs.py -s`
shows the whole catalogue."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
PROMPTS = str(REPO / "data" / "prompts.jsonl")
RUN = "smoke"
VOLATILE = ("created", "seconds", "code_version", "info")  # a redone stage differs from the original only here


@dataclass
class World:
    """What a case sees: the store it runs against, a scratch folder for its own files, the baseline store."""

    store: Path
    scratch: Path
    baseline: Path

    def path(self, *parts: str) -> Path:
        return self.store / RUN / Path(*parts)


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # "iteration", "campaign" or "sppo"
    args: Callable[[World], list[str]]
    code: int
    message: str  # a regex the output must contain: it names the culprit
    damage: Callable[[World], None] | None = None  # runs on a copy of the baseline store first
    repaired: bool = False  # exit 0 after redoing what was damaged: the store then holds the baseline's content
    kept: tuple[str, ...] = field(default=())  # with damage: files the case changed on purpose and that stay so


def _iteration(*extra: str, store: bool = True, iteration: str = "1", run: str = RUN):
    def args(w: World) -> list[str]:
        base = ["--run", run, "--iteration", iteration, "--config", SMOKE]
        sets = [a.format(store=w.store, scratch=w.scratch) for a in extra]
        return base + (["--set", f"store={w.store}"] if store else []) + [x for s in sets for x in ("--set", s)]

    return args


def _write(name: str, data: bytes | str) -> Callable[[World], str]:
    def make(w: World) -> str:
        path = w.scratch / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return str(path)

    return make


def _prompts(name: str, data: bytes | str) -> Callable[[World], list[str]]:
    make = _write(name, data)
    return lambda w: _iteration()(w) + ["--set", f"data.prompts={make(w)}"]


def _model_folder(drop: tuple[str, ...], edit_config: Callable[[dict], None] | None = None):
    """The baseline's base model copied without some files: model.base of a fresh run."""

    def args(w: World) -> list[str]:
        folder = w.scratch / "model"
        shutil.copytree(w.baseline / RUN / "iter-000" / "model", folder)
        for pattern in drop:
            for p in folder.glob(pattern):
                p.unlink()
        if edit_config:
            config = json.loads((folder / "tokenizer_config.json").read_text())
            edit_config(config)
            (folder / "tokenizer_config.json").write_text(json.dumps(config))
        args = _iteration(f"model.base={folder}", "model.tokenizer=null", store=False)(w)
        return args + ["--set", f"store={w.scratch / 'fresh'}"]

    return args


def _truncate(rel: str) -> Callable[[World], None]:
    def damage(w: World) -> None:
        path = w.path(rel)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return damage


def _flip(rel: str) -> Callable[[World], None]:
    def damage(w: World) -> None:
        path = w.path(rel)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    return damage


def _lock(content: bytes | Callable[[], bytes]) -> Callable[[World], None]:
    def damage(w: World) -> None:
        w.path("iter-001.lock").write_bytes(content() if callable(content) else content)

    return damage


def _nan_in_dataset(w: World) -> None:
    """A dataset whose manifest matches its file but which holds a NaN probability (what a buggy judge or a
    hand-edited file leaves): the train stage must refuse it, and keep the trained model it has."""
    folder = w.path("iter-001", "dataset")
    table = pq.read_table(folder / "train.parquet")
    probs = table.column("chosen_probs").to_pylist()
    probs[3] = float("nan")
    table = table.set_column(table.schema.get_field_index("chosen_probs"), "chosen_probs", pa.array(probs))
    pq.write_table(table, folder / "train.parquet")
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "train.parquet").read_bytes()
    manifest["outputs"]["train.parquet"] = hashlib.sha256(data).hexdigest()
    manifest["sizes"]["train.parquet"] = len(data)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _damaged_answer_cache(w: World) -> None:
    shutil.rmtree(w.path("iter-001", "evaluate"))
    for entry in w.path("eval-answers").glob("*.json"):
        entry.write_text(entry.read_text().replace('"response": "', '"response": "tampered ', 1))


_LIVE_HOLDER: list[subprocess.Popen] = []


def _live_holder() -> bytes:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    _LIVE_HOLDER.append(holder)
    return json.dumps({"host": socket.gethostname(), "pid": holder.pid, "since": "2026-01-01T00:00:00Z"}).encode()


def _sppo(*words: str):
    return lambda w: [x.format(store=w.store) for x in words]


CASES = [
    # Run names: a folder inside the store, never a path.
    Case("run name climbs out", "iteration", _iteration(run="../../x"), 2, r"run name '\.\./\.\./x' is not allowed"),
    Case("run name absolute", "iteration", _iteration(run="/srv/x"), 2, r"run name '/srv/x' is not allowed"),
    Case("run name empty", "iteration", _iteration(run=""), 2, r"run name '' is not allowed"),
    Case("run name hidden", "iteration", _iteration(run=".x"), 2, r"run name '\.x' is not allowed"),
    Case("run name too long", "iteration", _iteration(run="r" * 65), 2, r"run name 'r{65}' is not allowed: use 1-64"),
    Case("run name with a space", "iteration", _iteration(run="a b"), 2, r"run name 'a b' is not allowed"),
    Case("run name in runs CLI", "sppo", _sppo("show", "../x", "1", "--store", "{store}"), 2, r"run name '\.\./x'"),
    Case("run name in best", "sppo", _sppo("best", "a/b", "1", "--store", "{store}"), 2, r"run name 'a/b'"),
    Case("run name in prepare-base", "sppo", _sppo("prepare-base", "--run", "..", "--config", SMOKE), 2, r"'\.\.'"),
    Case("run name in campaign", "campaign", lambda w: ["--run", "../c", "--config", SMOKE], 2, r"run name '\.\./c'"),
    # Iterations.
    Case("iteration 0", "iteration", _iteration(iteration="0"), 2, r"iterations are numbered from 1, got 0"),
    Case("iteration -1", "iteration", _iteration(iteration="-1"), 2, r"iterations are numbered from 1, got -1"),
    Case(
        "iteration without its predecessor",
        "iteration",
        _iteration(iteration="3"),
        2,
        r"iteration 3 starts from iteration 2's trained model.*make run-iteration ITER=2 RUN=smoke",
    ),
    Case(
        "campaign of 0 iterations", "campaign", lambda w: ["--iterations", "0", "--config", SMOKE], 2, r"--iterations"
    ),
    # Store URLs.
    Case("store s3:// without bucket", "iteration", _iteration("store=s3://", store=False), 2, r"names no bucket"),
    Case("store with mistyped scheme", "iteration", _iteration("store=s3:/b/x", store=False), 2, r"mistyped URL"),
    Case(
        "store with unknown scheme", "iteration", _iteration("store=gs://b/x", store=False), 2, r"unknown scheme 'gs'"
    ),
    Case(
        "store bucket invalid", "iteration", _iteration("store=s3://Bad_B", store=False), 2, r"'Bad_B' is not a valid"
    ),
    Case(
        "store placeholder unresolved",
        "iteration",
        _iteration("store={{{{ $SPPO_STORE }}}}", store=False),
        2,
        r"holds the unresolved placeholder \{\{ \$SPPO_STORE \}\}: set the environment variable SPPO_STORE",
    ),
    Case("store s3:// in runs CLI", "sppo", _sppo("runs", "--store", "s3://"), 2, r"store 's3://' names no bucket"),
    # Recipe files and overrides.
    Case(
        "recipe missing", "iteration", lambda w: ["--config", "configs/nope.yaml"], 2, r"recipe configs/nope\.yaml does"
    ),
    Case(
        "recipe not YAML",
        "iteration",
        lambda w: ["--config", _write("bad.yaml", "train:\n  beta: [0.1\n")(w)],
        2,
        r"bad\.yaml: not valid YAML \(line \d+, column \d+",
    ),
    Case(
        "recipe a list",
        "iteration",
        lambda w: ["--config", _write("list.yaml", "- a\n- b\n")(w)],
        2,
        r"list\.yaml must be a YAML mapping",
    ),
    Case(
        "recipe not UTF-8",
        "iteration",
        lambda w: ["--config", _write("latin1.yaml", "name: caf\xe9\n".encode("latin-1"))(w)],
        2,
        r"latin1\.yaml is not UTF-8",
    ),
    Case("override without =", "iteration", _iteration("train.loss.beta"), 2, r"'train\.loss\.beta' must"),
    Case(
        "override bad YAML", "iteration", _iteration("train.loss.beta=[1,"), 2, r"'train\.loss\.beta=\[1,': the value"
    ),
    Case("override below a value", "iteration", _iteration("train.loss.beta.x=1"), 2, r"train\.loss\.beta is a value"),
    Case("unknown field", "iteration", _iteration("train.nope=1"), 2, r"train\.nope: Extra inputs"),
    Case(
        "beta far too small",
        "iteration",
        _iteration("train.loss.beta=1e-300"),
        2,
        r"train\.loss\.sppo\.beta: Input should be greater",
    ),
    Case("negative learning rate", "iteration", _iteration("train.learning_rate=-1"), 2, r"train\.learning_rate:"),
    Case("NaN temperature", "iteration", _iteration("generate.temperature=.nan"), 2, r"generate\.temperature:.*finite"),
    Case("unknown judge", "iteration", _iteration("judge.type=oracle"), 2, r"judge: Input tag 'oracle'"),
    Case(
        "unknown loss in campaign",
        "campaign",
        lambda w: ["--losses", "ipo", "--config", SMOKE],
        2,
        r"train\.loss: Input tag 'ipo'",
    ),
    Case("processes without deepspeed", "iteration", _iteration("train.processes=2"), 2, r"needs a `deepspeed:`"),
    Case(
        "deepspeed JSON missing",
        "iteration",
        _iteration("train.deepspeed.config=configs/deepspeed/zero3-typo.json"),
        2,
        r"train\.deepspeed\.config: configs/deepspeed/zero3-typo\.json is missing",
    ),
    Case(
        "PairRM ranker missing",
        "iteration",
        _iteration("judge.type=pairrm", "judge.ranker_path=./no-ranker"),
        2,
        r"judge\.ranker_path: \./no-ranker is not a PairRM ranker folder",
    ),
    # Prompt files.
    Case(
        "prompt file missing",
        "iteration",
        _iteration("data.prompts={scratch}/nope.jsonl"),
        2,
        r"prompt file .*nope\.jsonl does not exist",
    ),
    Case(
        "prompt path without suffix, not a dataset id",
        "iteration",
        _iteration("data.prompts=data/prompts"),
        2,
        r"prompt file data/prompts does not exist",
    ),
    Case(
        "prompt file not UTF-8",
        "iteration",
        _prompts("p.jsonl", b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n'),
        2,
        r"p\.jsonl line 2: not UTF-8",
    ),
    Case("prompt line not JSON", "iteration", _prompts("p.jsonl", '{"prompt": "a"}\n{oops\n'), 2, r"line 2: not valid"),
    Case("prompt line not an object", "iteration", _prompts("p.jsonl", "[1, 2]\n"), 2, r"line 1: expected a JSON obj"),
    Case("prompt field missing", "iteration", _prompts("p.jsonl", '{"text": "a"}\n'), 2, r"field 'prompt' is missing"),
    Case(
        "constraints not a list",
        "iteration",
        _prompts("p.jsonl", '{"prompt": "a", "constraints": 3}\n'),
        2,
        r"line 1: field 'constraints' must be a list",
    ),
    Case("prompt file empty", "iteration", _prompts("p.jsonl", "\n"), 2, r"p\.jsonl: no prompts found"),
    Case(
        "parquet without the prompt column",
        "iteration",
        lambda w: _iteration()(w) + ["--set", f"data.prompts={_parquet(w)}"],
        2,
        r"q\.parquet: no column 'prompt' .*set data\.prompt_column",
    ),
    Case("too few prompts", "iteration", _iteration("data.prompts_per_iteration=100000"), 2, r"iteration 1 needs"),
    Case("held-out split too big", "iteration", _iteration("data.eval_prompts=5000"), 2, r"leaves no training prompts"),
    # Model sources.
    Case("model folder missing", "iteration", _iteration("model.base=./no/model"), 2, r"model\.base: \./no/model does"),
    Case("random config missing", "iteration", _iteration("model.base=random:nope.json"), 2, r"nope\.json does not"),
    Case("tokenizer missing", "iteration", _iteration("model.tokenizer=./no-tok"), 2, r"model\.tokenizer: \./no-tok"),
    Case(
        "model folder without config.json",
        "iteration",
        _model_folder(("config.json",)),
        2,
        r"model\.base: .*/model is a folder without config\.json",
    ),
    Case(
        "model folder without weights",
        "iteration",
        _model_folder(("*.safetensors",)),
        2,
        r"model\.base: .*/model holds no loadable model",
    ),
    Case(
        "model folder without tokenizer",
        "iteration",
        _model_folder(("tokenizer*", "special_tokens_map.json", "chat_template.jinja")),
        2,
        r"/model: no usable tokenizer",
    ),
    Case(
        "model folder without chat template",
        "iteration",
        _model_folder(("chat_template.jinja",), lambda c: c.pop("chat_template", None)),
        2,
        r"/model has no chat template",
    ),
    # Locks.
    Case("lock empty", "iteration", _iteration(), 2, r"iter-001\.lock exists but is not a lock.*0 bytes", _lock(b"")),
    Case("lock malformed", "iteration", _iteration(), 2, r"iter-001\.lock exists but is not a lock", _lock(b"[1,2]")),
    Case("lock held by a live process", "iteration", _iteration(), 2, r"held by pid \d+ on", _lock(_live_holder)),
    # Damaged artifacts: a re-run redoes exactly what is damaged and ends where the undamaged run was.
    Case(
        "generations truncated",
        "iteration",
        _iteration(),
        0,
        "",
        _truncate("iter-001/generate/generations.parquet"),
        True,
    ),
    Case("weights flipped", "iteration", _iteration(), 0, "", _flip("iter-001/model/model.safetensors"), True),
    Case(
        "base weights deleted",
        "iteration",
        _iteration(),
        0,
        "",
        lambda w: w.path("iter-000/model/model.safetensors").unlink(),
        True,
    ),
    Case(
        "manifest unreadable",
        "iteration",
        _iteration(),
        0,
        "",
        lambda w: w.path("iter-001/rank/manifest.json").write_bytes(b"\x00garbage"),
        True,
    ),
    Case("answer cache damaged", "iteration", _iteration(), 0, "", _damaged_answer_cache, True),
    Case(
        "NaN probability in the dataset",
        "iteration",
        _iteration(),
        2,
        r"train\.parquet: column 'chosen_probs' row 3 holds nan, not a probability",
        _nan_in_dataset,
        kept=("iter-001/dataset/train.parquet", "iter-001/dataset/manifest.json"),
    ),
    Case(
        "runs CLI reports damage",
        "sppo",
        _sppo("runs", RUN, "--store", "{store}"),
        0,
        r"corrupt",
        _truncate("iter-001/rank/preferences.parquet"),
        kept=("iter-001/rank/preferences.parquet",),
    ),
    Case(
        "verify finds a flipped byte",
        "sppo",
        _sppo("verify", RUN, "--store", "{store}"),
        1,
        r"model\.safetensors does not match the sha256",
        _flip("iter-001/model/model.safetensors"),
        kept=("iter-001/model/model.safetensors",),
    ),
]


def _parquet(w: World) -> str:
    path = w.scratch / "q.parquet"
    pq.write_table(pa.table({"instruction": ["a", "b"]}), path)
    return str(path)


def _run(command: str, argv: list[str]) -> int:
    if command == "iteration":
        from flows.sppo_iteration import main
    elif command == "campaign":
        from flows.sppo_campaign import main
    else:
        from sppo.__main__ import main
    return main(argv)


def _files(store: Path, content_only: bool) -> dict[str, str]:
    """sha256 of every file under the store; with content_only, manifests without their run times."""
    found = {}
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if content_only and path.name == "manifest.json":
            data = json.dumps({k: v for k, v in json.loads(data).items() if k not in VOLATILE}, sort_keys=True).encode()
        found[str(path.relative_to(store))] = hashlib.sha256(data).hexdigest()
    return found


def _finished(store: Path) -> dict[str, str]:
    """The finished artifacts: stage folders and answer cache entries (not locks, logs or superseded folders)."""
    return {
        name: digest
        for name, digest in _files(store, content_only=True).items()
        if not name.endswith(".lock") and ".superseded-" not in name
    }


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    from flows.cli import local_api

    store = tmp_path_factory.mktemp("baseline")
    with local_api():
        assert _run("iteration", _iteration()(World(store, store, store))) == 0
        yield store


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, baseline: Path, tmp_path: Path, capsys):
    store = baseline
    if case.damage:
        store = tmp_path / "store"
        shutil.copytree(baseline, store)
    world = World(store, tmp_path, baseline)
    if case.damage:
        case.damage(world)
    before = _files(store, content_only=False)
    try:
        code = _run(case.command, case.args(world))
    finally:
        for holder in _LIVE_HOLDER:
            holder.kill()
    out = capsys.readouterr()
    said = out.out + out.err
    assert code == case.code, f"exit {code}, expected {case.code}:\n{said[-3000:]}"
    if case.code:
        errors = [line for line in said.splitlines() if line.startswith("error:")]
        assert errors, f"no `error:` line:\n{said[-3000:]}"
        assert "Traceback" not in out.err, "a traceback reached the console"
    first = next((line for line in said.splitlines() if line.startswith("error:")), said.strip().splitlines()[-1])
    print(f"\ncatalogue | {case.id} | {code} | {first[:300]}", file=sys.__stdout__)
    assert case.message == "" or re.search(case.message, said), f"{case.message!r} not in:\n{said}"
    if case.repaired:
        assert _finished(store) == _finished(baseline), "the re-run did not restore what the undamaged run held"
        return
    after = _files(store, content_only=False)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k) and not k.endswith(".lock")}
    assert changed <= set(f"{RUN}/{k}" for k in case.kept), f"finished artifacts changed: {sorted(changed)}"
    if store is baseline:
        assert not (store / RUN / "iter-001.lock").exists()
