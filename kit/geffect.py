"""The G-effect: how one unlearning step moves the risk of forget and retain data.

Wang et al. (ICLR 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go
Beyond") read an unlearning objective L through the inner product of its gradient with the
gradient of the NLL risk R on a data set D:

    e(D; θ) = ∇R(D; θ)ᵀ ∇L(D_u; θ)          e_u: D = D_u (forget)     e_r: D = D_r (retain)

A gradient step θ ← θ − η∇L changes the risk by ΔR ≈ −η·e, so a good objective has e_u clearly
negative (forget risk rises) and e_r near zero or positive (retain risk does not rise). The inner
product splits over parameter groups, e = Σ_g ∇_g Rᵀ ∇_g L, which shows *where* in the network
an objective acts (the paper's groups: embeddings, shallow / middle / deep thirds of the blocks,
and the output head), and it is linear in L, so an objective and its retain regulariser can be
probed separately and added.

How it is computed here: ∇L is accumulated over the forget set by ordinary backward passes and
kept (one gradient-sized buffer at most: an input embedding's gradient is stored as its nonzero
rows, those of the tokens seen). The risk gradients are never stored: a post-accumulate hook (kit.gradstream) on
every parameter dots its gradient with ∇L the moment it is produced and frees it, so the probe's
peak memory is that of a training step plus the stored ∇L. Three gradients (objective, forget
risk, retain risk) are the minimum. Everything is the exact mean-gradient quantity, accumulated
in fp32.

Tied input/output embeddings (smollm2-135m, GPT-2) share one matrix W whose gradient is the sum
of an input-side part a and an output-side part b. The probe unties W into two temporary
parameters (one storage, two gradients), reports a_Rᵀa_L under `embed`, b_Rᵀb_L under `lm` and
the cross terms a_Rᵀb_L + b_Rᵀa_L under `tied_cross`, so the groups still sum to the exact total.

Several processes (torch.distributed): the forget and retain sets are split over them. With
replicated parameters ∇L is all-reduced and each process streams its own items' risk gradients;
with FSDP-sharded parameters every gradient stays a shard and each process dots its shards. In
both cases the partial dot products are summed, so every process gets the single-process numbers.

Whether −η·e predicts what a step really does is measured in kit.firstorder.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field

import pandas as pd
import torch

from kit import distributed, gradstream, objectives
from kit.data import Collator, ForgetRetainDataset, QADataset, is_text
from kit.forward import answer_logits, to_device
from kit.groups import GroupError, group_order, ordered_groups, param_groups, tied, untied  # noqa: F401 (re-exported)


class GEffectError(ValueError):
    """The probe cannot do what was asked (e.g. step a tied model); says the fix."""


def _batches(dataset, tokenizer, batch_size: int):
    collate = Collator(tokenizer)
    for start in range(0, len(dataset), batch_size):
        yield collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


def _item_nll_sum(logits, labels) -> torch.Tensor:
    """Σ over the batch of each item's mean answer-token NLL (full or answer-position logits)."""
    logp, mask = objectives.answer_logprobs(logits, labels)
    return -(logp.sum(1) / mask.sum(1).clamp(min=1)).sum()


def risk_backward(model, dataset, tokenizer, batch_size: int, total: int | None = None) -> None:
    """Backward of the risk R(D) = mean over items of the mean answer-token NLL, accumulated into
    the parameters' `.grad` (the gradient of the full mean; `total` items over all processes when
    this process holds a shard). A public seam: kit.attribution and kit.probes take their risk
    gradients from here, so every module means the same R."""
    device, n = next(model.parameters()).device, total or len(dataset)
    for batch in _batches(dataset, tokenizer, batch_size):
        batch = to_device(batch, device)
        (_item_nll_sum(answer_logits(model, batch)[1], batch["labels"]) / n).backward()


class _SharedForward:
    """Model stand-in that keeps its forward pass on one input (the forget batch), so the forget
    risk can reuse it instead of running the model again; everything else goes to the model."""

    def __init__(self, model, input_ids: torch.Tensor):
        self.model, self.key, self.out = model, input_ids, None

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, input_ids=None, attention_mask=None, **kw):
        if input_ids is not self.key:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)
        if self.out is None:
            self.out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)
        return self.out


def _objective_backward(model, name, forget, retain, tokenizer, ref, hparams, batch_size, template, max_length,
                        total: int | None = None, share: bool = False):
    """Backward of L(D_u) = the objective's mean over the forget set (retain/idk parts as it needs).

    With `share` and a forget set of one batch, returns (forget part, forward output) with the
    graph kept, so the forget risk's backward can reuse that forward; otherwise None.
    """
    data = ForgetRetainDataset(forget, retain, tokenizer, template, max_length,
                               with_idk=objectives.needs_idk(name), seed=0)
    device, n = next(model.parameters()).device, len(data)
    shared = None
    for start in range(0, n, batch_size):
        part = to_device(Collator(tokenizer)([data[i] for i in range(start, min(start + batch_size, n))]), device)
        runner = _SharedForward(model, part["forget"]["input_ids"]) if share and n <= batch_size else model
        out = objectives.get(name)(runner, part, ref=ref, **hparams)
        keep = runner is not model and runner.out is not None
        (out.loss * (len(part["forget"]["input_ids"]) / (total or n))).backward(retain_graph=keep)
        shared = (part["forget"], runner.out) if keep else None
    return shared


def _regularizer_backward(model, name, retain, tokenizer, ref, batch_size, template, max_length, total=None):
    data = QADataset(retain, tokenizer, template, max_length)
    device, n, fn = next(model.parameters()).device, total or len(data), objectives.REGULARIZERS[name]
    for batch in _batches(data, tokenizer, batch_size):
        loss = fn(model, {"retain": to_device(batch, device)}, ref=ref)
        (loss * (len(batch["input_ids"]) / n)).backward()


def _pairs(model, groups: dict[str, str], refs: dict, head_copy, mask=None) -> dict:
    """For each parameter: which stored gradients its risk gradient is dotted with, under which
    group (and, for a weight mask, which elements count as selected)."""
    by_param = {p: n for n, p in model.named_parameters()}
    masks = {} if mask is None else {n: m.reshape(-1).to(p.device) for n, p in model.named_parameters()
                                     if (m := mask.masks.get(n)) is not None}
    pairs = defaultdict(list)
    for slot, grads in refs.items():
        for p, ref in grads.items():
            if head_copy is not None and p is head_copy:
                group = "lm"
            else:
                group = groups.get(by_param.get(p, ""), "other")
            pairs[p].append((slot, group, ref, masks.get(by_param.get(p, ""))))
        if head_copy is not None:                                  # tied: cross terms a_R·b_L + b_R·a_L
            embed = model.get_input_embeddings().weight
            if head_copy in grads:
                pairs[embed].append((slot, "tied_cross", grads[head_copy], None))
            if embed in grads:
                pairs[head_copy].append((slot, "tied_cross", grads[embed], None))
    return pairs


@dataclass(frozen=True, eq=False)
class Probe:
    """What one G-effect probe measures: the objective (and its retain regulariser) whose gradient
    ∇L is dotted with the risk gradients of `forget` (e_u) and `retain` (e_r), and how.
    The arguments of `g_effect`, by name."""
    objective: str
    forget: list
    retain: list
    hparams: dict = field(default_factory=dict)
    regularizer: str = "none"
    reg_weight: float = 1.0
    reg_retain: list | None = None          # the regulariser's own retain data (default: retain)
    ref: object = None
    groups: object = "paper"
    batch_size: int = 16
    template: str = "auto"
    max_length: int = 512
    reuse_forward: bool = False

    def __post_init__(self):
        objectives.get(self.objective)
        if self.regularizer not in objectives.REGULARIZERS:
            raise objectives.ObjectiveError(f"Unknown regularizer {self.regularizer!r}: use one of "
                                            f"{', '.join(objectives.REGULARIZERS)}.")
        object.__setattr__(self, "hparams", dict(self.hparams or {}))
        for name in ("forget", "retain") + (("reg_retain",) if self.reg_retain is not None else ()):
            object.__setattr__(self, name, list(getattr(self, name)))

    @property
    def reg_data(self) -> list:
        return self.reg_retain if self.reg_retain is not None else self.retain


@gradstream.leaves_model_untouched
def g_effect(model, tokenizer, objective: str, forget, retain, *, hparams: dict | None = None,
             regularizer: str = "none", reg_weight: float = 1.0, reg_retain=None, ref=None, groups="paper",
             batch_size: int = 16, template: str = "auto", max_length: int = 512,
             reuse_forward: bool = False) -> pd.DataFrame:
    """The exact G-effects e_u = ∇R(D_u)ᵀ∇L and e_r = ∇R(D_r)ᵀ∇L, by parameter group.

    Args:
        model, tokenizer: the model at the θ to probe (its weights are not changed).
        objective: a kit.objectives name; `hparams` its hyperparameters.
        forget, retain: records of D_u and D_r (R is the mean answer NLL per item, averaged).
        regularizer, reg_weight: a retain regulariser ("nll" or "kl") probed as its own component.
        reg_retain: the retain records the regulariser trains on (default: `retain`); pass other
            items to measure on D_r how the regulariser's protection generalises.
        ref: frozen original model, made here when the objective or regulariser needs one.
        groups: "paper", "layer", "module", a {parameter: group} dict or a function (param_groups),
            or a kit.attribution.Mask: groups "selected" and "rest" (the mask's weights) and "fixed"
            (parameters the mask does not cover).
        reuse_forward: when the forget set fits one batch, let the forget risk reuse the
            objective's forward pass: one forward pass fewer, but that pass's activations stay
            alive through the objective's backward (more peak memory; see bench/geffect.py).
    Returns:
        tidy DataFrame with columns component (the objective, the regulariser × weight, "total"),
        group (… and "total"), e_u, e_r.
    Used in: notebooks/03_g_effect_basics.ipynb
    """
    probe = Probe(objective, forget, retain, hparams=hparams or {}, regularizer=regularizer, reg_weight=reg_weight,
                  reg_retain=reg_retain, ref=ref, groups=groups, batch_size=batch_size, template=template,
                  max_length=max_length, reuse_forward=reuse_forward)
    return _probe(model, tokenizer, probe)[0]


def _shards(probe: Probe) -> tuple[list, list, list, int]:
    """This process's share of forget, retain and the regulariser's data, and the world size."""
    rank, world = distributed.world()
    sets = (probe.forget, probe.retain, probe.reg_data)
    if world > 1:   # each process takes a shard; gradients of L are summed, then partial dots
        if min(map(len, sets)) < world:
            raise GEffectError(f"{world} processes but only {min(map(len, sets))} items in the smallest set; "
                               "give every process at least one item.")
        sets = tuple(records[rank::world] for records in sets)
    return (*sets, world)


def _groups_of(model, groups):
    """(parameter name -> group, the weight mask or None) for a groups spec or a kit.attribution.Mask."""
    mask = groups if hasattr(groups, "masks") else None
    if mask is not None:
        return {n: "mask" if n in mask.masks else "fixed" for n, p in model.named_parameters() if p.requires_grad}, mask
    return param_groups(model, groups), None


def n_items(records, tokenizer, template: str = "auto", max_length: int = 512) -> int:
    """How many items R averages over: one per QA pair, one per chunk of a document."""
    if not any(is_text(r) for r in records):
        return len(records)
    return len(QADataset(records, tokenizer, template, max_length))


def _objective_gradients(model, tokenizer, probe: Probe, forget, reg_data, ref, reduce, share: bool):
    """{component: stored ∇ of that component}, the objective's and (scaled) the regulariser's; and
    the objective's forward pass when `share` lets the forget risk reuse it."""
    refs = {}
    own_retain = reg_data if objectives.needs_retain(probe.objective) else None   # RMU-WMDP's retain term
    shared = _objective_backward(model, probe.objective, forget, own_retain, tokenizer, ref, probe.hparams, probe.batch_size,
                                 probe.template, probe.max_length, share=share,
                                 total=n_items(probe.forget, tokenizer, probe.template, probe.max_length))
    refs[probe.objective] = gradstream.compact(reduce(gradstream.take_grads(model)))
    if probe.regularizer != "none":
        _regularizer_backward(model, probe.regularizer, reg_data, tokenizer, ref, probe.batch_size, probe.template,
                              probe.max_length, total=n_items(probe.reg_data, tokenizer, probe.template, probe.max_length))
        scaled = {p: probe.reg_weight * g for p, g in reduce(gradstream.take_grads(model)).items()}
        refs[probe.regularizer] = gradstream.compact(scaled)
    return refs, shared


def _risk_dots(model, tokenizer, probe: Probe, pairs, forget, retain, shared, streaming: bool) -> dict:
    """{"e_u"|"e_r": {(component, group): dot}}: each risk gradient streamed against the stored ones."""
    sums = {}
    totals = {name: n_items(records, tokenizer, probe.template, probe.max_length)
              for name, records in (("e_u", probe.forget), ("e_r", probe.retain))}
    for risk_name, records in (("e_u", forget), ("e_r", retain)):
        with gradstream.Streamer(pairs, streaming=streaming) as stream:
            if risk_name == "e_u" and shared is not None:      # reuse the objective's forward pass
                part, out = shared
                (_item_nll_sum(out.logits, part["labels"]) / totals["e_u"]).backward()
                shared = None
            else:
                risk_backward(model, QADataset(records, tokenizer, probe.template, probe.max_length), tokenizer,
                              probe.batch_size, total=totals[risk_name])
        sums[risk_name] = stream.sums
    return sums


def _stepping_gradient(model, refs: dict, head_copy) -> dict:
    """The total ∇L as {parameter: dense flat gradient}, a tied matrix stepping by both its parts."""
    grad = {p: sum(gradstream.dense(r[p]) for r in refs.values() if p in r) for p in set().union(*refs.values())}
    if head_copy is not None and head_copy in grad:
        embed, lm = model.get_input_embeddings().weight, grad.pop(head_copy)
        grad[embed] = grad[embed] + lm if embed in grad else lm
    return grad


def _table(model, probe: Probe, refs: dict, sums: dict, group_of: dict, mask) -> pd.DataFrame:
    """The tidy table: one row per component and group, plus the components' sum and the totals."""
    order = (["selected", "rest", "fixed"] if mask is not None else
             list(dict.fromkeys([*ordered_groups(model, probe.groups, group_of), "tied_cross"])))
    rows = []
    for slot in refs:
        name = slot if slot == probe.objective else f"{probe.regularizer} x {probe.reg_weight:g}"
        for g in order:
            # every group of a named scheme gets a row (0 where the objective has no gradient: RMU
            # above its block); the cross terms and a mask's parts only where they exist
            if any((slot, g) in sums[r] for r in sums) or (mask is None and g != "tied_cross"):
                rows.append({"component": name, "group": g, "e_u": sums["e_u"].get((slot, g), 0.0),
                             "e_r": sums["e_r"].get((slot, g), 0.0)})
    df = pd.DataFrame(rows)
    per_group = df.groupby("group", sort=False)[["e_u", "e_r"]].sum().reset_index().assign(component="total")
    df = pd.concat([df, per_group], ignore_index=True) if len(refs) > 1 else df.assign(component="total")
    totals = df.groupby("component", sort=False)[["e_u", "e_r"]].sum().reset_index().assign(group="total")
    return pd.concat([df, totals], ignore_index=True)[["component", "group", "e_u", "e_r"]]


def _probe(model, tokenizer, probe: Probe, keep_grad: bool = False):
    """g_effect's table, and (keep_grad) the total ∇L as {parameter: flat gradient}."""
    forget, retain, reg_data, world = _shards(probe)
    ref = probe.ref
    if ref is None and objectives.needs_reference(probe.objective, probe.regularizer):
        ref = objectives.make_reference(model)
    group_of, mask = _groups_of(model, probe.groups)
    sharded = distributed.sharded(model)
    if sharded and (mask is not None or keep_grad or tied(model)):
        raise GEffectError("Under FSDP the probe supports parameter groups only: no weight-mask groups, no "
                           "stepping, no tied embeddings; probe an unsharded copy for those.")
    reduce = (lambda grads: grads) if sharded else (lambda grads: distributed.reduce_grads(model, grads, world))
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    with untied(model) as head_copy, (distributed.summed_shard_gradients(model) if sharded else nullcontext()):
        refs, shared = _objective_gradients(model, tokenizer, probe, forget, reg_data, ref, reduce,
                                            share=probe.reuse_forward and not sharded)
        pairs = _pairs(model, group_of, refs, head_copy, mask)
        sums = _risk_dots(model, tokenizer, probe, pairs, forget, retain, shared, streaming=not sharded)
        if world > 1:
            sums = distributed.reduce_sums(sums, pairs)
        grad = _stepping_gradient(model, refs, head_copy) if keep_grad else None
    model.train(was_training)
    return _table(model, probe, refs, sums, group_of, mask), grad


@gradstream.leaves_model_untouched
def pg_effect(model, tokenizer, objective: str, forget, retain, *, hparams: dict | None = None, ref=None,
              batch_size: int = 16, template: str = "auto", max_length: int = 512) -> pd.DataFrame:
    """Instance-wise G-effects: for each forget example s, ∇R(D)ᵀ∇log p(s) for D = D_u and D_r.

    log p(s) is summed over the answer tokens, so NPO's G-effect is Σ_s w(s)/N · pg(s) and GA's
    Σ_s pg(s) / (N |s|). The objective's weight for each example is attached: NPO/SimNPO's
    sequence weight w(s), or the mean token weight of the token-weighting objectives (1 for GA).
    Keeps ∇R(D_u) and ∇R(D_r) (two gradient copies) while one backward per example streams; a
    tied embedding matrix is one parameter here, its gradient the sum over both of its uses.
    Returns:
        DataFrame, one row per forget example: item, question, pg_u, pg_r, weight, n_tokens, nll.
    Used in: notebooks/05_npo_and_tnpo.ipynb
    """
    objectives.get(objective)
    forget, retain = list(forget), list(retain)
    if ref is None and objectives.needs_reference(objective):
        ref = objectives.make_reference(model)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    refs = {}
    for slot, records in (("u", forget), ("r", retain)):
        risk_backward(model, QADataset(records, tokenizer, template, max_length), tokenizer, batch_size)
        refs[slot] = gradstream.compact(gradstream.take_grads(model))
    pairs = {p: [(slot, "all", g[p], None) for slot, g in refs.items() if p in g] for p in refs["u"]}
    data = ForgetRetainDataset(forget, None, tokenizer, template, max_length)
    device, collate, rows = next(model.parameters()).device, Collator(tokenizer), []
    for i in range(len(data)):
        batch = to_device(collate([data[i]]), device)
        with torch.no_grad():
            out = objectives.get(objective)(model, batch, ref=ref, **(hparams or {}))
        if out.seq_weights is not None:
            weight = float(out.seq_weights[0])
        elif out.token_weights is not None:
            mask = batch["forget"]["labels"][:, 1:] != -100
            weight = float(out.token_weights[mask].mean())
        else:
            weight = float("nan")
        part = batch["forget"]
        logp, mask = objectives.logprobs(model, part)
        with gradstream.Streamer(pairs) as stream:
            logp.sum().backward()
        n = int(mask.sum())
        rows.append({"item": i, "question": forget[i]["question"], "pg_u": stream.sums[("u", "all")],
                     "pg_r": stream.sums[("r", "all")], "weight": weight, "n_tokens": n,
                     "nll": -float(logp.detach().sum()) / n})
    model.train(was_training)
    return pd.DataFrame(rows)
