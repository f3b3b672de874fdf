"""Evaluation: how well a model knows a split.

The basic quantities every later metric builds on, computed in batches:
- per-item answer NLL (mean over answer tokens; TOFU's `avg_gt_loss`) and token counts;
- answer-token accuracy (argmax equals the gold token: exact memorisation);
- greedy generations, batched with left padding and the KV cache.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from kit.objectives import fp32
from kit.data import IGNORE, QADataset, pad_batch, prompt_ids, resolve_template


def _device(model) -> torch.device:
    return next(model.parameters()).device


def token_stats(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sequence answer statistics from logits [B, T, V] and labels [B, T] (-100 = ignored).

    Returns:
        `nll_sum` [B], `n_tokens` [B], `correct` [B] (argmax hits), all fp32.
    """
    logits, labels = fp32(logits[:, :-1]), labels[:, 1:]
    mask = labels != IGNORE
    safe = labels.clamp(min=0)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), safe, reduction="none")
    hits = (logits.argmax(-1) == safe) & mask
    return {"nll_sum": (nll * mask).sum(1), "n_tokens": mask.sum(1).float(), "correct": hits.sum(1).float()}


@torch.no_grad()
def answer_scores(model, tokenizer, records, answer_key: str = "answer", question_key: str = "question",
                  template: str = "auto", batch_size: int = 32, max_length: int = 512,
                  progress: bool = False) -> pd.DataFrame:
    """Per-item answer NLL and token accuracy under teacher forcing.

    Returns:
        DataFrame with one row per item: `nll` (mean per answer token), `nll_sum`,
        `n_tokens`, `token_acc` (fraction of answer tokens the argmax reproduces).
    Used in: notebooks/00_quickstart.ipynb
    """
    data = QADataset(records, tokenizer, template, max_length, question_key, answer_key)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows, device = [], _device(model)
    for start in tqdm(range(0, len(data), batch_size), disable=not progress, desc="scoring"):
        batch = pad_batch([data[i] for i in range(start, min(start + batch_size, len(data)))], pad)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        stats = token_stats(logits, batch["labels"])
        rows.append(pd.DataFrame({k: v.cpu().numpy() for k, v in stats.items()}))
    out = pd.concat(rows, ignore_index=True)
    out["nll"] = out["nll_sum"] / out["n_tokens"]
    out["token_acc"] = out["correct"] / out["n_tokens"]
    return out[["nll", "nll_sum", "n_tokens", "token_acc"]]


@torch.no_grad()
def generate_answers(model, tokenizer, questions: list[str], max_new_tokens: int = 48,
                     template: str = "auto", batch_size: int = 32, progress: bool = False) -> list[str]:
    """Greedy answers to `questions`, batched with left padding and the KV cache.

    Used in: notebooks/00_quickstart.ipynb
    """
    template = resolve_template(tokenizer, template)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device, answers = _device(model), []
    for start in tqdm(range(0, len(questions), batch_size), disable=not progress, desc="generating"):
        chunk = questions[start:start + batch_size]
        batch = pad_batch([{"input_ids": prompt_ids(tokenizer, q, template)} for q in chunk], pad, side="left")
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers


def knowledge_table(model, tokenizer, splits: dict, generate: bool = True, max_items: int | None = None,
                    batch_size: int = 32) -> pd.DataFrame:
    """How well a model knows each split: one row per split.

    Args:
        splits: {name: records}.
        generate: also run greedy generation and report exact match (slower).
        max_items: evaluate at most this many items per split (the first ones).
    Returns:
        DataFrame with `split`, `n`, `nll` (mean per-token answer NLL), `token_acc`,
        and with `generate`, `exact_match` (greedy answer equals the gold answer).
    """
    rows = []
    for name, records in splits.items():
        records = list(records)[:max_items] if max_items else list(records)
        scores = answer_scores(model, tokenizer, records, batch_size=batch_size)
        row = {"split": name, "n": len(records), "nll": scores["nll"].mean(),
               "token_acc": scores["token_acc"].mean()}
        if generate:
            gen = generate_answers(model, tokenizer, [r["question"] for r in records], batch_size=batch_size)
            row["exact_match"] = sum(g == r["answer"] for g, r in zip(gen, records)) / len(records)
        rows.append(row)
    return pd.DataFrame(rows)


def keep_known(model, tokenizer, records, max_new_tokens: int = 16, batch_size: int = 16,
               cache_key: str | None = None) -> list[dict]:
    """The items a model already answers correctly: its greedy answer contains the item's `fact`.

    The real-knowledge scenario (source "real") keeps only these before unlearning, so that
    forgetting is measured on knowledge the model actually had.

    Args:
        cache_key: when given (e.g. the model name), the verdicts are cached in the kit cache,
            keyed by it and the questions, so the generation runs once per model.
    """
    import hashlib
    import json

    from kit.paths import cache_dir
    records = list(records)
    questions = [r["question"] for r in records]
    path = None
    if cache_key:
        digest = hashlib.sha256(json.dumps([cache_key, questions, max_new_tokens]).encode()).hexdigest()[:12]
        path = cache_dir() / "known" / f"{cache_key.replace('/', '--')}-{digest}.json"
        if path.exists():
            return [r for r, ok in zip(records, json.loads(path.read_text())) if ok]
    answers = generate_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens, batch_size=batch_size)
    verdicts = [r["fact"].lower() in a.lower() for r, a in zip(records, answers)]
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(verdicts))
        tmp.replace(path)
    return [r for r, ok in zip(records, verdicts) if ok]


def matched_forgetting(losses: pd.DataFrame, by: str = "objective", levels: int = 4) -> pd.DataFrame:
    """Retain NLL of each run at the same forget NLL: the fair way to compare unlearning runs.

    Args:
        losses: TrackSplits frames of several runs (columns step, split in {"forget", "retain"},
            nll, and `by` naming the run).
        levels: how many forget-NLL levels, evenly spaced from just above the start to the
            highest level every run reached.
    Returns:
        DataFrame indexed by forget NLL, one column per run: the retain NLL when that run's forget
        NLL first reached the level (linear interpolation between probes).
    Used in: notebooks/04_ga_and_wga.ipynb
    """
    curve = losses.pivot_table(index=[by, "step"], columns="split", values="nll").reset_index()
    runs = list(dict.fromkeys(curve[by]))
    reached = min(curve[curve[by] == r].forget.max() for r in runs)
    grid = np.linspace(curve.forget.min() * 1.5, reached, levels)
    out = {}
    for r in runs:
        c = curve[curve[by] == r].sort_values("step")
        out[r] = np.interp(grid, np.maximum.accumulate(c.forget.values), c.retain.values)
    return pd.DataFrame(out, index=pd.Index(grid.round(3), name="forget NLL"))
