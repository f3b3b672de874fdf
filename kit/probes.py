"""The G-effect along an unlearning run: from saved checkpoints, or live while `unlearn` trains.

The G-effect paper reads its curves from checkpoints saved every few optimizer steps, averaging
over the forget set at each fixed θ. `g_effect_over_run` does that for a run directory written by
`kit.unlearn` (the manifest says the objective, its hyperparameters and the saved steps);
`GEffectCallback` computes the same table during training every k steps, so nothing has to be
saved. Both give the exact mean-gradient quantity (kit.geffect.g_effect).

For parity with the published code there is also `mode="ema"`: the three gradients are taken on
one forget and one retain micro-batch per step, smoothed with an exponential moving average
(0.6 old, 0.4 new) and reported every `every` steps (the reference reports every 4 micro-batches).
That estimate is noisier and keeps three full gradient copies, as the reference does.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from transformers import TrainerCallback

from kit import geffect, gradstream, objectives, rundir
from kit.data import Collator, ForgetRetainDataset, QADataset
from kit.forward import to_device


def g_effect_over_run(run_dir: str | Path, tokenizer, forget, retain, *, groups="paper", steps=None,
                      batch_size: int = 16, template: str = "auto", with_regularizer: bool = True) -> pd.DataFrame:
    """The G-effect table at every saved checkpoint of a `kit.unlearn` run directory.

    Args:
        run_dir: a directory written by `unlearn(..., run_dir=...)` (checkpoint-<step>/ + manifest.json).
        forget, retain: the data the risks are measured on (usually the run's forget set and a retain set).
        steps: which saved steps (default: all in the manifest).
        with_regularizer: probe the run's retain regulariser as its own component too.
    Returns:
        g_effect's tidy table with a `step` column.
    Used in: notebooks/04_ga_and_wga.ipynb
    """
    run_dir = Path(run_dir)
    manifest = rundir.read_manifest(run_dir)
    config = manifest["config"]
    steps = sorted(manifest["steps"] if steps is None else steps)
    original = rundir.load_checkpoint(run_dir, 0) if 0 in manifest["steps"] else None
    regularizer = config["regularizer"] if with_regularizer else "none"
    ref = original if objectives.needs_reference(config["objective"], regularizer) else None
    if ref is None and objectives.needs_reference(config["objective"], regularizer):
        raise geffect.GEffectError(f"{run_dir} has no checkpoint-0, which {config['objective']} needs as reference.")
    frames = []
    for step in steps:
        model = original if step == 0 and original is not None else rundir.load_checkpoint(run_dir, step)
        df = geffect.g_effect(model, tokenizer, config["objective"], forget, retain, hparams=config["hparams"],
                              regularizer=regularizer, reg_weight=config["reg_weight"], ref=ref, groups=groups,
                              batch_size=batch_size, template=template)
        frames.append(df.assign(step=step))
    return pd.concat(frames, ignore_index=True)


def pg_effect_over_run(run_dir: str | Path, tokenizer, forget, retain, *, steps=None,
                       batch_size: int = 16, template: str = "auto") -> pd.DataFrame:
    """Instance-wise G-effects (kit.geffect.pg_effect) at saved checkpoints of a run, with `step`.

    The reference model of NPO-style weights is the run's checkpoint-0 (the original model).
    Used in: notebooks/05_npo_and_tnpo.ipynb
    """
    run_dir = Path(run_dir)
    manifest = rundir.read_manifest(run_dir)
    config = manifest["config"]
    steps = sorted(manifest["steps"] if steps is None else steps)
    original = rundir.load_checkpoint(run_dir, 0)
    frames = []
    for step in steps:
        model = original if step == 0 else rundir.load_checkpoint(run_dir, step)
        df = geffect.pg_effect(model, tokenizer, config["objective"], forget, retain, hparams=config["hparams"],
                               ref=original, batch_size=batch_size, template=template)
        frames.append(df.assign(step=step))
    return pd.concat(frames, ignore_index=True)


class GEffectCallback(TrainerCallback):
    """Computes the G-effect every `every` optimizer steps during `kit.unlearn` (and before step 1).

    `GEffectCallback(tok, forget, retain, config)`; `reg_retain` is the regulariser's own retain data
    when it differs from the measured D_r. After the run, `.frame()` is the table of
    `g_effect` with a `step` column. With `mode="ema"`, the reference code's smoothed
    micro-batch estimate instead (see the module docstring).
    """

    def __init__(self, tokenizer, forget, retain, config, *, every: int = 1, groups="paper",
                 mode: str = "exact", ema: float = 0.6, batch_size: int = 16, reg_retain=None):
        if mode not in ("exact", "ema"):
            raise geffect.GEffectError(f"Unknown G-effect mode {mode!r}: use 'exact' or 'ema'.")
        self.tokenizer, self.forget, self.retain, self.config = tokenizer, list(forget), list(retain), config
        self.every, self.groups, self.mode, self.ema, self.batch_size = every, groups, mode, ema, batch_size
        self.reg_retain = list(reg_retain) if reg_retain is not None else None   # the regulariser's data
        self.frames: list[pd.DataFrame] = []
        self.ref = None
        self._avg: dict[str, dict] = {}
        self._draw = torch.Generator().manual_seed(config.seed)

    def _reference(self, model):
        if self.ref is None and objectives.needs_reference(self.config.objective, self.config.regularizer):
            self.ref = objectives.make_reference(model)
        return self.ref

    def _exact(self, model, step: int) -> None:
        c = self.config
        df = geffect.g_effect(model, self.tokenizer, c.objective, self.forget, self.retain, hparams=c.hparams,
                              regularizer=c.regularizer, reg_weight=c.reg_weight, ref=self._reference(model),
                              groups=self.groups, batch_size=self.batch_size, template=c.template,
                              reg_retain=self.reg_retain)
        self.frames.append(df.assign(step=step))

    def _sample(self, records) -> list:
        idx = torch.randperm(len(records), generator=self._draw)[: self.batch_size].tolist()
        return [records[i] for i in idx]

    def _ema_update(self, model, step: int) -> None:
        """One micro-batch of each gradient, folded into the running averages (three full copies)."""
        c, tok = self.config, self.tokenizer
        forget, retain = self._sample(self.forget), self._sample(self.retain)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        model.zero_grad(set_to_none=True)
        pairs = ForgetRetainDataset(forget, retain if c.regularizer != "none" else None, tok, c.template,
                                    with_idk=objectives.needs_idk(c.objective), seed=step)
        batch = to_device(Collator(tok)([pairs[i] for i in range(len(pairs))]), device)
        objectives.compute(c.objective, model, batch, ref=self._reference(model), regularizer=c.regularizer,
                           reg_weight=c.reg_weight, **c.hparams).loss.backward()
        fresh = {"L": gradstream.take_grads(model)}
        for slot, records in (("u", forget), ("r", retain)):
            geffect.risk_backward(model, QADataset(records, tok, c.template), tok, len(records))
            fresh[slot] = gradstream.take_grads(model)
        model.train(was_training)
        for slot, grads in fresh.items():
            old = self._avg.setdefault(slot, {})
            for p, g in grads.items():
                old[p] = g if p not in old else self.ema * old[p] + (1 - self.ema) * g

    def _ema_report(self, model, step: int) -> None:
        group_of = geffect.param_groups(model, self.groups)
        name_of = {p: n for n, p in model.named_parameters()}
        sums: dict[tuple[str, str], float] = {}
        for p, g_l in self._avg["L"].items():
            group = group_of.get(name_of.get(p, ""), "other")
            for slot, col in (("u", "e_u"), ("r", "e_r")):
                if p in self._avg[slot]:
                    sums[(group, col)] = sums.get((group, col), 0.0) + float(torch.dot(self._avg[slot][p], g_l))
        order = geffect.ordered_groups(model, self.groups, group_of)
        rows = [{"component": "total", "group": g, "e_u": sums.get((g, "e_u"), 0.0), "e_r": sums.get((g, "e_r"), 0.0)}
                for g in order]
        df = pd.DataFrame(rows)
        total = {"component": "total", "group": "total", "e_u": df.e_u.sum(), "e_r": df.e_r.sum()}
        self.frames.append(pd.concat([df, pd.DataFrame([total])], ignore_index=True).assign(step=step))

    def _at(self, model, step: int, force: bool = False) -> None:
        if self.mode == "exact":
            if force or step % self.every == 0:
                self._exact(model, step)
            return
        self._ema_update(model, step)
        if force or step % self.every == 0:
            self._ema_report(model, step)

    def on_train_begin(self, args, state, control, model=None, **kw):
        self._at(model, state.global_step, force=True)

    def on_step_end(self, args, state, control, model=None, **kw):
        self._at(model, state.global_step, force=state.global_step == state.max_steps)

    def frame(self) -> pd.DataFrame:
        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()
