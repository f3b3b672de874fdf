"""What notebooks/10_explorer.ipynb shows of a folder of unlearning runs.

`Explorer(folder, tokenizer, forget, retain)` finds every `kit.unlearn` run directory under
`folder` and, for a chosen run, checkpoint, group scheme and forget example, gives:

- `g_effects(run, scheme)`: the G-effect by group at every saved checkpoint;
- `tokens(run, step, example)`: each answer token of the example with its probability under the
  checkpoint and the weight the run's objective puts on its log-likelihood gradient there;
- `answers(run, step, examples)`: greedy answers of the original model and of the checkpoint;
- `draw(...)`: the curves and the token heat map as one matplotlib figure.

Checkpoints and G-effect tables are loaded once and kept (the widgets revisit them).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kit import objectives, plots, rundir
from kit.data import Collator, ForgetRetainDataset
from kit.rundir import RunDirError, read_manifest
from kit.unlearning import UnlearnConfig, unlearn


class ExploreError(ValueError):
    """A folder without runs, an unknown run or a step that was not saved; says the fix."""


def find_runs(folder: str | Path) -> dict[str, Path]:
    """{name: run directory} of every folder under `folder` (itself included) with a manifest.json."""
    folder = Path(folder)
    found = rundir.find_runs(folder)
    if not found:
        raise ExploreError(f"No run directories (folders with manifest.json) under {folder}; "
                           "make some with kit.unlearn(..., run_dir=...) or leave RUN_DIR empty.")
    return {str(p.relative_to(folder)) if p != folder else p.name: p for p in found}


def make_runs(folder: str | Path, model, tokenizer, forget, retain, names, split: str, model_id: str,
              **overrides) -> dict[str, Path]:
    """One finished run per objective name under `folder/<name>`; a finished run with the same
    configuration from the same weights (the model's fingerprint: another tiny family is another
    model) is kept, anything else (missing, interrupted, other settings or weights) is redone."""
    from kit.models import fingerprint
    folder, original = Path(folder), {k: v.clone() for k, v in model.state_dict().items()}
    origin = f"{model_id} @ {fingerprint(model, config=False)}"
    for name in names:
        config = UnlearnConfig.paper(name, split, model_id, **overrides)
        run_dir = folder / name.replace("+", "_")
        try:
            manifest = read_manifest(run_dir)
            saved = {**_as_json(UnlearnConfig()), **manifest["config"]}    # fields added since it ran take their defaults
            if manifest.get("finished") and saved == _as_json(config) and manifest.get("model") == origin:
                continue
        except RunDirError:     # missing or corrupt manifest: redo the run
            pass
        model.load_state_dict(original)
        unlearn(model, tokenizer, forget, retain, config, run_dir=run_dir, model_id=origin, data_id=split)
    model.load_state_dict(original)
    return find_runs(folder)


def _as_json(config: UnlearnConfig) -> dict:
    import dataclasses
    import json
    return json.loads(json.dumps(dataclasses.asdict(config)))


class Explorer:
    def __init__(self, folder: str | Path, tokenizer, forget, retain, batch_size: int = 16):
        self.runs = find_runs(folder)
        self.tok, self.forget, self.retain, self.batch_size = tokenizer, list(forget), list(retain), batch_size
        self._tables: dict = {}
        self._model = lru_cache(maxsize=8)(self._load)

    # ------------------------------------------------------------ runs and checkpoints
    def manifest(self, run: str) -> dict:
        if run not in self.runs:
            raise ExploreError(f"Unknown run {run!r}; the runs here are: {', '.join(self.runs)}.")
        return read_manifest(self.runs[run])

    def steps(self, run: str) -> list[int]:
        return sorted(self.manifest(run)["steps"])

    def _load(self, run: str, step: int):
        if step not in self.steps(run):
            raise ExploreError(f"Run {run!r} has no checkpoint at step {step}; saved steps: {self.steps(run)}.")
        return rundir.load_checkpoint(self.runs[run], step)

    def model(self, run: str, step: int):
        return self._model(run, step)

    # ------------------------------------------------------------ the three views
    def g_effects(self, run: str, scheme: str = "paper") -> pd.DataFrame:
        """G-effect table (step, group, component, e_u, e_r) over the run's checkpoints."""
        key = (run, scheme)
        if key not in self._tables:
            from kit.probes import g_effect_over_run
            self._tables[key] = g_effect_over_run(self.runs[run], self.tok, self.forget, self.retain,
                                                  groups=scheme, batch_size=self.batch_size)
        return self._tables[key]

    @torch.no_grad()
    def tokens(self, run: str, step: int, example: int) -> pd.DataFrame:
        """Answer tokens of forget example `example`: token, p (under the checkpoint), weight.

        The weight is the objective's w_i on ∇log p_i (a sequence weight is spread over the
        answer); objectives that are not weighted likelihoods (PO, RMU, ...) show weight NaN.
        """
        if not 0 <= example < len(self.forget):
            raise ExploreError(f"Forget example {example} is out of range: there are {len(self.forget)} (0-{len(self.forget) - 1}).")
        config = self.manifest(run)["config"]
        name, model = config["objective"], self.model(run, step)
        data = ForgetRetainDataset([self.forget[example]], self.retain[:1], self.tok, with_idk=objectives.needs_idk(name))
        batch = Collator(self.tok)([data[0]])
        ref = self.model(run, 0) if objectives.needs_reference(name) else None
        logp, mask = objectives.logprobs(model, batch["forget"])
        weight = torch.full_like(logp, float("nan"))
        if name != "rmu":
            out = objectives.compute(name, model, batch, ref=ref, **config["hparams"])
            if out.token_weights is not None:
                weight = out.token_weights
            elif out.seq_weights is not None:
                weight = out.seq_weights[:, None].expand_as(logp)
            elif name == "ga":
                weight = torch.ones_like(logp)
        keep = mask[0].bool()
        ids = batch["forget"]["input_ids"][0, 1:][keep]
        return pd.DataFrame({"token": [self.tok.decode([int(i)]) for i in ids],
                             "p": logp[0][keep].exp().numpy(), "weight": weight[0][keep].float().numpy()})

    def answers(self, run: str, step: int, examples) -> pd.DataFrame:
        """Gold answer, the original model's and the checkpoint's greedy answers, side by side."""
        from kit.evaluation import generate_answers
        questions = [self.forget[i]["question"] for i in examples]
        before = generate_answers(self.model(run, 0), self.tok, questions)
        after = generate_answers(self.model(run, step), self.tok, questions)
        return pd.DataFrame({"question": questions, "gold": [self.forget[i]["answer"] for i in examples],
                             "before (step 0)": before, f"after (step {step})": after}, index=list(examples))

    def draw(self, run: str, step: int, scheme: str = "paper", example: int = 0):
        """G-effect curves by group (e_u, e_r) with the chosen step marked, and the token heat map."""
        import matplotlib.pyplot as plt
        table = self.g_effects(run, scheme)
        total = table[table.component == "total"]
        toks = self.tokens(run, step, example)
        fig = plt.figure(figsize=(13, 6.4))
        grid = fig.add_gridspec(2, 2, height_ratios=[1.6, 1])
        parts = total[total.group != "total"]
        colours = plots.group_palette(parts.group) if scheme == "paper" else {}
        for col, effect in enumerate(["e_u", "e_r"]):
            ax = fig.add_subplot(grid[0, col])
            for group, part in parts.groupby("group", sort=False):
                ax.plot(part.step, part[effect], marker="o", ms=3, label=group, color=colours.get(group))
            ax.axvline(step, color="k", lw=1, ls="--")
            plots.symlog(ax, parts[effect])
            risk = "forget" if effect == "e_u" else "retain"
            ax.set(xlabel="optimizer step", ylabel=f"G-effect on the {risk} risk\n{effect} (symmetric log)",
                   title=f"{run}: " + ("which groups forget? (e_u < 0 forgets)" if effect == "e_u"
                                       else "which groups damage retain? (e_r < 0 damages)"))
            if col == 1:
                ax.legend(fontsize=7, ncol=2 if total.group.nunique() > 8 else 1, loc="upper left", bbox_to_anchor=(1, 1))
        ax = fig.add_subplot(grid[1, :])
        heat = np.vstack([toks.p.to_numpy(), toks.weight.to_numpy()])
        shown = np.where(np.isnan(heat), 0.0, heat / np.maximum(np.nanmax(heat, axis=1, keepdims=True), 1e-12))
        ax.imshow(shown, aspect="auto", cmap="YlOrRd", vmin=0, vmax=1)
        size = 9 if len(toks) <= 25 else 7 if len(toks) <= 40 else 6     # as large as the cells allow
        short = lambda v: "—" if np.isnan(v) else f"{v:.2f}" if v >= 0.01 else f"{v:.0e}".replace("e-0", "e-")
        for (r, c), v in np.ndenumerate(heat):
            ax.text(c, r, short(v), ha="center", va="center", fontsize=size,
                    color="white" if shown[r, c] > 0.75 else "black")
        ax.set_yticks([0, 1], ["p (checkpoint)", "weight"])
        ax.set_xticks(range(len(toks)), toks.token, rotation=60, fontsize=size)
        ax.set_title(f"Which answer tokens are still known at step {step}, and how much does each weigh? "
                     f"(forget example {example}; colour: value / row maximum)", fontsize=9)
        ax.grid(False)
        fig.tight_layout()
        return fig
