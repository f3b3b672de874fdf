"""Parameter groups: which part of the network each weight belongs to.

The G-effect paper reports its inner products by groups of parameters: the input embeddings,
the transformer blocks cut into thirds (shallow / middle / deep) and the output head ("lm").
Here the thirds are derived from the model's own number of blocks (the final norm counts as
deep), and blocks, embeddings and head are found generically (Llama, Phi, GPT-2, GPT-NeoX,
Qwen naming) rather than by hard-coded names. Finer schemes: every block, or every module type.
WAGLE's per-layer selection (kit.attribution) uses the same map.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch


class GroupError(ValueError):
    """An unknown group scheme or a model whose structure cannot be read; says the fix."""


def _n_blocks(model) -> int:
    cfg = model.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    raise GroupError(f"{type(model).__name__}'s config has no number of layers (num_hidden_layers / n_layer).")


def find_blocks(model) -> str:
    """Qualified name of the ModuleList holding the transformer blocks (Llama, Phi, GPT-2, NeoX, Qwen...)."""
    n = _n_blocks(model)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return name
    raise GroupError(f"No list of {n} blocks found in {type(model).__name__}; pass groups= as a mapping "
                       "{parameter name: group}.")


_ATTN = {"q": ("q_proj", "query", "q"), "k": ("k_proj", "key", "k"), "v": ("v_proj", "value", "v"),
         "o": ("o_proj", "out_proj", "dense", "c_proj"), "qkv": ("qkv_proj", "c_attn", "query_key_value", "Wqkv")}
_MLP = {"gate": ("gate_proj", "w1"), "up": ("up_proj", "fc1", "c_fc", "dense_h_to_4h", "w3"),
        "down": ("down_proj", "fc2", "c_proj", "dense_4h_to_h", "w2")}


def _module_kind(param_name: str, module) -> str:
    """attn.q / attn.k / attn.v / attn.o / attn.qkv / mlp.gate / mlp.up / mlp.down / norm / other."""
    if "norm" in type(module).__name__.lower() or "ln" in param_name.split(".")[-2:-1][0].lower():
        return "norm"
    parts = param_name.split(".")
    leaf = parts[-2] if len(parts) >= 2 else parts[0]
    path = ".".join(parts[:-2]).lower()
    table, prefix = (_ATTN, "attn") if ("attn" in path or "attention" in path) else (_MLP, "mlp")
    for kind, names in table.items():
        if leaf in names:
            return f"{prefix}.{kind}"
    return f"{prefix}.other"


def param_groups(model, scheme: str | dict | Callable = "paper") -> dict[str, str]:
    """Map every trainable parameter name to its group.

    Args:
        scheme: "paper" (embed / shallow / middle / deep / lm; thirds of the blocks, final norm in
            deep), "layer" (embed / block.i / final_norm / lm), "module" (embed / attn.q ... /
            mlp.down / norm / lm), a dict {parameter name: group} or a function name -> group.
    Returns:
        {parameter name: group name} (names as in `model.named_parameters()`).
    Used in: notebooks/03_g_effect_basics.ipynb
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(scheme, dict):
        missing = [n for n, _ in params if n not in scheme]
        if missing:
            raise GroupError(f"groups mapping has no entry for {len(missing)} parameters, e.g. {missing[0]!r}.")
        return {n: scheme[n] for n, _ in params}
    if callable(scheme):
        return {n: scheme(n) for n, _ in params}
    if scheme not in ("paper", "layer", "module"):
        raise GroupError(f"Unknown group scheme {scheme!r}: use 'paper', 'layer', 'module', a dict or a function.")
    blocks, n = find_blocks(model), _n_blocks(model)
    thirds = np.array_split(np.arange(n), 3)
    third_of = {int(i): name for part, name in zip(thirds, ("shallow", "middle", "deep")) for i in part}
    embed_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings()
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    modules = dict(model.named_modules())
    out = {}
    for name, p in params:
        if id(p) in embed_ids:           # a tied matrix: the probe adds lm and tied_cross (see above)
            out[name] = "embed"
        elif id(p) in head_ids:
            out[name] = "lm"
        elif name.startswith(blocks + "."):
            i = int(name[len(blocks) + 1:].split(".")[0])
            out[name] = {"paper": third_of[i], "layer": f"block.{i}"}.get(
                scheme, lambda: _module_kind(name, modules[name.rsplit(".", 1)[0]]))
            if callable(out[name]):
                out[name] = out[name]()
        else:                            # final norm and anything else outside the blocks
            out[name] = {"paper": "deep", "layer": "final_norm", "module": "norm"}[scheme]
    return out


def group_order(model, scheme: str = "paper") -> list[str]:
    """Groups of a scheme in network order (for plotting)."""
    if scheme == "paper":
        return ["embed", "shallow", "middle", "deep", "lm"]
    if scheme == "layer":
        return ["embed", *[f"block.{i}" for i in range(_n_blocks(model))], "final_norm", "lm"]
    seen = list(dict.fromkeys(param_groups(model, scheme).values()))
    return ["embed", *sorted(g for g in seen if g not in ("embed", "lm")), "lm"]


def tied(model) -> bool:
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


@contextlib.contextmanager
def untied(model):
    """Give the output head its own copy of a tied embedding matrix for the duration."""
    if not tied(model):
        yield None
        return
    head, shared = model.get_output_embeddings(), model.get_input_embeddings().weight
    # same storage (no copy of the matrix), but its own gradient
    head.weight = torch.nn.Parameter(shared.detach(), requires_grad=shared.requires_grad)
    try:
        yield head.weight
    finally:
        head.weight = shared


def ordered_groups(model, scheme, group_of: dict) -> list[str]:
    """The groups present in `group_of`, in network order for the named schemes."""
    present = list(dict.fromkeys(group_of.values()))
    if isinstance(scheme, str):
        return [g for g in group_order(model, scheme) if g in present or g in ("embed", "lm")]
    return present


def group_sizes(model, scheme: str = "paper") -> "pd.DataFrame":
    """One row per group in network order: its parameter count, which blocks it spans (paper
    scheme), and whether the model ties its embeddings (then `embed` and `lm` are one matrix,
    counted under both: the G-effect probe splits its gradient into the two ends)."""
    import pandas as pd
    named = dict(model.named_parameters())
    sizes: dict[str, int] = {}
    for name, group in param_groups(model, scheme).items():
        sizes[group] = sizes.get(group, 0) + named[name].numel()
    is_tied = tied(model)
    if is_tied:
        sizes["lm"] = sizes.get("embed", 0)
    thirds = dict(zip(["shallow", "middle", "deep"], np.array_split(np.arange(_n_blocks(model)), 3)))
    def span(g):       # "0-9", or "2" for a third of one block
        if scheme != "paper" or g not in thirds or not len(thirds[g]):
            return ""
        first, last = thirds[g][0], thirds[g][-1]
        return f"{first}" if first == last else f"{first}-{last}"
    return pd.DataFrame([{"group": g, "parameters": sizes.get(g, 0), "blocks": span(g), "tied embeddings": is_tied}
                         for g in group_order(model, scheme)])
