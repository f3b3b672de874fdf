"""Does the G-effect predict what a step does? Proposition 1 of Wang et al. (ICLR 2025), measured.

A plain SGD step θ ← θ − η∇L changes a risk by ΔR = −η·e + O(η²), e = ∇Rᵀ∇L the G-effect
(kit.geffect). `check_first_order` takes one such step, on all parameters and on each layer group
alone, and compares the measured risk change with −η·e; `sgd_trajectory` takes T steps and
compares R(θ_T) − R(θ_0) with −η Σ_t e^(t). Both step with the exact full-batch gradient that
kit.geffect's probe accumulates, so what they test is the first-order reading itself, not an
optimizer.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch

from kit import objectives
from kit.data import QADataset
from kit.forward import to_device
from kit.geffect import Probe, _batches, _probe
from kit.groups import param_groups, tied


@torch.no_grad()
def risk(model, tokenizer, records, template: str = "auto", max_length: int = 512, batch_size: int = 32) -> float:
    """R(D): the mean over items of the mean answer-token NLL (in the model's dtype, summed in fp64)."""
    data = QADataset(list(records), tokenizer, template, max_length)
    device, total = next(model.parameters()).device, 0.0
    for batch in _batches(data, tokenizer, batch_size):
        batch = to_device(batch, device)
        logp, mask = objectives.logprobs(model, batch)
        total += float((-(logp.sum(1) / mask.sum(1).clamp(min=1))).double().sum())
    return total / len(data)


NOISE_FLOOR = 1e-9   # risk changes below this are rounding (fp32 RMSNorm inside fp64 Llama models)


@torch.no_grad()
def _step(model, grad: dict, lr: float, only: set | None = None) -> None:
    for p in model.parameters():
        if p in grad and (only is None or p in only):
            p.sub_(lr * grad[p].view_as(p).to(p.dtype))


def sgd_trajectory(model, tokenizer, objective: str, forget, retain, *, lr: float, steps: int,
                   hparams: dict | None = None, regularizer: str = "none", reg_weight: float = 1.0,
                   ref=None, groups="paper", batch_size: int = 16, template: str = "auto",
                   max_length: int = 512) -> pd.DataFrame:
    """Plain full-batch SGD on L for `steps` steps, with the G-effect and the risks at every θ_t.

    Proposition 1 (first-order form): R(θ_T) − R(θ_0) ≈ −η Σ_t e^(t). The table has, per step and
    group, e_u and e_r; the totals rows also carry the measured risks and the first-order
    predictions (`risk_u`, `risk_r`, `pred_risk_u`, `pred_risk_r`). The model is changed in place;
    if the risk diverges to inf/NaN the table ends at the last finite step.
    Used in: notebooks/03_g_effect_basics.ipynb
    """
    if ref is None and objectives.needs_reference(objective, regularizer):
        ref = objectives.make_reference(model)
    probe = Probe(objective, forget, retain, hparams=hparams or {}, regularizer=regularizer, reg_weight=reg_weight,
                  ref=ref, groups=groups, batch_size=batch_size, template=template, max_length=max_length)
    args = (template, max_length)
    frames, pred = [], {}
    for t in range(steps + 1):
        r_u, r_r = risk(model, tokenizer, forget, *args), risk(model, tokenizer, retain, *args)
        if not (np.isfinite(r_u) and np.isfinite(r_r)):
            break                                  # diverged: keep the steps that were finite
        if t == 0:
            pred = {"u": r_u, "r": r_r}
        df, grad = _probe(model, tokenizer, probe, keep_grad=t < steps)
        total = df[(df.component == "total") & (df.group == "total")].iloc[0]
        frames.append(df.assign(step=t, risk_u=np.where(df.group == "total", r_u, np.nan),
                                risk_r=np.where(df.group == "total", r_r, np.nan),
                                pred_risk_u=np.where(df.group == "total", pred["u"], np.nan),
                                pred_risk_r=np.where(df.group == "total", pred["r"], np.nan)))
        if t < steps:
            pred = {"u": pred["u"] - lr * total.e_u, "r": pred["r"] - lr * total.e_r}
            _step(model, grad, lr)
    return pd.concat(frames, ignore_index=True)


def check_first_order(model, tokenizer, objective: str, forget, retain, *, lr: float = 1e-3,
                      step_norm: float | None = None,
                      hparams: dict | None = None, regularizer: str = "none", reg_weight: float = 1.0,
                      ref=None, groups="paper", per_group: bool = True, double: bool = True,
                      batch_size: int = 16, template: str = "auto", max_length: int = 512) -> pd.DataFrame:
    """One plain SGD step θ − η∇L: the predicted risk change −η·e against the measured one.

    Runs on a copy of the model (in fp64 by default, so small risk changes are resolved); with
    `per_group`, also steps each group alone (its prediction is −η·e_g; a tied embedding matrix
    steps as one group, `embed+lm`, predicted by the sum of its embed, lm and tied_cross terms). With `step_norm`, η is
    chosen so that the whole step has that length, ‖η∇L‖ = step_norm: objectives whose gradients
    differ by orders of magnitude (RMU's is huge) are then compared at the same distance in weight
    space, where the curvature term is equally small. Llama's RMSNorm computes
    in fp32 even in an fp64 model, so risk changes below ~1e-9 are noise: choose `lr` so that
    η·|e| is well above that, and small enough that the second-order term stays negligible.
    Returns:
        DataFrame: scope ("all" or a group), data ("forget"/"retain"), lr, e, predicted, measured,
        rel_error, resolved (|predicted| at least 100× the ~1e-9 noise floor, so rel_error means something).
    Used in: notebooks/03_g_effect_basics.ipynb
    """
    work = copy.deepcopy(model)
    if ref is None and objectives.needs_reference(objective, regularizer):
        ref = objectives.make_reference(model)
    if double:
        work, ref = work.double(), (copy.deepcopy(ref).double() if ref is not None else None)
    probe = Probe(objective, forget, retain, hparams=hparams or {}, regularizer=regularizer, reg_weight=reg_weight,
                  ref=ref, groups=groups, batch_size=batch_size, template=template, max_length=max_length)
    df, grad = _probe(work, tokenizer, probe, keep_grad=True)
    if step_norm is not None:
        lr = step_norm / float(torch.sqrt(sum((g.double() ** 2).sum() for g in grad.values())))
    totals = df[df.component == "total"].set_index("group")[["e_u", "e_r"]]
    group_of = param_groups(work, groups)
    if tied(work):      # one matrix: its embed, lm and cross terms move together when it steps
        parts = [g for g in ("embed", "lm", "tied_cross") if g in totals.index]
        totals = pd.concat([totals.drop(index=parts), totals.loc[parts].sum().to_frame("embed+lm").T])
        group_of = {n: "embed+lm" if g == "embed" else g for n, g in group_of.items()}
    named = dict(work.named_parameters())
    scopes = {"all": None}
    if per_group:
        scopes.update({g: {named[n] for n, gg in group_of.items() if gg == g} for g in totals.index if g != "total"})
    data = {"forget": list(forget), "retain": list(retain)}
    base = {k: risk(work, tokenizer, v, template, max_length) for k, v in data.items()}
    original = {p: p.detach().clone() for p in work.parameters()}
    rows = []
    for scope, only in scopes.items():
        _step(work, grad, lr, only)
        for k, records in data.items():
            e = totals.loc["total" if scope == "all" else scope, "e_u" if k == "forget" else "e_r"]
            measured = risk(work, tokenizer, records, template, max_length) - base[k]
            rows.append({"scope": scope, "data": k, "lr": lr, "e": e, "predicted": -lr * e, "measured": measured,
                         "rel_error": abs(measured + lr * e) / max(abs(measured), 1e-30),
                         "resolved": abs(lr * e) >= NOISE_FLOOR * 100})
        with torch.no_grad():
            for p, v in original.items():
                p.copy_(v)
    return pd.DataFrame(rows)
