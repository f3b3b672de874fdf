"""Multiple-choice evaluation: WMDP forget accuracy and MMLU utility, scored as lm-evaluation-harness
scores them (Li et al. 2024, WMDP; Hendrycks et al. 2021, MMLU; Jia et al. 2024, WAGLE, report both).

An item is {"question": str, "choices": [str, ...], "answer": index of the right choice}. Zero-shot,
an item becomes one context and one continuation per choice; the model's pick is the choice whose
continuation has the highest log-likelihood log p(continuation | context), summed over its tokens.

- `letters` (lm-eval's `wmdp_*` and `mmlu_*` tasks; what the WMDP and WAGLE papers report for 7B
  models): context = description + "<question>\\nA. <choice 0>\\nB. <choice 1>...\\nAnswer:", the
  continuations " A", " B", ...; the description is "The following are multiple choice questions
  (with answers) about <subject>.\\n\\n".
- `cloze` (lm-eval's `mmlu_*_continuation`): context = description + "Question: <question>\\nAnswer:",
  the continuations " <choice text>"; the description reads "The following are questions (with
  answers) about <subject>.\\n\\n". Small models that cannot map a letter to its choice still
  rank the choices' texts. Besides the raw pick (`acc`), the length-normalised one (`acc_norm`):
  the highest log-likelihood per character of the choice's text.

Tokenisation follows lm-eval: trailing spaces of the context move to the continuation, the
continuation's tokens are those of tokenize(context + continuation) after the tokens of
tokenize(context) (the tokenizer's own special tokens included), and a sequence longer than the
model's context keeps its end. The continuations of an item share its context's key/value cache
(kit.evaluation.score_tokens), so an item costs one context pass and a few short ones.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

FORMULATIONS = ("letters", "cloze")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
WMDP_SUBJECTS = {"wmdp-bio": "biology", "wmdp-cyber": "cybersecurity", "wmdp-chem": "chemistry"}
SUFFIXES = (".jsonl", ".json", ".parquet")


class MCQError(ValueError):
    """Multiple-choice data or settings the kit cannot use; the message names the file, row and key."""


@dataclass
class ChoiceSet:
    """Items of one multiple-choice set and where they came from."""
    name: str                       # e.g. "wmdp-bio", "mmlu/anatomy", a file's stem
    items: list[dict]
    origin: str                     # hub id with revision, or the file read
    subject: str = ""               # what the description names ("biology", "anatomy")
    revision: str = ""              # the hub's dataset commit, where known
    counts: dict = field(default_factory=dict)   # items per subject

    def description(self, formulation: str = "letters") -> str:
        return describe(self.subject, formulation)

    def __len__(self) -> int:
        return len(self.items)


def describe(subject: str, formulation: str = "letters") -> str:
    """lm-eval's zero-shot description of a subject ("" for none)."""
    _check_formulation(formulation)
    if not subject:
        return ""
    kind = "multiple choice questions" if formulation == "letters" else "questions"
    return f"The following are {kind} (with answers) about {subject.replace('_', ' ')}.\n\n"


def _check_formulation(formulation: str) -> None:
    if formulation not in FORMULATIONS:
        raise MCQError(f"Unknown formulation {formulation!r}: use 'letters' (lettered choices, as the WMDP "
                       "and WAGLE papers report) or 'cloze' (each choice's text, for small models).")


def validate(items: list, origin: str) -> list[dict]:
    """Check every row; return the items with `answer` as an int."""
    if not items:
        raise MCQError(f"{origin} has no items.")
    out = []
    for row, item in enumerate(items):
        where = f"{origin}: row {row}"
        if not isinstance(item, dict):
            raise MCQError(f"{where} is {type(item).__name__}, expected an object with question, choices, answer.")
        for key in ("question", "choices", "answer"):
            if key not in item:
                raise MCQError(f"{where} has no {key!r} key (it has {sorted(item)}).")
        if not isinstance(item["question"], str) or not item["question"].strip():
            raise MCQError(f"{where} key 'question' must be a non-empty string.")
        choices = item["choices"]
        if isinstance(choices, np.ndarray):
            choices = choices.tolist()
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise MCQError(f"{where} key 'choices' must be a list of at least 2 strings (got {choices!r}).")
        if len(choices) > len(LETTERS):
            raise MCQError(f"{where} key 'choices' has {len(choices)} choices; at most {len(LETTERS)} are lettered.")
        answer = item["answer"]
        if isinstance(answer, str) and answer.strip().isdigit():
            answer = int(answer)
        if isinstance(answer, bool) or not isinstance(answer, (int, np.integer)) or not 0 <= answer < len(choices):
            raise MCQError(f"{where} key 'answer' must be the index of the right choice, 0 to {len(choices) - 1} "
                           f"(got {answer!r}).")
        out.append({**item, "choices": list(choices), "answer": int(answer)})
    return out


def _read(path: Path) -> list:
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_dict("records")
    from kit.data import read_records
    return read_records(path)            # a JSON list or JSON lines; a bad line is named


def _local(path: Path, subset: str | None) -> tuple[Path, str]:
    if path.is_file():
        return path, subset or path.stem
    found = [path / f"{subset}{s}" for s in SUFFIXES] if subset else sorted(
        f for f in path.iterdir() if f.suffix in SUFFIXES)
    found = [f for f in found if f.exists()]
    if not found:
        have = sorted(f.name for f in path.iterdir() if f.suffix in SUFFIXES)
        raise MCQError(f"No {subset or 'multiple-choice'} file ({', '.join(SUFFIXES)}) in {path}; "
                       f"it has {have or 'none'}. Pass subset= one of {[f.rsplit('.', 1)[0] for f in have]}.")
    if len(found) > 1 and not subset:
        raise MCQError(f"{path} has several sets ({', '.join(f.name for f in found)}); pass subset= to pick one.")
    return found[0], subset or found[0].stem


def _hub(source: str, subset: str, split: str, revision: str | None) -> tuple[list, str]:
    try:
        import datasets
        data = datasets.load_dataset(source, subset, split=split, revision=revision)
    except Exception as err:  # noqa: BLE001 - offline, gated and unknown sets all end here
        raise MCQError(f"Could not load {source} ({subset}, split {split}) from the hub: {type(err).__name__}: "
                       f"{err}. Gated sets need `huggingface-cli login` and accepted terms; offline, save the "
                       f"items once as <folder>/{subset}.jsonl (question, choices, answer) and pass the folder."
                       ) from None
    sha = revision or ""
    try:
        import huggingface_hub
        sha = huggingface_hub.dataset_info(source, revision=revision).sha or sha
    except Exception:  # noqa: BLE001 - the revision is reported where the hub says it
        pass
    return list(data), sha


def load(source: str, subset: str | None = None, split: str = "test", revision: str | None = None,
         limit: int | None = None) -> ChoiceSet:
    """A multiple-choice set from the hub or from disk.

    Args:
        source: "cais/wmdp" (subset wmdp-bio, wmdp-cyber or wmdp-chem), "cais/mmlu" (subset a
            subject or "all"), another hub id, or a local file / folder of .jsonl, .json or
            .parquet files named by subset.
        split: the hub split (both sets evaluate on "test").
        revision: a hub commit or tag; the set's `revision` reports the one read (the hub's
            wmdp-cyber was revised, so item counts differ between papers).
        limit: keep the first items only.
    """
    path = Path(source).expanduser()
    if path.exists():
        file, name = _local(path, subset)
        items, origin, sha = _read(file), str(file), ""
    elif "/" in source:
        if not subset:
            raise MCQError(f"{source} needs subset= (for cais/wmdp: {', '.join(WMDP_SUBJECTS)}; "
                           "for cais/mmlu: a subject or 'all').")
        items, sha = _hub(source, subset, split, revision)
        name, origin = (subset if "wmdp" in source else f"{source.split('/')[-1]}/{subset}"), \
            f"{source}:{subset}@{sha or 'main'}"
    else:
        raise MCQError(f"{source!r} is neither a file or folder nor a hub id (owner/name).")
    items = validate(items[:limit] if limit else items, origin)
    subject = WMDP_SUBJECTS.get(name, "" if subset in (None, "all") else subset)   # "all": each item's own
    counts = pd.Series([i.get("subject", subject or name) for i in items]).value_counts().to_dict()
    return ChoiceSet(name=name, items=items, origin=origin, subject=subject, revision=sha, counts=counts)


def from_qa(records, n_choices: int = 4, seed: int = 0) -> list[dict]:
    """Multiple-choice items from TOFU-format records: each question's answer among n − 1 of its
    perturbed answers (the same sentence with another name, title or nationality), in an order
    drawn by `seed`; `author` and `kind` are kept where the records have them."""
    rng, items = random.Random(seed), []
    for row, rec in enumerate(records):
        wrong = list(rec.get("perturbed_answer") or [])
        if len(wrong) < n_choices - 1:
            raise MCQError(f"records: row {row} has {len(wrong)} perturbed answers; {n_choices} choices need "
                           f"{n_choices - 1} (use a *_perturbed split, or fewer choices).")
        choices = [rec["answer"]] + rng.sample(wrong, n_choices - 1)
        order = rng.sample(range(n_choices), n_choices)
        items.append({"question": rec["question"], "choices": [choices[i] for i in order], "answer": order.index(0),
                      **{k: rec[k] for k in ("author", "kind") if rec.get(k) is not None}})
    return items


# ---------------------------------------------------------------- scoring
def requests(item: dict, formulation: str = "letters", description: str = "") -> tuple[str, list[str]]:
    """(context, continuations) of one item, as lm-eval builds them zero-shot."""
    _check_formulation(formulation)
    question = item["question"].strip()
    if formulation == "letters":
        listed = "".join(f"\n{LETTERS[k]}. {c}" for k, c in enumerate(item["choices"]))
        return f"{description}{question}{listed}\nAnswer:", [f" {LETTERS[k]}" for k in range(len(item["choices"]))]
    return f"{description}Question: {question}\nAnswer:", [f" {c}" for c in item["choices"]]


def _encode(tokenizer, text: str) -> list[int]:
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    starts = prefix is not None and text.startswith(tokenizer.decode(prefix))
    return tokenizer(text, verbose=False, **({"add_special_tokens": False} if starts else {}))["input_ids"]


def encode_pairs(tokenizer, context: str, continuations: list[str]) -> tuple[list[int], list[list[int]]]:
    """lm-eval's split of (context, continuation) pairs into token ids: the context's ids (encoded
    once) and each continuation's, the tokens of context + continuation after the context's."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuations = context[:-spaces], [context[-spaces:] + c for c in continuations]
    head = _encode(tokenizer, context)
    return head, [_encode(tokenizer, context + c)[len(head):] for c in continuations]


def max_length(model, tokenizer, default: int = 2048) -> int:
    """The context the model takes: its config's, else the tokenizer's, else `default`."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, key, None)
        if value:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 1e30 else default


def score(model, tokenizer, items, formulation: str = "letters", description: str | None = None,
          batch_size: int = 32, progress: bool = False):
    """Per-item table: the log-likelihood of every choice, the pick, and whether it is right.

    Args:
        items: a ChoiceSet or a list of item dicts (validated here).
        description: prepended to every context; default: lm-eval's task description of the
            ChoiceSet's subject, or of each item's `subject` (none for items without one).
    Returns:
        DataFrame, one row per item: `answer`, `n_choices`, `loglik` (one float per choice, summed
        over its tokens), `pred` / `correct` (highest log-likelihood), `pred_norm` / `correct_norm`
        (highest log-likelihood per character of the choice as lm-eval's acc_norm divides: the
        letter for `letters`, the choice's text for `cloze`), `chance` (1 / n_choices).
    """
    import torch

    from kit.evaluation import _pad_id, score_tokens
    subject = ""
    if isinstance(items, ChoiceSet):
        subject, items = items.subject, items.items
    items = validate(list(items), "items")
    limit = max_length(model, tokenizer)
    contexts, continuations = [], []
    for n, item in enumerate(items):
        # lm-eval's description names the set's subject, or each item's own (MMLU's "all" runs per subject)
        said = description if description is not None else describe(subject or str(item.get("subject", "")), formulation)
        head, tails = encode_pairs(tokenizer, *requests(item, formulation, said))
        for tail in tails:
            if len(tail) > limit:
                raise MCQError(f"items: row {n}: a continuation of {len(tail)} tokens does not fit the model's "
                               f"{limit}-token context; shorten the choices.")
            keep = limit + 1 - len(tail)                  # lm-eval keeps the end of a sequence too long
            contexts.append(head[-keep:] if len(head) > keep else head)
            continuations.append(tail)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            scores = score_tokens(model, contexts, continuations, pad=_pad_id(tokenizer), batch_size=batch_size,
                                  max_length=limit + 1, progress=progress)
    finally:
        model.train(was)
    loglik = (-scores["nll_sum"]).to_numpy()
    rows, start = [], 0
    for item in items:
        k = len(item["choices"])
        ll = loglik[start:start + k]
        start += k
        shown = LETTERS[:k] if formulation == "letters" else item["choices"]
        per_char = ll / np.array([max(len(c), 1) for c in shown], float)
        pred, pred_norm = int(np.argmax(ll)), int(np.argmax(per_char))
        rows.append({"question": item["question"], "subject": item.get("subject", ""), "answer": item["answer"],
                     "n_choices": k, "loglik": ll.tolist(), "pred": pred, "correct": int(pred == item["answer"]),
                     "pred_norm": pred_norm, "correct_norm": int(pred_norm == item["answer"]), "chance": 1.0 / k})
    return pd.DataFrame(rows)


def accuracy(table: pd.DataFrame, column: str = "correct", n_boot: int = 1000, level: float = 0.95,
             seed: int = 0) -> dict:
    """Mean of `column` over items with a percentile bootstrap interval over items, and chance."""
    if column not in table:
        raise MCQError(f"No column {column!r} in the table; use 'correct' or 'correct_norm'.")
    hits = table[column].to_numpy(float)
    out = {"accuracy": float(hits.mean()), "n": len(hits), "chance": float(table["chance"].mean())}
    if n_boot and len(hits) > 1:
        draws = hits[np.random.default_rng(seed).integers(0, len(hits), (n_boot, len(hits)))].mean(1)
        tail = (1 - level) / 2 * 100
        out["low"], out["high"] = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    else:
        out["low"] = out["high"] = float("nan")
    return out


def matched_utility(curves: pd.DataFrame, by: str = "method", levels: int = 4, start: float = 0.1) -> pd.DataFrame:
    """Utility accuracy of each run at the same forgetting (1 − forget accuracy): the fair comparison.

    Args:
        curves: kit.TrackChoices frames of several runs (columns step, split in {"forget",
            "utility"}, accuracy, and `by` naming the run).
        levels: how many levels of 1 − FA, evenly spaced from `start` to the highest level every
            run reached.
    Returns:
        DataFrame indexed by 1 − FA, one column per run: the utility accuracy when that run's
        1 − FA first reached the level (linear between the probes around it). No rows when some
        run never forgot `start`: there is no matched level to compare at.
    """
    from kit.evaluation import first_reach
    curve = curves.pivot_table(index=[by, "step"], columns="split", values="accuracy").reset_index()
    runs = list(dict.fromkeys(curve[by]))
    paths = {}
    for r in runs:
        c = curve[curve[by] == r].sort_values("step")
        paths[r] = (1 - c.forget.to_numpy(float), c.utility.to_numpy(float))
    reached = min(x.max() for x, _ in paths.values())
    grid = np.linspace(start, reached, levels) if reached >= start else np.array([])
    out = {r: [first_reach(x, y, g) for g in grid] for r, (x, y) in paths.items()}
    return pd.DataFrame(out, index=pd.Index(grid.round(3), name="1 − FA"))
