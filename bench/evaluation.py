"""How much faster is kit.tofu's evaluation than the straightforward per-item loop, and is it exact?

Per model, on the same items (TOFU's four splits plus a holdout split for MIA), three jobs:
  (a) kit     kit.tofu.score_items: the head all prompts share (a chat template's system prompt)
              runs once, each distinct prompt once after it, and all its answers (gold,
              paraphrased, 5 perturbed) continue from its key/value cache in batches, with the
              vocabulary projection on answer positions only; greedy generation batched with
              left padding after the shared head, finished answers leaving the batch;
  (b) loop    what a first implementation does: for each item, one forward pass per answer
              (full logits), then `generate` on that question alone (KV cache on, batch of one).
  (c) tofu    TOFU's own evaluator, batched as it batches (padded batches per answer kind with
              full logits, one batched `generate` per batch of questions): the peer users run.
All feed the same aggregation (kit.tofu.aggregate). The bench reports the time ratio, the
largest relative difference (to max(|value|, 1)) in any per-item loss and summary number, and
how many greedy answers differ. Both run in fp32, where matrix products of different shapes
round differently; so the first N_EXACT items of each split are also scored by the loop on an
fp64 copy of the model, and each method's largest difference from those exact losses is shown.
One JSON line per model ends the output.

Usage: python bench/evaluation.py [tiny,smollm2-135m] [items per split for smollm2-135m]
"""
from __future__ import annotations

import copy
import json
import sys
import time

import numpy as np
import pandas as pd
import torch

MAX_NEW_TOKENS = 48
N_EXACT = 4          # items per split also scored in fp64 (the exact losses both are held to)


def _splits(model_name: str, n_small: int) -> dict:
    from kit import tofu
    if model_name == "smollm2-135m":
        splits = tofu.tofu_splits("forget", source="real")
        return {role: recs[:n_small] for role, recs in splits.items()}
    return tofu.tofu_splits("forget01")


@torch.no_grad()
def _loop_losses(model, tok, splits: dict) -> pd.DataFrame:
    """Per item, one forward pass per answer (full logits, in the model's dtype): TOFU's losses."""
    from kit.data import encode_qa, resolve_template
    template = resolve_template(tok)

    def nll(question, answer):
        ex = encode_qa(tok, question, answer, template)
        logits = model(torch.tensor([ex["input_ids"]])).logits[0, :-1]
        labels = torch.tensor(ex["labels"][1:])
        keep = labels != -100
        return float(-torch.log_softmax(logits[keep], -1).gather(-1, labels[keep, None]).mean())

    rows = []
    for role, records in splits.items():
        for i, rec in enumerate(records):
            row = {"split": role, "index": i, "question": rec["question"], "gold": rec["answer"],
                   "avg_gt_loss": nll(rec["question"], rec["answer"])}
            if role != "holdout":
                true_side = rec["paraphrased_answer"] if role in ("forget", "retain") else rec["answer"]
                row["avg_paraphrased_loss"] = nll(rec["question"], true_side)
                row["average_perturb_loss"] = [nll(rec["question"], a) for a in rec["perturbed_answer"]]
            rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def _loop_items(model, tok, splits: dict) -> pd.DataFrame:
    """The per-item reference: one forward per answer, one generate per question."""
    from kit.data import prompt_ids, resolve_template
    from kit.tofu import _rouge
    template = resolve_template(tok)
    items = _loop_losses(model, tok, splits)
    generated = []
    for role, records in splits.items():
        for rec in records:
            ids = torch.tensor([prompt_ids(tok, rec["question"], template)])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW_TOKENS,
                                 do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id,
                                 eos_token_id=tok.eos_token_id)
            generated.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    items["generated"] = generated
    items["rouge1_recall"], items["rougeL_recall"] = _rouge(list(items["gold"]), list(items["generated"]))
    return items


@torch.no_grad()
def _batched_items(model, tok, splits: dict, batch_size: int = 16, max_new_tokens: int = MAX_NEW_TOKENS) -> pd.DataFrame:
    """TOFU's own evaluator, batched the way it batches: per split, batches of questions; for each
    answer kind (gold, paraphrased, the perturbed ones flattened into one batch) a right-padded
    forward pass with full logits and the per-item mean token NLL; one greedy `generate` per batch
    of left-padded questions. The peer a user would otherwise run."""
    from kit.data import encode_qa, pad_batch, prompt_ids, resolve_template
    from kit.tofu import _rouge
    template = resolve_template(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def losses(questions, answers):
        batch = pad_batch([encode_qa(tok, q, a, template) for q, a in zip(questions, answers)], pad)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        return (nll.sum(1) / (labels != -100).sum(1)).tolist()

    rows = []
    for role, records in splits.items():
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            qs = [r["question"] for r in chunk]
            part = [{"split": role, "index": start + i, "question": q, "gold": r["answer"]}
                    for i, (q, r) in enumerate(zip(qs, chunk))]
            for row, loss in zip(part, losses(qs, [r["answer"] for r in chunk])):
                row["avg_gt_loss"] = loss
            if role != "holdout":
                para = [r["paraphrased_answer"] if role in ("forget", "retain") else r["answer"] for r in chunk]
                for row, loss in zip(part, losses(qs, para)):
                    row["avg_paraphrased_loss"] = loss
                k = len(chunk[0]["perturbed_answer"])
                flat = losses([q for q in qs for _ in range(k)], [a for r in chunk for a in r["perturbed_answer"]])
                for i, row in enumerate(part):
                    row["average_perturb_loss"] = flat[i * k:(i + 1) * k]
            prompts = pad_batch([{"input_ids": prompt_ids(tok, q, template)} for q in qs], pad, side="left")
            out = model.generate(**prompts, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                                 eos_token_id=tok.eos_token_id)
            for row, o in zip(part, out):
                row["generated"] = tok.decode(o[prompts["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            rows += part
    items = pd.DataFrame(rows)
    items["rouge1_recall"], items["rougeL_recall"] = _rouge(list(items["gold"]), list(items["generated"]))
    return items


def _loss_diff(mine: pd.DataFrame, other: pd.DataFrame) -> float:
    """Largest relative difference (to max(|value|, 1)) between two item tables' losses."""
    def rel(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        return float((np.abs(a - b) / np.maximum(np.abs(b), 1.0)).max())
    mine, other = mine.reset_index(drop=True), other.reset_index(drop=True)
    scored, ref = mine[mine.split != "holdout"], other[other.split != "holdout"]
    return max(rel(mine["avg_gt_loss"], other["avg_gt_loss"]),
               rel(scored["avg_paraphrased_loss"], ref["avg_paraphrased_loss"]),
               max(rel(a, b) for a, b in zip(scored["average_perturb_loss"], ref["average_perturb_loss"])))


def bench(model_name: str, n_small: int) -> dict:
    import kit
    from kit import tofu
    model, tok = kit.load_model(model_name)
    splits = _splits(model_name, n_small)
    n_items = sum(len(v) for v in splits.values())
    n_answers = sum(len(v) * (1 if r == "holdout" else 7) for r, v in splits.items())
    tofu.score_items(model, tok, {"retain": splits["retain"][:4]}, max_new_tokens=4)   # warm-up
    start = time.perf_counter()
    fast = tofu.score_items(model, tok, splits, max_new_tokens=MAX_NEW_TOKENS)
    t_kit = time.perf_counter() - start
    start = time.perf_counter()
    slow = _loop_items(model, tok, splits)
    t_loop = time.perf_counter() - start
    start = time.perf_counter()
    peer = _batched_items(model, tok, splits)
    t_peer = time.perf_counter() - start

    # exact losses: the per-item loop on an fp64 copy of the model, for the first items of each split
    few = {role: recs[:N_EXACT] for role, recs in splits.items()}
    exact = _loop_losses(copy.deepcopy(model).double(), tok, few)
    def first(items):
        return pd.concat([items[items.split == role].head(N_EXACT) for role in few], ignore_index=True)
    loss_diff = _loss_diff(fast, slow)
    kit_exact, loop_exact = _loss_diff(first(fast), exact), _loss_diff(first(slow), exact)
    peer_diff, peer_exact = _loss_diff(fast, peer), _loss_diff(first(peer), exact)
    scored, ref = fast[fast.split != "holdout"], slow[slow.split != "holdout"]
    a, b = tofu.aggregate(scored), tofu.aggregate(ref)
    summary_diff = max(abs(a[k] - b[k]) / max(abs(b[k]), 1.0) for k in a)
    differing = int((fast["generated"] != slow["generated"]).sum())
    print(f"\n{model_name}: {n_items} items, {n_answers} scored answers, greedy answers of up to {MAX_NEW_TOKENS} tokens")
    print(f"  {'job':<6}{'seconds':>10}{'x kit':>8}")
    print(f"  {'kit':<6}{t_kit:>10.2f}{1:>8.2f}")
    print(f"  {'loop':<6}{t_loop:>10.2f}{t_loop / t_kit:>8.2f}")
    print(f"  {'tofu':<6}{t_peer:>10.2f}{t_peer / t_kit:>8.2f}   (TOFU's evaluator, batched)")
    print(f"  largest relative difference: per-item loss {loss_diff:.2e}, summary number {summary_diff:.2e}; "
          f"{differing} of {n_items} greedy answers differ")
    print(f"  batched TOFU evaluator against kit: per-item loss {peer_diff:.2e}; "
          f"{int((fast['generated'] != peer['generated']).sum())} of {n_items} greedy answers differ")
    print(f"  against fp64 losses ({len(exact)} items): kit {kit_exact:.2e}, loop {loop_exact:.2e}, tofu {peer_exact:.2e}")
    return {"model": model_name, "items": n_items, "kit_seconds": round(t_kit, 3), "loop_seconds": round(t_loop, 3),
            "loop_over_kit": round(t_loop / t_kit, 2),
            "tofu_seconds": round(t_peer, 3), "tofu_over_kit": round(t_peer / t_kit, 2), "tofu_vs_kit": peer_diff,
            "tofu_vs_fp64": peer_exact, "max_loss_rel_diff": float(loss_diff),
            "kit_vs_fp64": kit_exact, "loop_vs_fp64": loop_exact,
            "max_summary_rel_diff": float(summary_diff), "differing_generations": differing}


def main(models: list[str], n_small: int) -> None:
    lines = [bench(m, n_small) for m in models]
    print()
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else ["tiny", "smollm2-135m"],
         int(sys.argv[2]) if len(sys.argv) > 2 else 16)
