"""Unlearning objectives as plain functions, and the retain regularisers that compose with them.

Most objectives the G-effect paper (Wang et al., ICLR 2025) studies are *weighted gradient
ascent*: their gradient is a weighted sum of the gradients of the answer tokens' log-likelihood,

    ∇L = mean_s mean_i  w_i(s) ∇ log p_i(s)        (minimising L pushes log p_i down where w_i > 0)

GA has w_i = 1 (equivalently 1/p_i on ∇p_i: the least confident tokens dominate), WGA w_i = p_i^α,
NPO one weight per sequence w(s) = 2 p(s)^β / (p(s)^β + p_o(s)^β) on the summed log-likelihood,
TNPO / WTNPO per-token versions of it, SatImp p^β1 (1-p)^β2. Every objective returns these
weights (log-prob view) so the notebooks can plot them. PO, IdkDPO, RMU and UNDIAL are not of
this form and return no token weights.

Signature (one for all): `fn(model, batch, ref=None, **hparams) -> Output`, where `batch` holds
padded sub-batches `forget`, and where needed `retain`, `idk` (kit.data.ForgetRetainDataset)
and `ref` is the frozen original model. Losses are minimised. Formulas: docs/methods.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from kit.data import IGNORE
from kit.forward import answer_logits, forward, fp32, keeps_logits  # noqa: F401 (re-exported)
from kit.groups import find_blocks


class ObjectiveError(ValueError):
    """An unknown objective, a missing input or a bad hyperparameter; the message says the fix."""


class NonFiniteLoss(ObjectiveError):
    """The loss became NaN or infinite: a divergence (too large a learning rate) or broken inputs."""


@dataclass
class Output:
    """What an objective returns: the loss and what analysis needs."""
    loss: torch.Tensor                       # scalar to minimise
    per_example: torch.Tensor                # [B] forget loss per example (detached)
    token_weights: torch.Tensor | None = None    # [B, T-1] w_i on ∇log p_i (0 off the answer)
    seq_weights: torch.Tensor | None = None      # [B] NPO-style per-sequence weights
    hparams: dict = field(default_factory=dict)      # the hyperparameters it ran with
    losses: dict = field(default_factory=dict)       # compute(): forget_loss and, with a regulariser, retain_loss


# ---------------------------------------------------------------- token log-probabilities
def _on_answers(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] values at the answer positions of `mask` [B, T-1] as [B, T-1], zero elsewhere."""
    return values.new_zeros(mask.shape).masked_scatter(mask, values)


def answer_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p_i of each answer token: ([B, T-1] fp32, mask [B, T-1] bool), from full logits
    [B, T, V] or from the logits at answer positions only [N, V] (answer_logits)."""
    labels = labels[:, 1:]
    mask = labels != IGNORE
    if logits.ndim == 3:
        logits = logits[:, :-1][mask]
    picked = torch.log_softmax(fp32(logits), -1).gather(-1, labels[mask][:, None]).squeeze(-1)
    return _on_answers(picked, mask), mask


def logprobs(model, part: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """log p_i of each answer token of `part` (a padded sub-batch) under `model`: ([B, T-1], mask)."""
    return answer_logprobs(answer_logits(model, part)[1], part["labels"])


@torch.no_grad()
def _ref_logprobs(ref, part: dict):
    if ref is None:
        raise ObjectiveError("This objective compares against the original model: pass ref= (a frozen "
                             "copy, kit.objectives.make_reference(model)).")
    return logprobs(ref, part)


def _mean_tokens(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-example mean over answer tokens: [B]."""
    return (x * mask).sum(1) / mask.sum(1).clamp(min=1)


def _part(batch: dict, name: str, objective: str) -> dict:
    if name not in batch:
        need = {"retain": "a retain batch (ForgetRetainDataset(forget, retain, ...))",
                "idk": "refusal answers (ForgetRetainDataset(..., with_idk=True))"}.get(name, name)
        raise ObjectiveError(f"Objective {objective!r} needs {need}; the batch has {sorted(batch)}.")
    return batch[name]


# ---------------------------------------------------------------- weights as functions of p
def _log(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    return (t if t.is_floating_point() else t.float()).log()   # float64 in, float64 out (tiny p(s))


def weight(name: str, p, p_ref=None, **hparams) -> torch.Tensor:
    """The weight w on ∇log p that objective `name` gives a token (or sequence) of probability p.

    Token-wise for GA, WGA, SatImp, TNPO, WTNPO; for NPO p is the sequence probability p(s) and
    for SimNPO its per-token geometric mean. `p_ref` is the original model's probability (NPO
    family). Divide by p for the weight on ∇p (GA's 1/p: the least confident tokens dominate).
    The objectives below compute their weights with this very function.
    Used in: notebooks/02_objectives.ipynb
    """
    key = name.lower()
    if key not in WEIGHTS:
        raise ObjectiveError(f"Objective {name!r} has no weight on ∇log p; weighting objectives: "
                             f"{', '.join(WEIGHTS)}.")
    logp = _log(p)
    logp_ref = _log(p_ref) if p_ref is not None else None
    if key in NEEDS_REFERENCE and logp_ref is None:
        raise ObjectiveError(f"The weight of {name!r} depends on the original model: pass p_ref=.")
    return WEIGHTS[key](logp, logp_ref, **hparams)


def _w_ga(logp, logp_ref=None):
    return torch.ones_like(logp)


def _w_wga(logp, logp_ref=None, alpha: float = 5.0):
    return (alpha * logp).exp()                                     # p^α


def _w_satimp(logp, logp_ref=None, beta1: float = 5.0, beta2: float = 1.0):
    p = logp.exp()
    return p ** beta1 * (1 - p) ** beta2


def _w_npo(logp, logp_ref, beta: float = 0.5):
    return 2 * torch.sigmoid(beta * (logp - logp_ref))               # 2p^β / (p^β + p_o^β)


def _w_wtnpo(logp, logp_ref, alpha: float = 1.5, beta: float = 5.0):
    return _w_npo(logp, logp_ref, beta) * (alpha * logp).exp()       # 2p^(β+α) / (p^β + p_o^β)


def _w_simnpo(logp, logp_ref=None, beta: float = 4.5, delta: float = 0.0):
    return 2 * torch.sigmoid(beta * (logp + delta))                  # logp = -ℓ(s), mean token NLL


WEIGHTS = {"ga": _w_ga, "wga": _w_wga, "satimp": _w_satimp, "npo": _w_npo, "simnpo": _w_simnpo,
           "tnpo": lambda logp, logp_ref, beta=4.0: _w_npo(logp, logp_ref, beta), "wtnpo": _w_wtnpo}


# ---------------------------------------------------------------- the objectives
def _token_ascent(name: str, model, batch, ref, hp: dict) -> Output:
    """Weighted GA with the token weights of `name`: L = mean_s mean_i sg(w_i) log p_i."""
    part = _part(batch, "forget", name)
    logp, mask = logprobs(model, part)
    ref_logp = _ref_logprobs(ref, part)[0] if name in NEEDS_REFERENCE else None
    w = WEIGHTS[name](logp.detach(), ref_logp, **hp).detach()
    per = _mean_tokens(w * logp, mask)
    return Output(per.mean(), per.detach(), w * mask, hparams=hp)


def ga(model, batch, ref=None) -> Output:
    """Gradient ascent: L = -ℓ(D_u) = mean_s mean_i log p_i."""
    return _token_ascent("ga", model, batch, ref, {})


def wga(model, batch, ref=None, alpha: float = 5.0) -> Output:
    """Weighted GA: w_i = sg(p_i)^α (confident tokens pushed hardest, uncertain ones spared)."""
    return _token_ascent("wga", model, batch, ref, {"alpha": alpha})


def satimp(model, batch, ref=None, beta1: float = 5.0, beta2: float = 1.0) -> Output:
    """SatImp: w_i = sg(p_i^β1 (1 - p_i)^β2)."""
    return _token_ascent("satimp", model, batch, ref, {"beta1": beta1, "beta2": beta2})


def tnpo(model, batch, ref=None, beta: float = 4.0) -> Output:
    """Token-wise NPO: w_i = sg(2 p_i^β / (p_i^β + p_o,i^β))."""
    return _token_ascent("tnpo", model, batch, ref, {"beta": beta})


def wtnpo(model, batch, ref=None, alpha: float = 1.5, beta: float = 5.0) -> Output:
    """Weighted token-wise NPO: w_i = sg(2 p_i^(β+α) / (p_i^β + p_o,i^β))."""
    return _token_ascent("wtnpo", model, batch, ref, {"alpha": alpha, "beta": beta})


def npo(model, batch, ref=None, beta: float = 0.5) -> Output:
    """NPO: L = (2/β) mean_s log(1 + exp(β (log p(s) - log p_o(s)))), log p(s) summed over tokens."""
    part = _part(batch, "forget", "npo")
    logp, mask = logprobs(model, part)
    ref_logp, _ = _ref_logprobs(ref, part)
    ratio = logp.sum(1) - ref_logp.sum(1)                         # log p(s)/p_o(s)
    per = -(2 / beta) * F.logsigmoid(-beta * ratio)
    seq_w = _w_npo(ratio.detach(), torch.zeros_like(ratio), beta)  # ∇L = w(s) ∇ log p(s)
    return Output(per.mean(), per.detach(), seq_w[:, None] * mask, seq_w, {"beta": beta})


def simnpo(model, batch, ref=None, beta: float = 4.5, delta: float = 0.0) -> Output:
    """SimNPO (reference-free): L = -(2/β) mean_s log σ(β (ℓ(s) - δ)), ℓ = mean token NLL."""
    logp, mask = logprobs(model, _part(batch, "forget", "simnpo"))
    nll = -_mean_tokens(logp, mask)
    per = -(2 / beta) * F.logsigmoid(beta * (nll - delta))
    seq_w = _w_simnpo(-nll.detach(), None, beta, delta)
    return Output(per.mean(), per.detach(), seq_w[:, None] * mask, seq_w, {"beta": beta, "delta": delta})


def po(model, batch, ref=None) -> Output:
    """Preference optimisation toward refusals: NLL of an IdK answer to the forget question."""
    logp, mask = logprobs(model, _part(batch, "idk", "po"))
    per = -_mean_tokens(logp, mask)
    return Output(per.mean(), per.detach(), hparams={})


def idkdpo(model, batch, ref=None, beta: float = 0.1) -> Output:
    """DPO with win = refusal, lose = forget answer: -(2/β) log σ(β (Δ_win - Δ_lose)), Δ = log p/p_o."""
    win, lose = _part(batch, "idk", "idkdpo"), _part(batch, "forget", "idkdpo")
    (lw, mw), (ll, ml) = logprobs(model, win), logprobs(model, lose)
    (rw, _), (rl, _) = _ref_logprobs(ref, win), _ref_logprobs(ref, lose)
    margin = (lw.sum(1) - rw.sum(1)) - (ll.sum(1) - rl.sum(1))
    per = -(2 / beta) * F.logsigmoid(beta * margin)
    return Output(per.mean(), per.detach(), hparams={"beta": beta})


def undial(model, batch, ref=None, beta: float = 10.0) -> Output:
    """UNDIAL: cross-entropy toward softmax(z_o - β·onehot(y)), the original logits with the answer damped."""
    part = _part(batch, "forget", "undial")
    if ref is None:
        _ref_logprobs(None, part)
    with torch.no_grad():
        z_o = fp32(forward(ref, part).logits[:, :-1])
    labels = part["labels"][:, 1:]
    mask = labels != IGNORE
    target = torch.softmax(z_o - beta * F.one_hot(labels.clamp(min=0), z_o.shape[-1]), -1)
    logq = torch.log_softmax(fp32(forward(model, part).logits[:, :-1]), -1)
    per = _mean_tokens(-(target * logq).sum(-1), mask)
    return Output(per.mean(), per.detach(), hparams={"beta": beta})


def rmu_direction(hidden_size: int, seed: int = 0) -> torch.Tensor:
    """RMU's fixed random unit vector u (seeded, so every run misdirects toward the same place)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden_size, generator=g)
    return u / u.norm()


def hidden_state(model, part: dict, layer: int) -> torch.Tensor:
    """The residual stream after block `layer` on a batch (input_ids, attention_mask): what RMU
    steers, read by a hook on the block (`output_hidden_states` gives the last block's state after
    the final norm instead)."""
    kept = []
    block = model.get_submodule(find_blocks(model))[layer]
    handle = block.register_forward_hook(lambda _m, _i, out: kept.append(out[0] if isinstance(out, tuple) else out))
    try:
        forward(model, part)
    finally:
        handle.remove()
    return fp32(kept[0])


def rmu(model, batch, ref=None, layer: int = 2, coeff: float = 4.0, seed: int = 0) -> Output:
    """RMU: mean over forget answer positions of ‖h_L - c·u‖², h_L = hidden state after block `layer`."""
    n_layers = model.config.num_hidden_layers
    if not 0 <= layer < n_layers:
        raise ObjectiveError(f"RMU layer {layer} is out of range: this model has blocks 0..{n_layers - 1}.")
    part = _part(batch, "forget", "rmu")
    hidden = hidden_state(model, part, layer)
    target = coeff * rmu_direction(hidden.shape[-1], seed).to(hidden.device)
    mask = (part["labels"] != IGNORE)                   # answer positions (unshifted)
    per = _mean_tokens(((hidden - target) ** 2).sum(-1), mask)
    return Output(per.mean(), per.detach(), hparams={"layer": layer, "coeff": coeff, "seed": seed})


def rmu_wmdp(model, batch, ref=None, layer: int = 7, coeff: float = 6.5, alpha: float = 1200.0,
             seed: int = 0) -> Output:
    """RMU as WMDP trains it (Li et al., 2024): the mean over forget tokens and hidden units of
    (h_ℓ − c·u)², plus α × the mean over retain tokens and hidden units of (h_ℓ − h_ℓ^frozen)²;
    h_ℓ = the hidden state after block ℓ, u = rmu_direction, every real token of a sequence counted
    (each sequence's mean, then the batch's). WMDP updates only the MLP down-projections of blocks
    ℓ−2..ℓ: pass `mask=kit.attribution.block_mask(model, range(ℓ - 2, ℓ + 1))` to unlearn."""
    n_layers = model.config.num_hidden_layers
    if not 0 <= layer < n_layers:
        raise ObjectiveError(f"RMU layer {layer} is out of range: this model has blocks 0..{n_layers - 1}.")
    forget, retain = _part(batch, "forget", "rmu_wmdp"), _part(batch, "retain", "rmu_wmdp")
    if ref is None:
        raise ObjectiveError("Objective 'rmu_wmdp' keeps retain activations at the frozen model's: pass "
                             "ref=objectives.make_reference(model) (kit.unlearn makes it).")
    hidden = hidden_state(model, forget, layer)
    target = coeff * rmu_direction(hidden.shape[-1], seed).to(hidden.device)
    per = _mean_tokens(((hidden - target) ** 2).mean(-1), forget["attention_mask"].bool())
    with torch.no_grad():
        frozen = hidden_state(ref, retain, layer)
    kept = _mean_tokens(((hidden_state(model, retain, layer) - frozen) ** 2).mean(-1), retain["attention_mask"].bool())
    return Output(per.mean() + alpha * kept.mean(), per.detach(),
                  hparams={"layer": layer, "coeff": coeff, "alpha": alpha, "seed": seed})


OBJECTIVES = {"ga": ga, "wga": wga, "npo": npo, "simnpo": simnpo, "tnpo": tnpo, "wtnpo": wtnpo,
              "po": po, "idkdpo": idkdpo, "rmu": rmu, "rmu_wmdp": rmu_wmdp, "undial": undial, "satimp": satimp}
NEEDS_REFERENCE = {"npo", "tnpo", "wtnpo", "idkdpo", "undial", "rmu_wmdp"}
NEEDS_RETAIN = {"rmu_wmdp"}      # objectives with a retain term of their own (the batch needs `retain`)
NEEDS_IDK = {"po", "idkdpo"}     # objectives trained toward refusal answers (the batch needs `idk`)


def needs_retain(name: str, regularizer: str = "none") -> bool:
    """Whether objective `name` (with `regularizer`) needs retain records in its batch."""
    return name.lower() in NEEDS_RETAIN or regularizer != "none"


def needs_idk(name: str) -> bool:
    """Whether objective `name` needs refusal answers in its batch (ForgetRetainDataset(with_idk=True))."""
    return name in NEEDS_IDK


# ---------------------------------------------------------------- retain regularisers
def retain_nll(model, batch, ref=None) -> torch.Tensor:
    """GD-style: ℓ(D_r), the mean token NLL of retain answers."""
    logp, mask = logprobs(model, _part(batch, "retain", "nll regulariser"))
    return -_mean_tokens(logp, mask).mean()


def retain_kl(model, batch, ref=None) -> torch.Tensor:
    """KL(p_o ‖ p_θ) over retain answer tokens (prompt and padding masked), mean per token."""
    part = _part(batch, "retain", "kl regulariser")
    if ref is None:
        _ref_logprobs(None, part)
    with torch.no_grad():
        log_o = torch.log_softmax(fp32(answer_logits(ref, part)[1]), -1)
    log_t = torch.log_softmax(fp32(answer_logits(model, part)[1]), -1)
    mask = part["labels"][:, 1:] != IGNORE
    kl = (log_o.exp() * (log_o - log_t)).sum(-1)              # [N] answer positions
    return _mean_tokens(_on_answers(kl, mask), mask).mean()


REGULARIZERS = {"none": None, "nll": retain_nll, "kl": retain_kl}

# the papers' hyperparameters: {objective: {split or "*": {...}}}, model-specific ones by model
_PAPER = {
    "npo": {"*": {"beta": 0.5}}, "simnpo": {"*": {"beta": 4.5, "delta": 0.0}},
    "wga": {"forget01": {"alpha": 5.0}, "forget05": {"alpha": 5.0}, "forget10": {"alpha": 7.0}},
    "tnpo": {"forget01": {"beta": 4.0}, "forget05": {"beta": 4.0}, "forget10": {"beta": 5.0}},
    "wtnpo": {"forget01": {"alpha": 1.5, "beta": 5.0}, "forget05": {"alpha": 1.5, "beta": 5.0},
              "forget10": {"alpha": 1.5, "beta": 7.0}},
    "idkdpo": {"*": {"beta": 0.1}}, "undial": {"*": {"beta": 10.0}},
    "satimp": {"*": {"beta1": 5.0, "beta2": 1.0}}, "ga": {"*": {}}, "po": {"*": {}},
}
# WMDP's published recipe (Zephyr-7B-beta; lr 5e-5, batch 4, 150 batches, down-projections of blocks 5-7)
_RMU_WMDP = {"zephyr-7b": {"layer": 7, "coeff": 6.5, "alpha": 1200.0}}
_RMU = {"phi-1.5": {"layer": 9, "coeff": 4.0}, "llama-2-7b": {"layer": 21, "coeff": 2.0},
        # the kit's own choice for tiny: the middle block, c ≈ 2/3 of its hidden-state norm (~30)
        "tiny": {"layer": 2, "coeff": 20.0}}


def _settings(key: str) -> dict:
    """The published settings of objective `key`: by model for RMU, by split (or "*") otherwise."""
    return {"rmu": _RMU, "rmu_wmdp": _RMU_WMDP}.get(key) or _PAPER[key]


def paper_keys(name: str) -> set:
    """The hyperparameters the papers' settings of `name` fix: what a caller gives where none is published.

    Example: `paper_keys("rmu")` -> {"layer", "coeff"}.
    """
    key = name.lower()
    get(key)   # unknown names raise with the registry
    return set().union(*(set(v) for v in _settings(key).values()))


def paper_hparams(name: str, split: str = "forget10", model: str = "phi-1.5") -> dict:
    """The hyperparameters the papers use for `name` on a TOFU forget split (and model, for RMU).

    Example: `paper_hparams("wtnpo", "forget10")` -> {"alpha": 1.5, "beta": 7.0}.
    """
    key = name.lower()
    get(key)   # unknown names raise with the registry
    table = _settings(key)
    if key in ("rmu", "rmu_wmdp"):
        if model not in table:
            example = next(iter(table.values()))
            raise ObjectiveError(f"No paper {key} setting for model {model!r}: known {', '.join(table)}. Give one "
                                 f"yourself, every key of {', '.join(example)}: UnlearnConfig.paper({key!r}, ..., "
                                 f"hparams={example}) with this model's values (notebook 12: `HPARAMS`).")
        return dict(table[model])
    if "*" in table:
        return dict(table["*"])
    if split not in table:
        raise ObjectiveError(f"No paper setting of {name!r} for split {split!r}: known {', '.join(table)}.")
    return dict(table[split])


def get(name: str):
    """The objective function registered under `name` (case-insensitive; "gd" = GA + NLL)."""
    key = name.lower()
    if key not in OBJECTIVES:
        raise ObjectiveError(f"Unknown objective {name!r}. Registered: {', '.join(sorted(OBJECTIVES))} "
                             "(GD/GradDiff = 'ga' with regularizer='nll').")
    return OBJECTIVES[key]


def needs_reference(name: str, regularizer: str = "none") -> bool:
    """Whether `name` (with `regularizer`) needs a frozen copy of the original model."""
    return name.lower() in NEEDS_REFERENCE or regularizer == "kl"


def make_reference(model):
    """A frozen eval-mode copy of `model` (create it only when `needs_reference` says so)."""
    import copy
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def compute(name: str, model, batch, ref=None, regularizer: str = "none", reg_weight: float = 1.0,
            **hparams) -> Output:
    """Objective `name` plus `reg_weight` × a retain regulariser ("none", "nll" or "kl").

    Returns the objective's Output with `loss` = forget loss + reg_weight × retain loss, the two
    parts in `losses["forget_loss"]` / `losses["retain_loss"]` (floats) and the regulariser's
    settings in `hparams`.
    """
    if regularizer not in REGULARIZERS:
        raise ObjectiveError(f"Unknown regularizer {regularizer!r}: use one of {', '.join(REGULARIZERS)}.")
    out = get(name)(model, batch, ref=ref, **hparams)
    out.losses = {"forget_loss": out.loss.item()}
    if REGULARIZERS[regularizer] is not None:
        reg = REGULARIZERS[regularizer](model, batch, ref=ref)
        out.loss = out.loss + reg_weight * reg
        out.hparams = {**out.hparams, "regularizer": regularizer, "reg_weight": reg_weight}
        out.losses["retain_loss"] = reg.item()
    if not torch.isfinite(out.loss):
        raise NonFiniteLoss(f"Objective {name!r} produced a non-finite loss ({out.loss.item()}); "
                             "lower the learning rate or check the inputs.")
    return out
