"""Weight attribution: which weights should unlearning update?

WAGLE (Jia et al., NeurIPS 2024, "WAGLE: Strategic Weight Attribution for Effective and Modular
Unlearning in Large Language Models") asks how much the retain loss would change if a single
weight were reset by the unlearning update. A bi-level view with a diagonal Hessian γ·I for the
retain problem gives, per weight i,

    S_i = | θ_i · g_f,i − (1/γ) · g_r,i · g_f,i |

with g_f, g_r the gradients of the forget and retain NLL (accumulated over the data: summed, as
the reference configurations do with γ = 1e-6, where the θ term all but vanishes, or averaged).
The top `ratio` fraction of weights by S is unlearned; the rest stays fixed.

Baselines, all as scores per weight: `random`, `magnitude` |θ|, `gradient` |g_f| (SalUn-style
saliency), `wanda` |W_ij| · ‖X_j‖₂ (Sun et al., 2024: input-activation norm of column j over the
forget inputs, padding excluded; embeddings see one-hot inputs, so ‖X_j‖₂ = √(count of token j)),
and `dense` (every eligible weight). LoRA adapters are the parameter-efficient alternative
(`lora`). Everything is computed in fp32; thresholds come from `kthvalue`, never a full sort,
and exactly round(ratio · n) weights are selected, ties broken by position.

Eligible parameters are chosen by kind: attention and MLP matrices by default; embeddings,
norms and the output head on request. Parameters that are not eligible are not updated.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable

import pandas as pd
import torch

from kit.gradstream import untouched
from kit.groups import param_groups

METHODS = ("wagle", "gradient", "magnitude", "random", "wanda", "dense")
KINDS = ("attn", "mlp", "norm", "embed", "head")
SCOPES = ("global", "layer", "row")


class AttributionError(ValueError):
    """A bad attribution request (method, ratio, eligible set, scope); the message says the fix."""


# ---------------------------------------------------------------- eligible parameters
def _kind(group: str) -> str:
    return {"embed": "embed", "lm": "head", "norm": "norm"}.get(group, group.split(".")[0])


def eligible(model, include: Iterable[str] = ("attn", "mlp")) -> dict[str, torch.nn.Parameter]:
    """The parameters attribution may select from, by kind: attn, mlp, norm, embed, head."""
    include = tuple(include)
    bad = [k for k in include if k not in KINDS]
    if bad:
        raise AttributionError(f"Unknown parameter kind {bad[0]!r} in include=; use any of {', '.join(KINDS)}.")
    kinds = {n: _kind(g) for n, g in param_groups(model, "module").items()}
    params = dict(model.named_parameters())
    out = {n: params[n] for n, k in kinds.items() if k in include}
    if not out:
        present = sorted(set(kinds.values()))
        raise AttributionError(f"No parameter of this model is eligible with include={include}; its parameter "
                               f"kinds are {', '.join(present)}.")
    return out


# ---------------------------------------------------------------- scores
def _nll_gradient(model, tokenizer, records, params: dict, reduce: str, batch_size: int) -> dict[str, torch.Tensor]:
    """Gradient of Σ_items (reduce="sum") or mean_items ("mean") of the mean answer-token NLL, fp32."""
    from kit.data import QADataset
    from kit.geffect import risk_backward
    records = list(records)
    if not records:
        raise AttributionError("Attribution got an empty split; it needs forget (and retain) items.")
    with untouched(model):                      # the caller's .grad and train/eval mode come back
        model.eval()
        data = QADataset(records, tokenizer)    # a document counts one item per chunk
        risk_backward(model, data, tokenizer, batch_size, total=1 if reduce == "sum" else len(data))
        return {n: p.grad.float().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
                for n, p in params.items()}


def _wanda(model, tokenizer, records, params: dict, batch_size: int) -> dict[str, torch.Tensor]:
    """|W_ij| · ‖X_j‖₂ with X the layer's inputs over all non-padding forget tokens."""
    from kit.data import Collator, QADataset
    owners = {id(m.weight): (name, m) for name, m in model.named_modules()
              if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)) and getattr(m, "weight", None) is not None}
    unsupported = [n for n, p in params.items() if id(p) not in owners]
    if unsupported:
        raise AttributionError(f"Wanda scores linear layers and embeddings only, not {unsupported[0]!r}; leave "
                               "'norm' out of include=.")
    sq = {id(p): torch.zeros(p.shape[0] if isinstance(owners[id(p)][1], torch.nn.Embedding) else p.shape[1],
                             dtype=torch.float32, device=p.device) for p in params.values()}
    state = {"mask": None}

    def hook(module, inputs, _output):
        x, keep = inputs[0], state["mask"]
        if isinstance(module, torch.nn.Embedding):   # one-hot inputs: squared norm of column j = count of token j
            sq[id(module.weight)] += torch.bincount(x[keep], minlength=module.weight.shape[0]).float()
        else:
            sq[id(module.weight)] += x[keep].float().square().sum(0)

    handles = [owners[id(p)][1].register_forward_hook(hook) for p in params.values()]
    data, collate, device = QADataset(list(records), tokenizer), Collator(tokenizer), next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
                state["mask"] = batch["attention_mask"].to(device).bool()
                model(input_ids=batch["input_ids"].to(device), attention_mask=state["mask"].long())
    finally:
        for h in handles:
            h.remove()
    out = {}
    for n, p in params.items():
        norm = sq[id(p)].sqrt()
        w = p.detach().float().abs()
        out[n] = w * (norm[:, None] if isinstance(owners[id(p)][1], torch.nn.Embedding) else norm[None, :])
    return out


def scores(method: str, model, tokenizer=None, forget=None, retain=None, *, include=("attn", "mlp"),
           gamma: float = 1e-6, reduce: str = "sum", seed: int = 0, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Importance score of every eligible weight (higher = more worth unlearning), fp32.

    Args:
        method: "wagle", "gradient", "magnitude", "random", "wanda" or "dense".
        forget, retain: records; WAGLE needs both, gradient and Wanda the forget set.
        include: eligible parameter kinds (attn, mlp, norm, embed, head).
        gamma: WAGLE's Hessian-diagonal constant γ; reduce: "sum" or "mean" over items.
    Returns:
        {parameter name: score tensor of the parameter's shape}.
    Used in: notebooks/09_weight_attribution.ipynb
    """
    if method not in METHODS:
        raise AttributionError(f"Unknown attribution method {method!r}: use one of {', '.join(METHODS)} "
                               "(LoRA is kit.attribution.lora).")
    if reduce not in ("sum", "mean"):
        raise AttributionError(f"reduce={reduce!r}: gradients are either summed ('sum') or averaged ('mean').")
    if gamma <= 0:
        raise AttributionError(f"WAGLE's gamma must be positive (got {gamma}); the papers use 1e-6.")
    params = eligible(model, include)
    needs = {"wagle": ("forget", "retain"), "gradient": ("forget",), "wanda": ("forget",)}.get(method, ())
    for name, data in (("forget", forget), ("retain", retain)):
        if name in needs and data is None:
            raise AttributionError(f"Method {method!r} needs the {name} set: pass {name}= records (and tokenizer=).")
    if method in ("magnitude", "dense"):
        return {n: p.detach().float().abs() if method == "magnitude" else torch.ones_like(p, dtype=torch.float32)
                for n, p in params.items()}
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        return {n: torch.rand(p.shape, generator=gen).to(p.device) for n, p in params.items()}
    if method == "wanda":
        return _wanda(model, tokenizer, forget, params, batch_size)
    g_f = _nll_gradient(model, tokenizer, forget, params, reduce, batch_size)
    if method == "gradient":
        return {n: g.abs_() for n, g in g_f.items()}
    g_r = _nll_gradient(model, tokenizer, retain, params, reduce, batch_size)
    out = {}
    for n, p in params.items():   # S = |θ g_f − g_r g_f / γ|, written into g_r's buffer
        out[n] = g_r.pop(n).mul_(-1.0 / gamma).add_(p.detach().float()).mul_(g_f.pop(n)).abs_()
    return out


# ---------------------------------------------------------------- selection
def _top_k(x: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly k largest entries of a flat tensor (ties: earliest positions)."""
    n = x.numel()
    if k >= n:
        return torch.ones_like(x, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    t = torch.kthvalue(x, n - k + 1).values          # the k-th largest value
    keep = x > t
    ties = (x == t).nonzero().squeeze(1)[: k - int(keep.sum())]
    keep[ties] = True
    return keep


def _top_k_rows(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Exactly round(ratio · columns) largest entries in every row of a 2-D tensor."""
    rows, cols = x.shape
    k = max(1, round(ratio * cols))
    if k >= cols:
        return torch.ones_like(x, dtype=torch.bool)
    t = torch.kthvalue(x, cols - k + 1, dim=1, keepdim=True).values
    keep = x > t
    tie = x == t
    need = k - keep.sum(1, keepdim=True)
    keep |= tie & (tie.cumsum(1) <= need)
    return keep


def _check(ratio, scope) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise AttributionError(f"ratio={ratio!r} is the fraction of weights updated; it must be in (0, 1] "
                               "(e.g. 0.8 updates 80%).")
    if scope not in SCOPES:
        raise AttributionError(f"Unknown selection scope {scope!r}: use one of {', '.join(SCOPES)}.")


@dataclass
class Mask:
    """Which weights unlearning may change: {parameter name: bool tensor}, for the eligible
    parameters (the others stay fixed). Made by `select` or `attribute`."""
    masks: dict[str, torch.Tensor]
    method: str = ""
    ratio: float = 1.0
    scope: str = "global"

    @property
    def n_selected(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def n_eligible(self) -> int:
        return int(sum(m.numel() for m in self.masks.values()))

    def density(self, model, by: str = "layer") -> pd.DataFrame:
        """Fraction of selected weights per group ("layer", "module" or "paper"; kit.groups)."""
        group_of = param_groups(model, by)
        rows = [{"group": group_of[n], "selected": int(m.sum()), "total": m.numel()} for n, m in self.masks.items()]
        out = pd.DataFrame(rows).groupby("group", sort=False)[["selected", "total"]].sum().reset_index()
        out["density"] = out["selected"] / out["total"]
        return out

    def within(self, model, group: str, by: str = "paper") -> "Mask":
        """The part of this mask inside one parameter group (a `by` scheme's group: "shallow",
        "block.2", "mlp.down", ...; kit.groups), the other weights left fixed."""
        group_of = param_groups(model, by)
        masks = {n: m for n, m in self.masks.items() if group_of.get(n) == group}
        if not masks:
            raise AttributionError(f"This mask covers no parameter of group {group!r} under {by!r}; its groups are "
                                   f"{', '.join(dict.fromkeys(group_of.get(n, '?') for n in self.masks))}.")
        return Mask(masks, self.method, self.ratio, self.scope)

    def jaccard(self, other: "Mask") -> float:
        """|A ∩ B| / |A ∪ B| over the parameters both masks cover."""
        common = set(self.masks) & set(other.masks)
        if not common:
            raise AttributionError("The two masks cover no common parameter; were they made on the same model?")
        inter = sum(int((self.masks[n] & other.masks[n]).sum()) for n in common)
        union = sum(int((self.masks[n] | other.masks[n]).sum()) for n in common)
        return inter / union if union else 1.0


def select(score: dict[str, torch.Tensor], ratio: float, scope: str = "global", model=None,
           method: str = "") -> Mask:
    """Keep the top `ratio` fraction of weights by score.

    Args:
        ratio: fraction of eligible weights to update, in (0, 1].
        scope: "global" (one ranking over all eligible weights), "layer" (the fraction within
            each block, embeddings and head; needs `model`) or "row" (within every output row).
    """
    _check(ratio, scope)
    if not score:
        raise AttributionError("No scores to select from: the eligible set is empty.")
    names = list(score)
    if scope == "row":
        masks = {n: _top_k_rows(s.reshape(s.shape[0], -1) if s.ndim > 1 else s[None], ratio).reshape(s.shape)
                 for n, s in score.items()}
        return Mask(masks, method, ratio, scope)
    if scope == "layer":
        if model is None:
            raise AttributionError("scope='layer' needs model= to know which block each weight belongs to.")
        group_of = param_groups(model, "layer")
        buckets: dict[str, list[str]] = {}
        for n in names:
            buckets.setdefault(group_of[n], []).append(n)
    else:
        buckets = {"all": names}
    masks = {}
    for members in buckets.values():
        flat = torch.cat([score[n].reshape(-1).float() for n in members])
        keep = _top_k(flat, round(ratio * flat.numel()))
        del flat
        for n, part in zip(members, torch.split(keep, [score[n].numel() for n in members])):
            masks[n] = part.reshape(score[n].shape)
    return Mask(masks, method, ratio, scope)


def attribute(method: str, model, tokenizer=None, forget=None, retain=None, *, ratio: float = 0.8,
              scope: str | None = None, include=("attn", "mlp"), **score_kw) -> Mask:
    """Scores and selection in one call: the mask of weights `method` would unlearn.

    `scope` defaults to "row" for Wanda (its per-output comparison) and "global" otherwise.
    Used in: notebooks/09_weight_attribution.ipynb
    """
    _check(ratio, scope or "global")    # before any gradient is computed
    score = scores(method, model, tokenizer, forget, retain, include=include, **score_kw)
    return select(score, ratio, scope or ("row" if method == "wanda" else "global"), model, method)


def everything(model, include: Iterable[str] = ("attn", "mlp")) -> Mask:
    """Every eligible weight selected: the reference a selection's G-effect share is read against
    (a random mask at ratio r keeps, in expectation, r times this mask's G-effect)."""
    return Mask({n: torch.ones_like(p, dtype=torch.bool) for n, p in eligible(model, include).items()}, "eligible", 1.0)


def block_mask(model, blocks: Iterable[int], modules: Iterable[str] = ("mlp.down",)) -> Mask:
    """Every weight of the named modules (kit.groups' "module" names: mlp.down, attn.q, ...) in
    the given blocks, nothing else: WMDP's RMU updates the MLP down-projections of blocks ℓ−2..ℓ,
    `block_mask(model, range(ℓ - 2, ℓ + 1))`."""
    blocks, modules = [int(b) for b in blocks], tuple(modules)
    n_layers = model.config.num_hidden_layers
    if not blocks or any(not 0 <= b < n_layers for b in blocks):
        raise AttributionError(f"Blocks {blocks} are not all in 0..{n_layers - 1}, this model's blocks.")
    layer, module = param_groups(model, "layer"), param_groups(model, "module")
    params = dict(model.named_parameters())
    masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in params
             if layer.get(n) in {f"block.{b}" for b in blocks} and module.get(n) in modules}
    if not masks:
        raise AttributionError(f"No parameter of blocks {blocks} is a {' or '.join(modules)}; module names are "
                               f"{', '.join(sorted(set(module.values())))}.")
    return Mask(masks, method="blocks " + ",".join(map(str, blocks)) + " " + "+".join(modules), ratio=1.0, scope="modules")


# ---------------------------------------------------------------- LoRA
def lora(model, rank: int = 8, alpha: float = 16.0, target_modules=None, dropout: float = 0.0):
    """Wrap `model` with LoRA adapters (peft): only the adapters train; `merge_and_unload()`
    afterwards gives a plain model back. Default targets: every attention and MLP projection."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise AttributionError("LoRA needs the peft package: pip install peft.") from None
    if target_modules is None:
        target_modules = sorted({n.rsplit(".", 2)[-2] for n in eligible(model, ("attn", "mlp")) if n.endswith(".weight")})
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=dropout,
                        bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():    # peft reads transformers' deprecated is_gradient_checkpointing (peft 0.21,
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, config)   # transformers 5.24); not the kit's call to fix
