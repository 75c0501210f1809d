"""Tiny, deterministic stand-ins for the large models the pipeline uses, built locally for tests."""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# A few hundred words of plain English: the whole-word part of the tiny tokenizer's vocabulary.
_CORPUS = """
The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.
Write a short poem about the sea, the wind and the stars that guide sailors home at night.
Explain why the sky is blue in simple words a child could understand, using one example.
List three fruits that are red and describe how each one tastes when it is ripe and fresh.
Give me a recipe for pancakes with flour, milk, eggs, sugar, butter and a pinch of salt.
Summarize the plot of a story where a young girl finds a hidden garden behind an old wall.
Answer in exactly two sentences. Use no commas. Reply in lowercase letters only, please.
The answer is yes because the numbers add up: one, two, three, four, five, six, seven, eight.
Sorry, I cannot help with that request, but here is a helpful and honest alternative instead.
Python code: def add(a, b): return a + b # adds two numbers and returns the result quickly.
Learning a new language takes time, practice, patience and a good teacher who explains clearly.
Rivers flow from mountains to the ocean, carving valleys and feeding forests along the way.
Good responses follow the instruction, stay on topic, and are correct, clear and concise.
Bad responses ignore the question, repeat themselves, or make up facts that are not true.
Mix 0123456789 with symbols like ! ? . , ; : ' " ( ) [ ] { } - _ + = * / \\ | @ # $ % ^ & ~ < > ` too.
ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz
"""

_SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def _build_tokenizer(extra_words: Iterable[str] = (), model_max_length: int = 512):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # A hand-built WordPiece vocabulary, not a trained one: tokenizers' trainer orders tied subwords by
    # hash-map iteration, so two trainings give different ids. Every printable ASCII character (and its
    # ## continuation) is in, so ASCII text never maps to [UNK]; the corpus words make whole-word tokens.
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    chars = sorted(set(string.printable) - set(string.whitespace))
    text = " ".join([_CORPUS, *extra_words])
    words = sorted({w for w, _ in pre_tokenizer.pre_tokenize_str(text)} - set(chars))
    # [PAD] first: id 0 is DeBERTa's pad_token_id.
    vocab = [*_SPECIAL_TOKENS.values(), *chars, *("##" + c for c in chars), *words]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    # DeBERTa's framing, which PairRM's collator relies on (it strips and re-adds [SEP] itself).
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    # The <|source|>/<|candidate1|>/<|candidate2|>/<|candidate|> prefixes are left out on purpose: as with
    # the real deberta-v3 tokenizer, llm-blender's CrossCompareCollator adds them and build_ranker resizes
    # the embeddings to match, so the tiny ranker takes the same code path as the real one.
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **_SPECIAL_TOKENS)


@dataclass(frozen=True)
class RankerShape:
    """The sizes of a PairRM-shaped ranker: its DeBERTa-v3 backbone and llm-blender's length limits (tokens)."""

    hidden_size: int = 32
    layers: int = 2
    heads: int = 2
    intermediate_size: int = 64
    position_buckets: int = 64
    source_maxlength: int = 128
    candidate_maxlength: int = 64


TINY_RANKER = RankerShape()
# llm-blender/PairRM's own sizes: a deberta-v3-large backbone and its config.json's length limits.
PAIRRM_RANKER = RankerShape(1024, 24, 16, 4096, 256, 1224, 412)


def build_tiny_pairrm(
    path: str | Path, seed: int = 0, shape: RankerShape = TINY_RANKER, words: Iterable[str] = ()
) -> Path:
    """Write a random, PairRM-shaped ranker folder that `Blender().loadranker(path)` loads offline.

    Layout: path/config.json (RankerConfig: pairranker over a deberta backbone), path/model.safetensors
    (the CrossCompareReranker state dict, built by llm-blender's own load_ranker), and path/backbone/
    (a DeBERTa-v2 of `shape`, by default 2 layers 32 wide, with its WordPiece tokenizer). config.json names
    the backbone by absolute path, so the folder must not be moved. Same seed, same weights.

    `words` become whole-word tokens beside the built-in corpus': text made of them then tokenizes about as
    densely as under deberta-v3's own tokenizer, instead of letter by letter (what a benchmark needs).
    """
    import torch
    from safetensors.torch import save_model
    from transformers import DebertaV2Config, DebertaV2Model

    from sppo.judges.blender_compat import patch_llm_blender

    path = Path(path).resolve()
    backbone = path / "backbone"
    backbone.mkdir(parents=True, exist_ok=True)
    # llm-blender's collator caps every sequence at the tokenizer's model_max_length.
    longest = shape.source_maxlength + 2 * shape.candidate_maxlength + 6
    tokenizer = _build_tokenizer(words, model_max_length=max(512, longest))
    tokenizer.save_pretrained(backbone)
    backbone_config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=512,
        # deberta-v3's attention: relative positions only, disentangled p2c/c2p, shared keys.
        relative_attention=True,
        position_buckets=shape.position_buckets,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        position_biased_input=False,
        type_vocab_size=0,
        pad_token_id=tokenizer.pad_token_id,
        # Far above deberta's 0.02, so a random ranker's logits vary with the text (O(1), not O(1e-5)).
        initializer_range=0.5,
    )
    ranker_config = {
        # The fields of llm-blender/PairRM's config.json, with the shape's length limits.
        "ranker_type": "pairranker",
        "model_type": "deberta",
        "model_name": str(backbone),
        "cache_dir": None,
        "load_checkpoint": None,
        "source_maxlength": shape.source_maxlength,
        "candidate_maxlength": shape.candidate_maxlength,
        "n_tasks": 1,
        "num_pos": 5,
        "num_neg": 5,
        "sub_sampling_mode": "all_pair",
        "sub_sampling_ratio": 0.4,
        "loss_type": "instructgpt",
        "reduce_type": "linear",
        "inference_mode": "bubble",
        "drop_out": 0.05,
        "fp16": True,
        "device": None,
    }

    patch_llm_blender()
    from llm_blender.blender.blender_utils import load_ranker
    from llm_blender.pair_ranker.config import RankerConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        DebertaV2Model(backbone_config).save_pretrained(backbone)
        # load_ranker (without a checkpoint) is exactly what loadranker runs before it loads weights, so the
        # state dict written here has the keys and shapes loadranker expects, resized embeddings included.
        ranker, _, _ = load_ranker(RankerConfig(**ranker_config))
        for layer in ranker.head_layer:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.weight, std=0.5)
        save_model(ranker, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(ranker_config, indent=2) + "\n")
    return path


def build_tiny_reward_model(path: str | Path, num_labels: int = 1, seed: int = 0) -> Path:
    """Write a random LlamaForSequenceClassification (configs/tiny-llama.json's shape) with SmolLM2's tokenizer
    and chat template into `path`, its pad token id set so batches can be padded. Same seed, same weights."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from sppo.models import load_tokenizer
    from sppo.sources import SMOLLM2_GGUF

    path = Path(path)
    tokenizer = load_tokenizer(SMOLLM2_GGUF)
    fields = json.loads((Path(__file__).resolve().parent.parent / "configs" / "tiny-llama.json").read_text())
    fields.pop("seed", None)
    config = LlamaConfig(
        **fields,
        vocab_size=len(tokenizer),
        num_labels=num_labels,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(config).float()
        # A wide reward head (0.02 -> 0.5) so random rewards differ by O(1) and preferences are not all ~1/2.
        torch.nn.init.normal_(model.score.weight, std=0.5)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
