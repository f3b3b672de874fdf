"""Fine-tuning: the one code path that builds tiny's target and retain models, and that
fine-tunes any Hugging Face causal LM on TOFU or the built-in benchmark.

It is `transformers.Trainer` with the kit's tokenisation (loss on answer tokens only), so
`accelerate launch` gives DDP / FSDP / DeepSpeed without changes. TOFU's recipe for Phi-1.5
is 5 epochs, lr 2e-5, batch 32, weight decay 0.01, linear warm-up for the first epoch.
"""
from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from kit.data import Collator, QADataset


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyperparameters of `finetune` (defaults: TOFU's Phi-1.5 recipe)."""
    epochs: float = 5.0
    lr: float = 2e-5
    batch_size: int = 32
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    scheduler: str = "linear"      # "linear" or "cosine" decay after warm-up
    max_length: int = 512
    template: str = "auto"         # "auto", "plain" or "chat" (kit.data.resolve_template)
    sampling: str = "random"       # or "length_chunks" (less padding; see ChunkSortedSampler)
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def training_args(output_dir: str, config: FinetuneConfig, n_examples: int, progress: bool, model=None,
                  **overrides) -> TrainingArguments:
    """TrainingArguments shared by fine-tuning and unlearning (no saving, no reporting). Training
    stays on the device the model is on: a model the user put on the CPU is not moved to a GPU
    (its frozen reference copy and the kit's probes would be left behind)."""
    world = int(os.environ.get("WORLD_SIZE", 1))      # processes under accelerate / torchrun (DDP)
    per_epoch = math.ceil(n_examples / (config.batch_size * config.grad_accum * world))
    total = overrides.get("max_steps") or max(1, math.ceil(per_epoch * config.epochs))
    kwargs = dict(
        output_dir=output_dir, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.lr,
        weight_decay=config.weight_decay, num_train_epochs=config.epochs,
        lr_scheduler_type=config.scheduler,
        warmup_steps=min(total - 1, round(per_epoch * config.warmup_epochs)),
        max_grad_norm=1.0, seed=config.seed, data_seed=config.seed,
        save_strategy="no", report_to=[], logging_strategy="no",
        disable_tqdm=not progress, remove_unused_columns=False,
        dataloader_num_workers=0, use_cpu=not torch.cuda.is_available() or (
            model is not None and next(model.parameters()).device.type == "cpu"),
        train_sampling_strategy="random",
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


class ChunkSortedSampler(torch.utils.data.Sampler):
    """Shuffles, then sorts each chunk of `chunk_batches` batches by length and shuffles the batches.

    Batches stay mixed (a chunk is small, so a batch is not one question template) while
    padding shrinks: on the tiny benchmark 4-batch chunks raise the useful-token share of a
    batch from 66% to 82%. Deterministic for a seed; each pass draws a new order.
    """

    def __init__(self, lengths: list[int], batch_size: int, chunk_batches: int = 4, seed: int = 0):
        self.lengths, self.batch_size, self.chunk = lengths, batch_size, batch_size * chunk_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches = []
        for start in range(0, len(order), self.chunk):
            chunk = sorted(order[start:start + self.chunk], key=self.lengths.__getitem__)
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield from batches[b]


class _Trainer(Trainer):
    """Trainer with the kit's sampling choice (`FinetuneConfig.sampling`)."""

    def __init__(self, *args, sampling: str = "random", **kwargs):
        super().__init__(*args, **kwargs)
        self.sampling = sampling

    def _get_train_sampler(self, train_dataset=None):
        data = train_dataset if train_dataset is not None else self.train_dataset
        if self.sampling != "length_chunks":
            return super()._get_train_sampler(train_dataset)
        lengths = [len(data[i]["input_ids"]) for i in range(len(data))]
        return ChunkSortedSampler(lengths, self.args.per_device_train_batch_size, seed=self.args.seed)


@contextmanager
def keeps_use_cache(model):
    """Trainer turns `config.use_cache` off for training; the caller's model gets its own value back."""
    use_cache = getattr(model.config, "use_cache", None)
    try:
        yield
    finally:
        if use_cache is not None:
            model.config.use_cache = use_cache


def finetune(model, tokenizer, records, config: FinetuneConfig = FinetuneConfig(),
             progress: bool = True, output_dir: str | None = None, max_steps: int | None = None):
    """Fine-tune `model` in place on QA `records` (a Dataset or list of dicts); returns it.

    Args:
        model, tokenizer: any causal LM and its tokenizer (kit.models.load_model).
        records: items with `question` and `answer` (kit.data.load_split).
        config: FinetuneConfig; loss is on answer tokens only.
        progress: show a tqdm progress bar.
        output_dir: Trainer's scratch directory (a temporary one by default).
        max_steps: exactly this many optimizer steps, cycling over the records (`config.epochs`
            is then ignored); the warm-up still lasts `config.warmup_epochs` of one pass.
    Returns:
        the trained model (in eval mode).
    """
    data = QADataset(records, tokenizer, config.template, config.max_length)
    with keeps_use_cache(model), tempfile.TemporaryDirectory() as scratch:
        extra = {"max_steps": max_steps} if max_steps else {}
        args = training_args(output_dir or scratch, config, len(data), progress, model, **extra)
        trainer = _Trainer(model=model, args=args, train_dataset=data,
                           data_collator=Collator(tokenizer), sampling=config.sampling)
        trainer.remove_callback(PrinterCallback)   # no stray metric dicts on stdout
        trainer.train()
    return model.eval()
