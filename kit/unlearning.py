"""The unlearning engine: any objective of kit.objectives, run by `transformers.Trainer`.

A `Trainer` subclass takes its loss from kit.objectives, so `accelerate launch` gives DDP / FSDP /
DeepSpeed unchanged. Defaults follow the G-effect paper: AdamW, effective batch 16, max grad
norm 1, linear warm-up over the first epoch, 5 epochs, lr 2e-5 (Phi-1.5-like) or 1e-5
(Llama-like); tiny, trained from scratch at a high rate, needs a larger one (DEFAULT_LR).

A run directory holds `checkpoint-<step>/` folders (safetensors; step 0 is the original model)
and `manifest.json` (objective, hyperparameters, seed, data, model id, the saved steps), written
atomically, so the G-effect can be read back from checkpoints and an interrupted run keeps
everything it finished. A non-finite loss stops the run with an error naming the step.
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from kit import objectives, rundir
from kit.data import Collator, ForgetRetainDataset
from kit.evaluation import answer_scores
from kit.rundir import read_manifest  # noqa: F401 (where callers have found it)
from kit.train import FinetuneConfig, keeps_use_cache, training_args

DEFAULT_LR = {"tiny": 1e-3, "smollm2-135m": 1e-5, "phi-1.5": 2e-5, "llama-2-7b": 1e-5}
ALIASES = {"gd": ("ga", "nll"), "graddiff": ("ga", "nll")}   # name -> (objective, regulariser)
# whole recipes where a paper fixes more than the loss: WMDP's RMU (150 batches of 4, one pass)
RECIPES = {("rmu_wmdp", "zephyr-7b"): {"lr": 5e-5, "batch_size": 4, "max_length": 512, "epochs": 1.0,
                                       "warmup_epochs": 0.0}}


class UnlearnError(RuntimeError):
    """The run cannot go on (e.g. a non-finite loss); the message names the step and what was kept."""


@dataclass(frozen=True)
class UnlearnConfig:
    """What to unlearn with and how (defaults: the G-effect paper's recipe)."""
    objective: str = "ga"
    hparams: dict = field(default_factory=dict)   # objective hyperparameters (paper_hparams)
    regularizer: str = "none"                       # "none", "nll" (GD-style) or "kl"
    reg_weight: float = 1.0
    epochs: float = 5.0
    lr: float = 2e-5
    batch_size: int = 16
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    save_every: int = 0                             # checkpoint every k optimizer steps (0: start and end only)
    max_length: int = 512
    template: str = "auto"
    seed: int = 0
    lora_rank: int = 0                              # > 0: train LoRA adapters of this rank (alpha 2r) instead, merged at the end

    @classmethod
    def paper(cls, name: str, split: str = "forget10", model: str = "phi-1.5", **overrides) -> "UnlearnConfig":
        """The papers' setting of `name` for a forget split and model ("gd" = GA + NLL regulariser;
        "npo+kl" = NPO with the KL regulariser, "npo+nll" with the NLL one).

        Example: `UnlearnConfig.paper("wtnpo", "forget01", "tiny", epochs=2)`.
        Used in: notebooks/02_objectives.ipynb
        """
        stem, plus, reg = name.lower().partition("+")
        objective, regularizer = ALIASES.get(stem, (stem, "none"))
        if plus:
            if reg not in objectives.REGULARIZERS or reg == "none":
                raise objectives.ObjectiveError(f"Unknown regularizer {reg!r} in {name!r}: write "
                                                f"'{stem}+nll' or '{stem}+kl'.")
            regularizer = reg
        given = overrides.pop("hparams", {})
        try:
            paper = objectives.paper_hparams(objective, split, model)
        except objectives.ObjectiveError:
            if not objectives.paper_keys(objective) <= set(given):   # none published here, and none given in full
                raise
            paper = {}
        hparams = {**paper, **given}
        base = {"objective": objective, "regularizer": regularizer, "hparams": hparams,
                "lr": DEFAULT_LR.get(model, 2e-5), **RECIPES.get((objective, model), {})}
        return cls(**{**base, **overrides})

    def train_config(self) -> FinetuneConfig:
        return FinetuneConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                              grad_accum=self.grad_accum, weight_decay=self.weight_decay,
                              warmup_epochs=self.warmup_epochs, scheduler="linear",
                              max_length=self.max_length, template=self.template, seed=self.seed)


class _Recorder(TrainerCallback):
    """Saves checkpoints every `save_every` steps (and at the end) and collects the loss history."""

    def __init__(self, run_dir: Path | None, manifest: dict, save_every: int):
        self.run_dir, self.manifest, self.save_every = run_dir, manifest, save_every
        self.history: list[dict] = []
        self.last: dict = {}

    def save(self, model, step: int) -> None:
        if self.run_dir is None or step in self.manifest["steps"]:
            return
        if hasattr(model, "merge_and_unload"):     # LoRA: a merged copy, which loads back as a plain model
            model = copy.deepcopy(model).merge_and_unload()
        rundir.save_checkpoint(model, self.run_dir, step)
        self.manifest["steps"].append(step)
        rundir.write_manifest(self.run_dir, self.manifest)

    def on_step_end(self, args, state, control, model=None, **kw):
        self.history.append({"step": state.global_step, **self.last})
        if self.save_every and state.global_step % self.save_every == 0:
            self.save(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kw):
        self.save(model, state.global_step)
        self.manifest["finished"] = True
        if self.run_dir is not None:
            rundir.write_manifest(self.run_dir, self.manifest)


class UnlearnTrainer(Trainer):
    """Trainer whose loss is `kit.objectives.compute(...)` on paired forget/retain/idk batches."""

    def __init__(self, *args, config: UnlearnConfig, ref=None, recorder: _Recorder, **kwargs):
        super().__init__(*args, **kwargs)
        self.config, self.ref, self.recorder = config, ref, recorder

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        c = self.config
        step = self.state.global_step + 1
        try:
            out = objectives.compute(c.objective, model, inputs, ref=self.ref, regularizer=c.regularizer,
                                     reg_weight=c.reg_weight, **c.hparams)
        except objectives.NonFiniteLoss as err:
            saved = self.recorder.manifest["steps"]
            kept = f"checkpoint-{saved[-1]}" if saved and self.recorder.run_dir else "nothing (no run_dir)"
            raise UnlearnError(f"Unlearning stopped at optimizer step {step}: {err} "
                               f"Last good checkpoint kept: {kept}.") from None
        self.recorder.last = dict(out.losses)
        return (out.loss, out) if return_outputs else out.loss


class TrackSplits(TrainerCallback):
    """Scores named record sets every `every` optimizer steps (and before the first one).

    `TrackSplits(tokenizer, {"forget": forget, "retain": retain[:40]})` as a callback of
    `unlearn`; `.frame()` is a tidy DataFrame (step, split, nll, token_acc).
    Used in: notebooks/02_objectives.ipynb
    """

    def __init__(self, tokenizer, splits: dict, every: int = 1, template: str = "auto"):
        self.tokenizer, self.splits, self.every, self.template = tokenizer, splits, every, template
        self.rows: list[dict] = []

    def score(self, model, step: int) -> None:
        was_training = model.training
        model.eval()
        for name, records in self.splits.items():
            s = answer_scores(model, self.tokenizer, records, template=self.template)
            self.rows.append({"step": step, "split": name, "nll": s["nll"].mean(), "token_acc": s["token_acc"].mean()})
        model.train(was_training)

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.score(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.score(model, state.global_step)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


class TrackChoices(TrackSplits):
    """Multiple-choice accuracy of named item sets every `every` optimizer steps (and before the first).

    `TrackChoices(tokenizer, {"forget": forget_mc, "utility": utility_mc}, probes=10, formulation="cloze")`
    as a callback of `unlearn`; `.frame()` is a tidy DataFrame (step, split, accuracy), the input of
    `kit.mcq.matched_utility`. `probes`, where given, sets `every` from the run's length (about that
    many evaluations after the start; the last step is always scored). Scoring is kit.mcq.score's.
    Used in: notebooks/11_multiple_choice.ipynb
    """

    def __init__(self, tokenizer, splits: dict, every: int = 1, formulation: str = "letters",
                 probes: int | None = None):
        super().__init__(tokenizer, splits, every)
        self.formulation, self.probes = formulation, probes

    def on_train_begin(self, args, state, control, model=None, **kw):
        if self.probes:
            self.every = max(1, round(state.max_steps / self.probes))
        super().on_train_begin(args, state, control, model=model, **kw)

    def score(self, model, step: int) -> None:
        from kit import mcq
        for name, items in self.splits.items():
            table = mcq.score(model, self.tokenizer, items, formulation=self.formulation)
            self.rows.append({"step": step, "split": name, "accuracy": float(table.correct.mean())})


class MaskedUpdates(TrainerCallback):
    """Masked unlearning (kit.attribution): only the selected weights change.

    Gradients are multiplied by the mask as they are produced, so clipping and the optimizer see
    the masked gradient; after every optimizer step the unselected entries are put back bit for
    bit (AdamW's decoupled weight decay would otherwise shrink them). Parameters the mask does not
    cover are frozen for the run. `close()` removes the hooks and unfreezes.
    """

    def __init__(self, model, mask):
        params = dict(model.named_parameters())
        unknown = [n for n in mask.masks if n not in params]
        if unknown:
            raise UnlearnError(f"The mask names parameter {unknown[0]!r}, which this model does not have; "
                               "build the mask on the model you unlearn.")
        for n, m in mask.masks.items():   # check everything before touching the model
            if m.shape != params[n].shape:
                raise UnlearnError(f"Mask for {n!r} has shape {tuple(m.shape)}, the parameter {tuple(params[n].shape)}.")
        self.frozen = [p for n, p in params.items() if n not in mask.masks and p.requires_grad]
        for p in self.frozen:
            p.requires_grad_(False)
        self.kept, self.handles = [], []
        for n, m in mask.masks.items():
            p, keep = params[n], m.to(params[n].device)
            self.handles.append(p.register_hook(lambda g, keep=keep: g * keep))
            self.kept.append((p, ~keep, p.detach()[~keep].clone()))

    def on_optimizer_step(self, args, state, control, **kw):
        with torch.no_grad():
            for p, off, values in self.kept:
                p.masked_scatter_(off, values)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        for p in self.frozen:
            p.requires_grad_(True)


@dataclass
class Run:
    """What `unlearn` returns: the model (unlearned in place), its run directory and loss history."""
    model: object
    run_dir: Path | None
    history: pd.DataFrame
    manifest: dict


def unlearn(model, tokenizer, forget, retain=None, config: UnlearnConfig = UnlearnConfig(),
            ref=None, run_dir: str | Path | None = None, callbacks=(), progress: bool = False,
            model_id: str = "", data_id: str = "", mask=None) -> Run:
    """Unlearn `forget` from `model` in place with `config.objective`.

    Args:
        model, tokenizer: the model to unlearn (kit.models.load_model).
        forget, retain: records (kit.data.load_split); retain is needed for GD/KL regularisers.
        config: UnlearnConfig (objective, hyperparameters, regulariser, optimiser settings).
        ref: frozen original model; created here only when the objective or regulariser needs one.
        run_dir: where checkpoints and manifest.json go (None: nothing is saved).
        callbacks: extra `TrainerCallback`s observing every step (e.g. live G-effect probes).
        progress: show a progress bar.
        model_id, data_id: recorded in the manifest (e.g. "tiny", "forget01").
        mask: a kit.attribution.Mask: update only the selected weights (WAGLE and baselines).
            `config.lora_rank > 0` trains low-rank adapters on every attention and MLP projection
            instead (initialised with `config.seed`; peft) and merges them into `model` at the end;
            callbacks then see the peft-wrapped model (a live G-effect probe measures the adapters'
            parameters only), and each checkpoint is a merged copy (one model's extra memory).
    Returns:
        Run(model, run_dir, history: DataFrame of per-step losses, manifest)
    """
    objectives.get(config.objective)   # unknown names fail before any work
    if isinstance(config.lora_rank, bool) or not isinstance(config.lora_rank, int) or config.lora_rank < 0:
        raise UnlearnError(f"lora_rank={config.lora_rank!r}: the LoRA rank is a whole number >= 1 (0: no LoRA, every weight trains).")
    if config.lora_rank and mask is not None:
        raise UnlearnError(f"lora_rank={config.lora_rank} with mask={mask.method!r}: LoRA trains its own adapters, so pass "
                           "either a mask or lora_rank, not both.")
    if objectives.needs_reference(config.objective, config.regularizer) and ref is None:
        ref = objectives.make_reference(model)
    needs_retain = objectives.needs_retain(config.objective, config.regularizer)
    if needs_retain and not retain:
        raise UnlearnError(f"Objective {config.objective!r} with regularizer {config.regularizer!r} needs retain "
                           "records: unlearn(model, tokenizer, forget, retain, config=...).")
    data = ForgetRetainDataset(forget, retain if needs_retain else None, tokenizer, config.template,
                               config.max_length, with_idk=objectives.needs_idk(config.objective),
                               seed=config.seed)
    run_dir = Path(run_dir) if run_dir is not None else None
    manifest = {"objective": config.objective, "config": asdict(config), "model": model_id,
                "data": data_id, "n_forget": len(data), "steps": [], "finished": False,
                "mask": None if mask is None else {"method": mask.method, "ratio": mask.ratio, "scope": mask.scope,
                                                   "selected": mask.n_selected, "eligible": mask.n_eligible}}
    if run_dir is not None:
        rundir.write_manifest(run_dir, manifest)
    recorder = _Recorder(run_dir, manifest, config.save_every)
    recorder.save(model, 0)
    masked = MaskedUpdates(model, mask) if mask is not None else None
    trained, trainable = model, {n for n, p in model.named_parameters() if p.requires_grad}
    if config.lora_rank:
        from kit.attribution import lora
        torch.manual_seed(config.seed)              # the adapters' initialisation
        trained = lora(model, rank=config.lora_rank, alpha=2 * config.lora_rank)
    try:
        with keeps_use_cache(model), tempfile.TemporaryDirectory() as scratch:
            args = training_args(scratch, config.train_config(), len(data), progress, model)
            extra = [masked] if masked is not None else []
            trainer = UnlearnTrainer(model=trained, args=args, train_dataset=data, data_collator=Collator(tokenizer),
                                     config=config, ref=ref, recorder=recorder, callbacks=[*extra, recorder, *callbacks])
            trainer.remove_callback(PrinterCallback)
            trainer.train()
    finally:
        if masked is not None:
            masked.close()
        if trained is not model:                    # the adapters merged into model's own weights; peft froze them
            trained.merge_and_unload()
            if hasattr(model, "peft_config"):       # older peft leaves it behind, and the next LoRA run would reuse it
                del model.peft_config
            for n, p in model.named_parameters():   # what the caller had trainable, and nothing else
                p.requires_grad_(n in trainable)
    return Run(model.eval(), run_dir, pd.DataFrame(recorder.history), manifest)


