"""Does the forgetting stick? Relearning and quantization audits of an unlearned model.

An attack is applied alike to three models: the unlearned one, the retain model (it never saw the
forget data) and the target (it knows them). For a knowledge metric m, oriented so that higher
means knows more, the recovery score (docs/methods.md, *Does unlearning stick?*) is

    r = (m(unlearned') - m(retain')) / (m(target') - m(retain'))       (' : after the attack)

0: the attack gives the unlearned model no more than it gives a model that never knew; 1: it is
back to the target. The retain model scores 0 and the target 1 by construction. Pretrained
knowledge has no retain model; then (`baseline="unlearned"`) the unlearned model before the attack
takes its place, and the score is the share of what unlearning removed that the attack brings
back, without subtracting what the attack would teach a model that never knew.

- Relearning (Hu et al. 2024, "Jogging the memory of unlearned LLMs"; Lynch et al. 2024):
  `relearner` fine-tunes a copy for a small number of optimizer steps with `kit.train.finetune`,
  the engine that builds tiny, on half of each forget author's questions (`halves`) or on retain
  data; the knowledge is measured on the other half.
- Quantization (Zhang et al., ICLR 2025, "Catastrophic failure of LLM unlearning via
  quantization"): `quantize` rounds the attention and MLP weights of a copy to 8 or 4 bits,
  weight-only round-to-nearest with one scale per group of input weights, through torchao:
  PyTorch's own quantization library, which runs these configurations on CPU (optimum-quanto is in
  maintenance; hqq needs its own kernels), and whose configs transformers takes
  (`TorchAoConfig`) for GPU users. The head and embeddings stay in full precision, as in GPTQ and
  AWQ.

Metrics (on the held-out forget items, `kit.tofu.score_items`), oriented so that higher = knows
more: `nll` (minus the mean answer NLL), `rouge` (ROUGE-L recall of the greedy answer) and `truth`
(minus the mean log truth ratio log P(perturbed) / P(paraphrased), geometric as TOFU: > 0 when the
paraphrase is preferred). Beside them `fq`, TOFU's forget quality against the attacked retain
model (a two-sided KS p-value: 1 for the retain model itself); it says how far from the retain
model, not in which direction, so it gets no recovery score.
"""
from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ("nll", "rouge", "truth", "fq")
ORIENTED = ("nll", "rouge", "truth")        # the metrics with a recovery score
ROLES = ("unlearned", "retain", "target")


class AuditError(ValueError):
    """An audit the kit cannot run as asked; the message names the value and the fix."""


def as_model(model_or_run):
    """A model itself, or the last checkpoint of a `kit.unlearn` run directory."""
    if not isinstance(model_or_run, (str, Path)):
        return model_or_run
    from kit import rundir
    steps = rundir.read_manifest(model_or_run)["steps"]
    if not steps:
        raise AuditError(f"The run directory {model_or_run} holds no checkpoint; run unlearn(..., run_dir=) to the end.")
    return rundir.load_checkpoint(model_or_run, max(steps))


def halves(records, seed: int = 0) -> tuple[list, list]:
    """Each author's (or, without authors, all) questions shuffled with `seed` and split in two:
    (relearn on, evaluate on). Authors with one question go to the evaluated half."""
    groups: dict = {}
    for r in records:
        groups.setdefault(r.get("author", ""), []).append(r)
    train, held = [], []
    rng = random.Random(seed)
    for items in groups.values():
        items = items[:]
        rng.shuffle(items)
        cut = len(items) // 2
        train += items[:cut]
        held += items[cut:]
    if not train:
        raise AuditError(f"halves: {len(held)} record(s) give nothing to relearn on; pass at least two per author.")
    return train, held


def relearner(tokenizer, records, steps: int = 10, lr: float = 1e-5, batch_size: int = 8, seed: int = 0,
              template: str = "auto", max_length: int = 512):
    """The relearning attack as a function model -> fine-tuned copy: `steps` optimizer steps of
    AdamW at `lr` (no warm-up, linear decay) on `records`, batches of `batch_size`."""
    from kit.train import FinetuneConfig, finetune
    if steps < 1:
        raise AuditError(f"steps={steps}: relearning needs at least one optimizer step.")
    config = FinetuneConfig(lr=lr, batch_size=min(batch_size, len(records)), warmup_epochs=0.0, template=template,
                            max_length=max_length, seed=seed)

    def attack(model):
        return finetune(copy.deepcopy(model).train(), tokenizer, list(records), config, progress=False, max_steps=steps)
    attack.__name__ = f"relearn {steps} steps"
    return attack


def relearn_effect(model, tokenizer, relearn, held, batch_size: int = 16) -> float:
    """The G-effect of relearning at `model`'s weights: e = ∇R(held)ᵀ∇L_NLL(relearn), so a plain
    gradient step of size η on `relearn` lowers the held-out risk by about η·e. It is GA's e_r with
    D_u = relearn and D_r = held, negated (GA's loss is −R(D_u)): one objective gradient."""
    from kit.geffect import g_effect
    table = g_effect(as_model(model), tokenizer, "ga", list(relearn), list(held), batch_size=batch_size)
    return -float(table[(table.component == "total") & (table.group == "total")].e_r.iloc[0])


def quantize(model, bits: int = 8, group_size: int = 32):
    """A copy of `model` whose attention and MLP weights are rounded to `bits` (8 or 4), one scale
    per `group_size` input weights (torchao's weight-only round-to-nearest)."""
    import torch
    if bits not in (4, 8):
        raise AuditError(f"bits={bits}: the quantization audit rounds to 8 or 4 bits.")
    for name, module in _targets(model):
        if module.in_features % group_size:
            raise AuditError(f"{name} has {module.in_features} inputs, not a multiple of group_size={group_size}; "
                             "pass a group_size that divides it (32 and 64 fit tiny and SmolLM2).")
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup
    quantized = copy.deepcopy(model).float().eval()
    chosen = {id(m) for _, m in _targets(quantized)}
    quantize_(quantized, IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"), granularity=PerGroup(group_size)),
              filter_fn=lambda m, _: id(m) in chosen)
    return quantized


def quantizer(bits: int = 8, group_size: int = 32):
    """The quantization attack as a function model -> rounded copy."""
    def attack(model):
        return quantize(model, bits, group_size)
    attack.__name__ = f"{bits}-bit"
    return attack


def _targets(model):
    import torch
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and (".self_attn." in n or ".mlp." in n)]


def knowledge(model, tokenizer, records, reference: pd.DataFrame | None = None,
              batch_size: int = 32) -> tuple[dict, pd.DataFrame]:
    """The knowledge metrics of `model` on `records` (higher = knows more) and its item table.
    `reference`: the retain model's item table on the same records (for `fq`)."""
    from kit import tofu
    items = tofu.score_items(model, tokenizer, {"forget": list(records)}, batch_size=batch_size)
    scored = tofu.item_metrics(items)
    out = {"nll": -float(scored.avg_gt_loss.mean()), "rouge": float(scored.rouge.mean()),
           "truth": -float(np.log(scored.R).mean())}
    out["fq"] = tofu.forget_quality(items, reference)["forget_quality"] if reference is not None else 1.0
    return out, items


def _attacked(model, tokenizer, records, attacks: dict, retain: dict | None, batch_size: int) -> dict:
    """{attack: (knowledge metrics, item table)} of `model` after each attack; `retain`: the
    attacked retain model's item tables, which forget quality compares with (None: fq stays 1.0)."""
    return {name: knowledge(attack(model) if attack else model, tokenizer, records,
                            None if retain is None else retain[name], batch_size) for name, attack in attacks.items()}


def _rows(name: str, results: dict, fq: bool) -> pd.DataFrame:
    return pd.DataFrame([{"attack": a, "model": name, "metric": k, "value": v if fq or k != "fq" else float("nan")}
                         for a, (values, _) in results.items() for k, v in values.items()])


def audit_references(models: dict, tokenizer, records, attacks: dict,
                     batch_size: int = 32) -> tuple[pd.DataFrame, dict | None]:
    """The references' part of `audit`: every attack on the target (and on the retain model, where
    one exists), then the knowledge metrics on `records`. Returns their rows and the attacked
    retain model's item tables ({attack: items}, None without a retain model), which `audit_model`
    compares each unlearned model with for forget quality; each retain attack runs once."""
    if "target" not in models or set(models) - {"target", "retain"}:
        raise AuditError(f"audit_references takes the target and, where one exists, the retain model "
                         f"(got {sorted(models)}): models={{'target': ..., 'retain': ...}}.")
    retain = _attacked(as_model(models["retain"]), tokenizer, records, attacks, None, batch_size) if "retain" in models else None
    items = None if retain is None else {a: it for a, (_, it) in retain.items()}
    frames = [_rows(name, retain, fq=True) if name == "retain" else
              audit_model(name, m, tokenizer, records, attacks, retain=items, batch_size=batch_size)
              for name, m in models.items()]
    return pd.concat(frames, ignore_index=True), items


def audit_model(name: str, model, tokenizer, records, attacks: dict, retain: dict | None = None,
                batch_size: int = 32) -> pd.DataFrame:
    """`audit`'s rows for one model: every attack on it, then the knowledge metrics on `records`.
    `retain` (the item tables from `audit_references`, same records and attacks) gives forget
    quality; without it `fq` is NaN.
    A long audit can store each model's rows as they finish (notebook 12 does)."""
    return _rows(name, _attacked(as_model(model), tokenizer, records, attacks, retain, batch_size), fq=retain is not None)


def audit(models: dict, tokenizer, records, attacks: dict, batch_size: int = 32) -> pd.DataFrame:
    """Every attack on every model, then the knowledge metrics on `records`.

    Args:
        models: {"unlearned": ..., "retain": ..., "target": ...} (models or run directories; more
            unlearned models under other names are scored too).
        attacks: {name: function model -> attacked copy, or None for no attack}, e.g.
            {"none": None, "relearn": relearner(tok, train_half, steps=10), "4-bit": quantizer(4)}.
    Returns:
        tidy DataFrame: attack, model, metric, value; `recovery(table)` turns it into scores.
        Models one at a time: `audit_references` once, then `audit_model` for each.
    """
    if "target" not in models:
        raise AuditError("audit needs the target model beside the unlearned one(s): "
                         "models={'unlearned': ..., 'retain': ..., 'target': ...} ('retain' where one exists).")
    models = {name: as_model(m) for name, m in models.items()}
    references, items = audit_references({n: models[n] for n in ("target", "retain") if n in models}, tokenizer, records,
                                         attacks, batch_size)
    frames = [references[references.model == name] if name in ("target", "retain") else
              audit_model(name, m, tokenizer, records, attacks, retain=items, batch_size=batch_size)
              for name, m in models.items()]
    return pd.concat(frames, ignore_index=True)


def recovery(table: pd.DataFrame, baseline: str = "retain", min_gap: float = 1e-6) -> pd.DataFrame:
    """Recovery score per attack, oriented metric (`ORIENTED`) and model from an `audit` table:
    (m(model') - m(base)) / (m(target') - m(base)), primes after the attack.

    Args:
        baseline: "retain" (base = the attacked retain model: 0 = learns like a model that never
            knew) or "unlearned" (base = each unlearned model before any attack: the share of
            what unlearning removed that comes back; for pretrained knowledge, which has no
            retain model; needs the attack "none" in the table).
        min_gap: NaN where the target does not exceed the base by this much: there the scale from
            "knows no more than the base" to "knows like the target" does not exist (the metric cannot
            tell them apart, unlearning removed nothing, or an attack left the target below the base).
    """
    wide = table[table.metric.isin(ORIENTED)].pivot_table(index=["attack", "metric"], columns="model", values="value", sort=False)
    if baseline not in ("retain", "unlearned"):
        raise AuditError(f"baseline={baseline!r}: use 'retain' or 'unlearned'.")
    if baseline == "retain" and "retain" not in wide:
        raise AuditError("The audit has no retain model; pass baseline='unlearned' (pretrained knowledge has none).")
    if baseline == "unlearned" and "none" not in wide.index.get_level_values("attack"):
        raise AuditError("baseline='unlearned' reads each model before the attack: include the attack 'none'.")
    rows = []
    references = [c for c in ("retain", "target") if c in wide] if baseline == "retain" else []   # 0 and 1 by construction
    for name in [c for c in wide.columns if c not in ("retain", "target")] + references:
        if baseline == "retain":
            base = wide["retain"]
        else:
            base = wide.xs("none", level="attack")[name].reindex(wide.index, level="metric")
        gap = wide["target"] - base
        score = (wide[name] - base) / gap.where(gap >= min_gap)
        rows.append(score.rename("recovery").reset_index().assign(model=name))
    return pd.concat(rows, ignore_index=True)[["attack", "model", "metric", "recovery"]]
