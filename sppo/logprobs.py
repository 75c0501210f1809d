"""Sequence log-probabilities of responses under a policy, with gradients (the loss) or without (pi_ref).

pi_ref is pi_t, the policy that generated the data. The policy starts out equal to pi_t, so the reference
log-probs are computed once, from the policy itself without gradients, before the first update: no frozen
copy sits in memory and no step pays for a second forward pass. A policy trained through an adapter
(train.adapter) computes them with its adapter switched off: pi_t's own weights."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sppo.pair_batches import TokenizedPair, attention_mask_for, batcher_for, pair_length
from sppo.ranks import all_ranks_sum, world


def model_device(model) -> torch.device:
    """Where the model computes (a DeepSpeed engine and an HF model both say; else its first parameter)."""
    device = getattr(model, "device", None)
    return torch.device(device) if device is not None else next(model.parameters()).device


def sequence_logprobs(model, batch: dict[str, torch.Tensor], bf16: bool = False) -> torch.Tensor:
    """Sum over each response's tokens of log pi(y_t | x, y_<t), for a batch of either layout
    (sppo.pair_batches): chosen sequences first, then rejected ones.

    The vocabulary projection runs only at the positions that predict a response token: the prompt's
    positions (a third to a half of a sequence here) would compute logits over the whole vocabulary for
    nothing, and the LM head is a fifth of a small model's FLOPs. The log-softmax runs in fp32 even for a
    bf16 model: bf16 keeps ~3 significant digits, and a sum of hundreds of rounded token log-probs would
    blur the sequence log-ratios the losses compare. `bf16`: the model's matmuls in bf16 under autocast (its
    weights stay fp32, the master copy the optimizer updates)."""
    device = model_device(model)
    batch = {k: v.to(device) for k, v in batch.items()}
    dtype = next(model.parameters()).dtype
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": attention_mask_for(model, batch["attention_mask"], dtype),
        **({"position_ids": batch["position_ids"]} if "position_ids" in batch else {}),
    }
    rows, positions = batch["rows"], batch["positions"]
    parts = _decoder_and_head(model)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if parts is None:  # a DeepSpeed engine, or a model whose forward changes its logits after the head
            logits = _forward_logits(model, inputs, rows, positions)
        else:
            decoder, head = parts
            logits = head(decoder(**inputs).last_hidden_state[rows, positions])
    token_logps = -F.cross_entropy(logits.float(), batch["targets"], reduction="none")
    sequences = int(batch["sequences"])
    return torch.zeros(sequences, dtype=token_logps.dtype, device=device).index_add(0, batch["owners"], token_logps)


# Config fields of causal LMs whose forward rescales or caps the logits after the LM head (Gemma 2/3, Cohere,
# Granite): for these the decoder + head shortcut would change the numbers.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _decoder_and_head(model):
    """(decoder, LM head) of a plain HF causal LM, or None for a DeepSpeed engine or a model whose forward
    does more than head(decoder(x)).

    A DeepSpeed engine must run its own forward: ZeRO-3 gathers and releases partitioned parameters from
    hooks that start at the top module's forward, and calling its decoder and head directly trained with
    different gradients than one process does (tests/test_deepspeed_on_cpu.py caught it)."""
    if hasattr(model, "module"):
        return None
    config = getattr(model, "config", None)
    if config is None or any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_POSTPROCESSING):
        return None
    get_decoder, get_head = getattr(model, "get_decoder", None), getattr(model, "get_output_embeddings", None)
    decoder, head = (get_decoder(), get_head()) if get_decoder and get_head else (None, None)
    return (decoder, head) if decoder is not None and head is not None else None


def _forward_logits(model, inputs: dict, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits at (rows, positions) from the model's own forward, asking it (`logits_to_keep`, which most HF
    causal LMs take) only for the positions from the first one scored on."""
    inner = getattr(model, "module", model)
    first = int(positions.min()) if len(positions) else 0
    if "logits_to_keep" in inspect.signature(inner.forward).parameters:
        keep = torch.arange(first, inputs["input_ids"].shape[1], device=positions.device)
        return model(**inputs, logits_to_keep=keep).logits[rows, positions - first]
    return model(**inputs).logits[rows, positions]


def has_adapter(model) -> bool:
    """Whether `model` (or the model inside a DeepSpeed engine) is a peft model: one trained through an adapter."""
    from peft import PeftModel

    return isinstance(getattr(model, "module", model), PeftModel)


def adapter_off(model) -> contextlib.AbstractContextManager:
    """A context in which a peft model (or a DeepSpeed engine around one) computes with its base weights alone,
    pi_t's: peft's disable_adapter(). Any other model is left as it is."""
    return getattr(model, "module", model).disable_adapter() if has_adapter(model) else contextlib.nullcontext()


# no_grad, not inference_mode: ZeRO-3's parameter hooks must run (and may allocate) inside this forward.
@torch.no_grad()
def reference_logprobs(
    model,
    pairs: Sequence[TokenizedPair],
    batch_size: int,
    pad_id: int,
    progress: bool = False,
    shared_prompt: bool = True,
    bf16: bool = False,
) -> torch.Tensor:
    """(N, 2) log pi_ref of (chosen, rejected) for every pair: the generating engine's (TokenizedPair.reference)
    where the pair has them, else from the not-yet-updated policy (with its adapter, if any, switched off).

    The pairs to compute go longest first in batches of `batch_size`, so each batch pads to lengths close to
    its own (the order of a forward pass without gradients changes nothing but padding). With several ranks
    each computes every world-th batch and the rows are summed across ranks; a rank short of a batch
    recomputes batch 0 and drops it, since ZeRO-3 needs every rank in every forward. `shared_prompt`: the
    batch layout (sppo.pair_batches), as train.shared_prompt; `bf16`: as training computes (sequence_logprobs)."""
    rank, size = world()
    make_batch = batcher_for(model, pad_id, shared_prompt)
    was_training = model.training
    model.eval()
    out = torch.zeros(len(pairs), 2)
    todo = [i for i, pair in enumerate(pairs) if pair.reference is None]
    order = sorted(todo, key=lambda i: -pair_length(pairs[i]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    rounds = range(0, len(batches), size)
    with adapter_off(model):
        for first in tqdm(rounds, desc="reference log-probs", unit="batch", disable=not progress):
            mine = first + rank
            idx = batches[mine] if mine < len(batches) else batches[0]
            logps = sequence_logprobs(model, make_batch([pairs[i] for i in idx]), bf16)
            if mine < len(batches):
                out[idx] = torch.stack(logps.chunk(2), dim=1).float().cpu()
    model.train(was_training)
    out = all_ranks_sum(out)
    for i, pair in enumerate(pairs):
        if pair.reference is not None:
            out[i] = torch.tensor(pair.reference)
    return out
