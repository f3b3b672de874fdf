"""How the kit calls a causal LM: the primitives that scoring, objectives and gradients share.

- `fp32`: losses and log-probabilities are computed in at least fp32 (fp64 models stay fp64, for
  the finite-difference checks);
- `answer_logits`: the vocabulary projection on answer positions only, where the model takes
  `logits_to_keep` (the [B, T, V] logits are the largest activations of a forward pass);
- `cached` / `cache_of`: the key/value cache going in and out of a forward call. transformers 5.24
  renamed the forward keyword and the output field `past_key_values` to `cache` (the old name
  warns and goes in 5.40); the kit passes whichever name the model's forward declares, so it
  runs without deprecation warnings on every transformers 5.x it is tested with.
"""
from __future__ import annotations

import contextlib
import inspect

import torch
import torch.nn.functional as F

from kit.data import IGNORE


@contextlib.contextmanager
def no_file_progress():
    """transformers' per-file bars ("Loading weights 0%") say nothing in a notebook: off inside the
    block, the caller's setting back afterwards (the kit's own build bar is not one of them)."""
    from transformers.utils import logging
    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def fp32(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (bf16/fp16 up-cast; fp64 kept, for finite-difference checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _parameters(model):
    """The parameters of the forward that the model's class defines (a PEFT, DDP or compile wrapper
    is looked through; a function patched onto the instance is not the model's signature)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model   # PEFT
    base = getattr(base, "_orig_mod", base)                                         # torch.compile
    base = getattr(base, "module", base)                                            # DDP
    forward = getattr(type(base), "forward", None) or base.forward                   # a duck-typed stand-in
    return inspect.signature(forward).parameters


def keeps_logits(model) -> bool:
    """Whether the model's forward takes `logits_to_keep` (projects only the positions asked for)."""
    return "logits_to_keep" in _parameters(model)


def cached(model, cache) -> dict:
    """The keyword argument that hands `cache` (keys/values of earlier tokens) to `model`'s forward."""
    return {"cache" if "cache" in _parameters(model) else "past_key_values": cache}


def cache_of(out):
    """The key/value cache a forward call with use_cache=True returned."""
    return out["cache"] if "cache" in out else out["past_key_values"]


def to_device(batch, device):
    """A (nested) batch dict of tensors on `device`."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch.to(device)


def forward(model, part: dict, **kw):
    """`model` on a padded sub-batch (input_ids, attention_mask)."""
    return model(input_ids=part["input_ids"], attention_mask=part["attention_mask"], **kw)


def answer_logits(model, part: dict, **kw):
    """(model output, logits [N, V] at the N positions whose next token is an answer token).

    The vocabulary projection (and its [B, T, V] activations, the largest tensors of a forward
    pass) runs on answer positions only when the model takes `logits_to_keep`; otherwise the
    full logits are sliced.
    """
    keep = F.pad(part["labels"][:, 1:] != IGNORE, (0, 1))       # position t predicts token t+1
    if keeps_logits(model):
        out = forward(model, part, logits_to_keep=keep, **kw)
        if out.logits.ndim == 2 and out.logits.shape[0] == int(keep.sum()):
            return out, out.logits
        if out.logits.shape[:2] == keep.shape:                  # the model ignored the argument
            return out, out.logits[keep]
    out = forward(model, part, **kw)                           # it reads logits_to_keep otherwise
    return out, out.logits[keep]
