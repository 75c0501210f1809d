"""PairRM (llm-blender's pairwise reward model) as a Judge: K responses in, a K x K preference matrix out.

Two ways to get P(y_i > y_j | x) from PairRM, whose raw output is a logit L_ij for "i beats j" with i shown
first:

- mode "scores" (reference-compatible, as the uclaml/SPPO scripts do): one score per response from
  `Blender.rank(..., return_scores=True)`, s_i = mean_j (L_ij - L_ji), then P_ij = sigmoid(s_i - s_j).
- mode "pairwise" (paper-exact): P_ij = sigmoid(l_ij) for every pair i < j, with l_ij from
  `Blender.compare(..., mode="[A,B]+[B,A]")` (= L_ij - L_ji, both orders so position bias cancels),
  P_ji = 1 - P_ij; the scores are the win rates, row means of P.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from sppo.judges.base import Judgement, JudgeSettings, sigmoid_matrix
from sppo.judges.blender_compat import patch_llm_blender
from sppo.precision import resolve_precision
from sppo.prompts import PromptRecord
from sppo.settings import NOT_OUTPUT
from sppo.sources import looks_like_path

log = logging.getLogger(__name__)

MODES = ("scores", "pairwise")


class PairRMJudgeConfig(JudgeSettings):
    type: Literal["pairrm"] = "pairrm"
    ranker_path: str = Field("llm-blender/PairRM", description="PairRM checkpoint folder or hub id.")
    mode: Literal["scores", "pairwise"] = Field(
        "scores",
        description="'scores': P_ij = sigmoid(s_i - s_j) from per-response scores (reference-compatible); "
        "'pairwise': P_ij from PairRM's pairwise comparison directly (paper-exact).",
    )
    # Unlike other judges' batches, PairRM's change its output: llm-blender cuts candidates by the longest
    # prompt of a batch (see README), so the batch size enters fingerprints.
    batch_size: int = Field(8, ge=1, description="Prompts per llm-blender call (rank's batch_size=1 is the reference).")

    prompt_format: Literal["chat_template", "raw"] = Field(
        "chat_template",
        description="What PairRM reads as the instruction: 'chat_template', the prompt in the policy's chat template "
        "as the reference's rank.py gives it, or 'raw', the prompt text alone.",
    )

    trust_remote_code: bool = Field(
        False,
        description="Allow a ranker whose backbone llm-blender loads with the hub's own code (Phi backbones); "
        "off for safety: such a ranker is refused before anything is loaded.",
        json_schema_extra=NOT_OUTPUT,  # a permission: the same ranker judges the same either way
    )

    def build(self, precision: str = "fp32") -> PairRMJudge:
        return PairRMJudge(
            self.ranker_path,
            self.mode,
            self.batch_size,
            prompt_format=self.prompt_format,
            precision=precision,
            trust_remote_code=self.trust_remote_code,
        )

    def check(self, field: str) -> None:
        if looks_like_path(self.ranker_path) and not Path(self.ranker_path).expanduser().is_dir():
            raise ValueError(f"{field}.ranker_path: {self.ranker_path} is not a PairRM ranker folder")


class PairRMJudge:
    """Judge with a PairRM ranker loaded through `llm_blender.Blender().loadranker(ranker_path)`.

    ranker_path: a local ranker folder (config.json + model.safetensors or pytorch_model.bin) or a hub id.
    batch_size: sequences per forward pass, i.e. prompts per pass in "scores" mode and response pairs per
    pass in "pairwise" mode; both modes then run the same number of passes of the same size.
    prompt_format: "raw" reads each PromptRecord's prompt; "chat_template" its chat_prompt (the reference's).
    """

    name = "pairrm"

    def __init__(
        self,
        ranker_path: str,
        mode: str = "scores",
        batch_size: int = 8,
        device: str = "cpu",
        prompt_format: str = "raw",
        precision: str = "fp32",
        trust_remote_code: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"PairRMJudge mode {mode!r} is not one of {MODES}")
        self.ranker_path = ranker_path
        self.prompt_format = prompt_format
        self.mode = mode
        self.batch_size = batch_size
        self.blender = _load_blender(ranker_path, device, trust_remote_code)
        self.device = device
        self.bf16 = resolve_precision(precision).name == "bf16"

    def judge(self, prompts: Sequence[PromptRecord], responses: Sequence[Sequence[str]]) -> list[Judgement]:
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"PairRMJudge got {len(prompts)} prompts but {len(responses)} response lists")
        if not prompts:
            return []
        inputs = [self._source(p) for p in prompts]
        # bf16: the ranker's matmuls under autocast; its fp32 weights and our sigmoid of the logits stay fp32.
        with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.mode == "scores":
                return self._judge_scores(prompts, inputs, responses)
            return self._judge_pairwise(inputs, responses)

    def _source(self, prompt: PromptRecord) -> str:
        """What PairRM reads as the instruction: the chat-formatted prompt, as the reference's rank.py passes
        it, or the raw prompt."""
        if self.prompt_format == "raw":
            return prompt.prompt
        if not prompt.chat_prompt:
            raise ValueError(
                f"PairRM judge.prompt_format 'chat_template' needs prompt {prompt.id!r} in the policy's chat template; "
                "this caller gave only the raw prompt (set judge.prompt_format: raw)"
            )
        return prompt.chat_prompt

    def _judge_scores(
        self, prompts: Sequence[PromptRecord], inputs: list[str], responses: Sequence[Sequence[str]]
    ) -> list[Judgement]:
        k = len(responses[0])
        for prompt, rs in zip(prompts, responses, strict=True):
            if len(rs) != k:
                raise ValueError(
                    f"PairRMJudge mode 'scores' needs the same number of responses for every prompt: prompt "
                    f"{prompts[0].id!r} has {k}, prompt {prompt.id!r} has {len(rs)}"
                )
        scores = self.blender.rank(
            inputs,
            [list(rs) for rs in responses],
            return_scores=True,
            batch_size=self.batch_size,
            disable_tqdm=True,
        ).astype(np.float64)
        return [Judgement(scores=s, matrix=sigmoid_matrix(s)) for s in scores]

    def _judge_pairwise(self, inputs: list[str], responses: Sequence[Sequence[str]]) -> list[Judgement]:
        matrices = [np.full((len(rs), len(rs)), 0.5) for rs in responses]
        pairs = [(p, i, j) for p, rs in enumerate(responses) for i, j in itertools.combinations(range(len(rs)), 2)]
        if pairs:
            logits = self.blender.compare(
                [inputs[p] for p, _, _ in pairs],
                [responses[p][i] for p, i, _ in pairs],
                [responses[p][j] for p, _, j in pairs],
                batch_size=self.batch_size,
                return_logits=True,
                mode="[A,B]+[B,A]",
                disable_tqdm=True,
            )
            # sigmoid via tanh: no overflow warning for large |logit|.
            wins = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))
            for (p, i, j), p_ij in zip(pairs, wins, strict=True):
                matrices[p][i, j] = p_ij
                matrices[p][j, i] = 1.0 - p_ij
        # Row means over all K, the 1/2 against itself included: the win rate against the sampled policy.
        return [Judgement(scores=m.mean(axis=1), matrix=m) for m in matrices]


def remote_code_reason(ranker_config: dict, ranker_path: str) -> str | None:
    """Why llm-blender would run a ranker with trust_remote_code=True, or None: it hardcodes that for a
    backbone whose model_type starts with "phi" (model_util.build_pretrained_model) and for a tokenizer
    whose model_name contains "phi" (model_util.build_tokenizer; the ranker's path stands in for a
    missing model_name)."""
    model_type = str(ranker_config.get("model_type") or "")
    model_name = str(ranker_config.get("model_name") or ranker_path)
    if model_type.startswith("phi"):
        return f"its config.json says model_type {model_type!r}"
    if "phi" in model_name:
        return f"its model_name {model_name!r} contains 'phi'"
    return None


def _ranker_config(ranker_path: str, local: Path) -> dict:
    """The ranker's config.json: from its folder, or that one file from the hub."""
    if local.is_dir():
        return json.loads((local / "config.json").read_text(encoding="utf-8"))
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(ranker_path, "config.json")).read_text(encoding="utf-8"))


def _load_blender(ranker_path: str, device: str, trust_remote_code: bool = False):
    local = Path(ranker_path).expanduser()
    if not local.exists() and not _is_hub_id(ranker_path):
        raise FileNotFoundError(
            f"PairRM ranker {ranker_path!r} does not exist: set judge.ranker_path to a ranker folder "
            "(config.json + model.safetensors) or a hub id such as llm-blender/PairRM"
        )
    if local.is_dir() and not (local / "config.json").is_file():
        raise FileNotFoundError(f"PairRM ranker folder {local} has no config.json (ranker_type, model_name, ...)")
    reason = remote_code_reason(_ranker_config(ranker_path, local), ranker_path)
    if reason and not trust_remote_code:
        raise ValueError(
            f"judge.trust_remote_code: PairRM ranker {ranker_path!r} would run code from its model repository "
            f"(llm-blender loads it with trust_remote_code=True: {reason}); set judge.trust_remote_code: true "
            "only if you trust that code"
        )
    patch_llm_blender()
    from llm_blender import Blender, BlenderConfig

    with _quiet_llm_blender():  # the constructor warns that no ranker or fuser is loaded yet
        blender = Blender(BlenderConfig(device=device, use_tqdm=False))
    with _quiet_llm_blender() as messages:
        try:
            blender.loadranker(str(local) if local.exists() else ranker_path, device=device)
        except Exception as err:
            said = "; ".join(messages)
            raise RuntimeError(
                f"could not load PairRM ranker {ranker_path!r}: {err}" + (f" (llm-blender: {said})" if said else "")
            ) from err
    for message in messages:
        if message.startswith("Missing keys"):
            # llm-blender only warns here, leaving a ranker with random weights: never judge with that.
            raise RuntimeError(f"PairRM ranker {ranker_path!r}: checkpoint does not fit the model: {message}")
        log.log(
            logging.WARNING if message.startswith("Unexpected keys") else logging.DEBUG,
            "llm-blender: %s",
            message,
        )
    return blender


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


@contextlib.contextmanager
def _quiet_llm_blender() -> Iterator[list[str]]:
    """Collect what llm-blender says while loading (root-logger warnings, print()s) instead of showing it.

    llm-blender logs through the root logger (`logging.warning`, which also calls basicConfig() and so
    installs a stderr handler for the whole program) and print()s; transformers adds progress bars and a
    notice about resizing embeddings that the checkpoint then overwrites. The caller decides what to keep.
    """
    import transformers.utils.logging as hf_logging

    messages: list[str] = []

    class _Collect(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if "llm_blender" in record.pathname:
                messages.append(record.getMessage())
                return False
            return True

    root = logging.getLogger()
    collect, placeholder = _Collect(), logging.NullHandler()
    root.addFilter(collect)
    if not root.handlers:  # keep logging.warning() from calling basicConfig() on the program's behalf
        root.addHandler(placeholder)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    stdout = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(stdout):
            # dataclasses_json warns about every null field of the ranker's config.json.
            warnings.filterwarnings("ignore", category=RuntimeWarning, module="dataclasses_json")
            yield messages
    finally:
        messages.extend(line.strip() for line in stdout.getvalue().splitlines() if line.strip())
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        root.removeHandler(placeholder)
        root.removeFilter(collect)
