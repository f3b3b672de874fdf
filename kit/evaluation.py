"""Evaluation primitives: how well a model knows a set of (question, answer) pairs.

The quantities every later metric builds on (kit.tofu, kit.mia):
- per-pair answer NLL (mean over answer tokens; TOFU's `avg_gt_loss`) and token counts;
- answer-token accuracy (argmax equals the gold token: exact memorisation);
- optionally per-token log-probabilities, argmax hits and the mean / standard deviation of
  log p under the model's own next-token distribution (what min-k%++ needs);
- greedy generations, batched with left padding and the KV cache; an answer that has ended
  leaves its batch.

Scoring projects only answer positions onto the vocabulary. When questions repeat (TOFU scores an
item's answer, paraphrase and perturbed answers), each prompt runs once and its answers continue
from its cached keys/values (and the head all prompts share, such as a chat template's system
prompt, runs once for all of them); otherwise whole sequences go in length-sorted batches.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from kit.data import IGNORE, answer_ids, pad_batch, prompt_ids, resolve_template
from kit.forward import answer_logits, cache_of, cached, fp32, keeps_logits


MIN_SHARED_HEAD = 4   # tokens every prompt starts with, from which their common key/value cache pays off


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _token_columns(logits: torch.Tensor, gold: torch.Tensor, tokens: bool) -> dict[str, torch.Tensor]:
    """Per-token log p(gold), argmax hit and (tokens) mean / std of log p, from logits [N, V]."""
    logp_all = torch.log_softmax(fp32(logits), -1)
    cols = {"logp": logp_all.gather(-1, gold[:, None]).squeeze(-1), "hit": logp_all.argmax(-1) == gold}
    if tokens:
        p = logp_all.exp()
        mu = (p * logp_all).sum(-1)
        cols["mu"], cols["sigma"] = mu, (p * (logp_all - mu[:, None]).square()).sum(-1).sqrt()   # no cancellation
    return cols


def _flat_batches(model, encoded: list[dict], pad: int, batch_size: int, tokens: bool, progress: bool):
    """Whole sequences in length-sorted, right-padded batches: yields (pair indices, columns, counts)."""
    device = _device(model)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="scoring"):
        idx = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in pad_batch([encoded[i] for i in idx], pad).items()}
        targets = batch["labels"][:, 1:]
        answer = targets != IGNORE
        yield idx, _token_columns(answer_logits(model, batch)[1], targets[answer], tokens), answer.sum(1).tolist()


def _common_length(sequences: list) -> int:
    """Length of the longest head that all `sequences` share."""
    first, n = sequences[0], min(map(len, sequences))
    for j in range(n):
        if any(seq[j] != first[j] for seq in sequences[1:]):
            return j
    return n


def _shared_prompt_batches(model, prompts: list[list[int]], answers: list[list[int]], pad: int, batch_size: int,
                           tokens: bool, progress: bool):
    """Pairs that share a prompt: every distinct prompt runs once (prompts of equal length together,
    so no padding), continuing from the cached head all prompts share, and each batch of answers
    continues from its prompt's rows of the key/value cache; yields (pair indices, columns, counts)
    like _flat_batches."""
    device = _device(model)
    owners: dict[tuple, list[int]] = {}
    for i, prompt in enumerate(prompts):
        owners.setdefault(tuple(prompt), []).append(i)
    by_length: dict[int, list[tuple]] = {}
    for prompt in owners:
        by_length.setdefault(len(prompt), []).append(prompt)
    only_last = _only_last(model)
    # a head every prompt shares (a chat template's system prompt) runs once; each prompt keeps at
    # least its last token, whose logits predict the answer's first token
    head, head_cache = _head_cache(model, list(owners))
    bar = tqdm(total=len(prompts), disable=not progress, desc="scoring")
    for length, group in sorted(by_length.items()):
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            ids = torch.tensor(chunk, device=device)
            out = model(input_ids=ids[:, head:], **cached(model, _cache_rows(head_cache, len(chunk))), use_cache=True,
                        **only_last)
            last = out.logits[:, -1]                                     # predicts each answer's first token
            pairs = [(q, i) for q, prompt in enumerate(chunk) for i in owners[prompt]]
            pairs.sort(key=lambda qi: len(answers[qi[1]]))
            for a in range(0, len(pairs), batch_size):
                rows = pairs[a:a + batch_size]
                which = torch.tensor([q for q, _ in rows], device=device)
                ans = pad_batch([{"input_ids": answers[i]} for _, i in rows], pad)
                ans_ids, ans_mask = ans["input_ids"].to(device), ans["attention_mask"].to(device)
                n, width = ans_ids.shape
                logits = last[which][:, None]
                if width > 1:
                    cache = copy.deepcopy(cache_of(out))
                    cache.batch_select_indices(which)
                    mask = torch.cat([torch.ones(n, length, dtype=ans_mask.dtype, device=device), ans_mask[:, :-1]], 1)
                    rest = model(input_ids=ans_ids[:, :-1], attention_mask=mask, **cached(model, cache)).logits
                    logits = torch.cat([logits, rest], 1)                # [n, width, V]: position j predicts token j
                keep = ans_mask.bool()
                bar.update(n)
                yield [i for _, i in rows], _token_columns(logits[keep], ans_ids[keep], tokens), keep.sum(1).tolist()
    bar.close()


@torch.no_grad()
def score_pairs(model, tokenizer, questions: list[str], answers: list[str], *, template: str = "auto",
                batch_size: int = 32, max_length: int = 512, tokens: bool = False, share_prompts: bool | None = None,
                progress: bool = False) -> pd.DataFrame:
    """Teacher-forced scores of many (question, answer) pairs.

    Args:
        questions, answers: equally long lists; pair i is (questions[i], answers[i]).
        tokens: also return per-token arrays (`logp`, `hit`, `mu`, `sigma`; see the module doc).
        share_prompts: run each distinct prompt once and reuse its key/value cache for all of its
            answers (TOFU scores 7 answers per question). None: when questions repeat and every
            pair fits in `max_length`; otherwise whole sequences go in length-sorted batches.
    Returns:
        DataFrame in the input order: `nll` (mean per answer token), `nll_sum`, `n_tokens`,
        `correct` (argmax hits) and with `tokens`, one numpy array per pair in each token column.
    """
    if len(questions) != len(answers):
        raise ValueError(f"score_pairs got {len(questions)} questions but {len(answers)} answers.")
    template = resolve_template(tokenizer, template)
    prompts = [prompt_ids(tokenizer, q, template) for q in questions]
    answer_tok = [answer_ids(tokenizer, a, template) for a in answers]
    return score_tokens(model, prompts, answer_tok, pad=_pad_id(tokenizer), batch_size=batch_size,
                        max_length=max_length, tokens=tokens, share_prompts=share_prompts, progress=progress)


@torch.no_grad()
def score_tokens(model, prompts: list[list[int]], answers: list[list[int]], *, pad: int, batch_size: int = 32,
                 max_length: int = 512, tokens: bool = False, share_prompts: bool | None = None,
                 progress: bool = False) -> pd.DataFrame:
    """score_pairs on token ids: pair i is the continuation `answers[i]` after `prompts[i]`
    (sequences longer than `max_length` are cut at the end); the same columns."""
    fits = all(len(p) + len(a) <= max_length for p, a in zip(prompts, answers))
    if share_prompts is None:
        share_prompts = fits and len(set(map(tuple, prompts))) * 2 <= len(prompts)
    if share_prompts and fits:
        batches = _shared_prompt_batches(model, prompts, answers, pad, batch_size, tokens, progress)
    else:
        encoded = [{"input_ids": (p + a)[:max_length], "labels": ([IGNORE] * len(p) + a)[:max_length]}
                   for p, a in zip(prompts, answers)]
        batches = _flat_batches(model, encoded, pad, batch_size, tokens, progress)
    out: list[dict] = [None] * len(prompts)
    for idx, cols, counts in batches:
        split = {k: torch.split(v.cpu(), counts) for k, v in cols.items()}
        for j, i in enumerate(idx):
            row = {"nll_sum": float(-split["logp"][j].double().sum()), "n_tokens": counts[j],
                   "correct": int(split["hit"][j].sum())}
            if tokens:
                row.update({k: split[k][j].numpy() for k in split})
            out[i] = row
    frame = pd.DataFrame(out, columns=["nll_sum", "n_tokens", "correct"] + (["logp", "hit", "mu", "sigma"] if tokens else []))
    frame.insert(0, "nll", frame["nll_sum"] / frame["n_tokens"].clip(lower=1))
    return frame


def answer_scores(model, tokenizer, records, answer_key: str = "answer", question_key: str = "question",
                  template: str = "auto", batch_size: int = 32, max_length: int = 512,
                  progress: bool = False) -> pd.DataFrame:
    """Per-item answer NLL and token accuracy under teacher forcing.

    Returns:
        DataFrame with one row per item: `nll` (mean per answer token), `nll_sum`,
        `n_tokens`, `token_acc` (fraction of answer tokens the argmax reproduces).
    Used in: notebooks/00_quickstart.ipynb
    """
    records = list(records)
    if not records:
        raise ValueError("answer_scores got no records: the split is empty.")
    out = score_pairs(model, tokenizer, [r[question_key] for r in records], [r[answer_key] for r in records],
                      template=template, batch_size=batch_size, max_length=max_length, progress=progress)
    out["token_acc"] = out["correct"] / out["n_tokens"]
    return out[["nll", "nll_sum", "n_tokens", "token_acc"]]


@torch.no_grad()
def _head_cache(model, prompts: list) -> tuple[int, object]:
    """(head, keys/values of it): the leading tokens all distinct `prompts` share, leaving each at
    least one of its own; (0, None) when that head is shorter than MIN_SHARED_HEAD."""
    distinct = list({tuple(p): None for p in prompts})
    head = min(_common_length(distinct), min(map(len, distinct)) - 1) if len(distinct) > 1 else 0
    if head < MIN_SHARED_HEAD:
        return 0, None
    ids = torch.tensor([list(distinct[0][:head])], device=_device(model))
    return head, cache_of(model(input_ids=ids, use_cache=True, **_only_last(model)))


def _cache_rows(head_cache, n: int):
    """A copy of the head's cache for a batch of n rows (None without a head)."""
    if head_cache is None:
        return None
    cache = copy.deepcopy(head_cache)
    cache.batch_repeat_interleave(n)
    return cache


def _only_last(model) -> dict:
    """Keyword that limits the logits to the last position, for models that take it."""
    return {"logits_to_keep": 1} if keeps_logits(model) else {}


def _greedy(model, prompts: list[list[int]], pad: int, eos: int | None, max_new_tokens: int, head: int,
            head_cache) -> list[list[int]]:
    """Greedy continuations of `prompts` (without their end-of-sequence token).

    The prompts continue from `head_cache` (their shared first `head` tokens) and are left-padded
    after it; positions count real tokens only, so padding changes nothing. A finished answer
    leaves the batch, so the steps that remain cost only what is still being written.
    """
    device, n = _device(model), len(prompts)
    tails = [p[head:] for p in prompts]
    batch = pad_batch([{"input_ids": t} for t in tails], pad, side="left")
    mask = torch.cat([torch.ones(n, head, dtype=torch.long), batch["attention_mask"]], 1).to(device)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    only_last = _only_last(model)
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=mask, position_ids=positions[:, head:],
                **cached(model, _cache_rows(head_cache, n)), use_cache=True, **only_last)
    cache, alive, written = cache_of(out), torch.arange(n), [[] for _ in range(n)]
    position = positions[:, -1:]
    for step in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1)
        going = token != eos if eos is not None else torch.ones_like(token, dtype=torch.bool)
        for row, t, g in zip(alive.tolist(), token.tolist(), going.tolist()):
            if g:
                written[row].append(t)
        if step == max_new_tokens - 1 or not going.any():
            break
        if not going.all():                  # finished answers leave the batch
            keep = going.nonzero()[:, 0]
            cache.batch_select_indices(keep)
            alive, token, mask, position = alive[keep.cpu()], token[keep], mask[keep], position[keep]
        mask, position = torch.cat([mask, mask.new_ones(len(alive), 1)], 1), position + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, **cached(model, cache),
                    use_cache=True, **only_last)
        cache = cache_of(out)
    return written


@torch.no_grad()
def generate_answers(model, tokenizer, questions: list[str], max_new_tokens: int = 48,
                     template: str = "auto", batch_size: int = 32, progress: bool = False) -> list[str]:
    """Greedy answers to `questions`, batched with left padding and the KV cache.

    Prompts are grouped by length (less padding), the head all prompts share (a chat template's
    system prompt) runs once, and an answer that has ended leaves its batch; answers come back in
    the input order, the same as one `model.generate` per question would give.
    Used in: notebooks/00_quickstart.ipynb
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: ask for at least 1 new token.")
    template = resolve_template(tokenizer, template)
    pad = _pad_id(tokenizer)
    prompts = [prompt_ids(tokenizer, q, template) for q in questions]
    if not prompts:
        return []
    head, head_cache = _head_cache(model, prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="generating"):
        idx = order[start:start + batch_size]
        written = _greedy(model, [prompts[i] for i in idx], pad, tokenizer.eos_token_id, max_new_tokens, head,
                          head_cache)
        for i, text in zip(idx, tokenizer.batch_decode(written, skip_special_tokens=True)):
            answers[i] = text.strip()
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


def matched_forgetting(losses: pd.DataFrame, by: str = "objective", levels: int = 4) -> pd.DataFrame:
    """Retain NLL of each run at the same forget NLL: the fair way to compare unlearning runs.

    Args:
        losses: TrackSplits frames of several runs (columns step, split in {"forget", "retain"},
            nll, and `by` naming the run).
        levels: how many forget-NLL levels, evenly spaced in log forget NLL from 1.5 times the
            lowest start to the highest level every run reached.
    Returns:
        DataFrame indexed by forget NLL, one column per run: the retain NLL when that run's forget
        NLL first reached the level (interpolated in log forget NLL between probes). No rows when
        some run never got past 1.5 times the start: there is no matched level to compare at.
    Used in: notebooks/04_ga_and_wga.ipynb
    """
    curve = losses.pivot_table(index=[by, "step"], columns="split", values="nll").reset_index()
    runs = list(dict.fromkeys(curve[by]))
    reached = min(curve[curve[by] == r].forget.max() for r in runs)
    low = curve.forget.min() * 1.5
    grid = np.geomspace(low, reached, levels) if reached > low else np.array([])
    out = {}
    for r in runs:
        c = curve[curve[by] == r].sort_values("step")
        out[r] = [first_reach(np.log(c.forget.to_numpy(float)), c.retain.to_numpy(float), g) for g in np.log(grid)]
    return pd.DataFrame(out, index=pd.Index(grid.round(3), name="forget NLL"))


def first_reach(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """y where the running maximum of x (a run's forgetting, probe by probe) first reaches `level`,
    linear between the probe before and the probe that reaches it; a relapse after that does not
    count. The matched-forgetting readers (`matched_forgetting`, `kit.mcq.matched_utility`) share it."""
    x = np.maximum.accumulate(np.asarray(x, dtype=float))
    i = int(np.argmax(x >= level))
    if i == 0:
        return float(y[0])
    t = (level - x[i - 1]) / (x[i] - x[i - 1])
    return float(y[i - 1] + t * (y[i] - y[i - 1]))
