"""A scenario: what a run unlearns, what it must keep, and what it is evaluated on, in one call.

Two sources ship with the kit:
- `builtin`: the fictitious authors. A forget split `forgetNN` comes with its retain split
  `retain(100-NN)` and, for `tiny`, a retain model of the same family that never saw the
  forgotten authors (TOFU's reference for forget quality).
- `real`: real knowledge for pretrained models (`smollm2-135m`, any Hugging Face model): questions
  about a few famous authors to forget, other authors and world facts to keep. A model can only
  forget what it knew, so the forget and retain items are filtered by `kit.keep_known` (the
  greedy answer, with the evaluation's template and token budget, contains the item's fact), and
  the counts kept are reported. There is no retain model, so no forget quality.

`load_scenario` is the one path from a model and a forget split to these record lists; the
quickstart and the TOFU notebooks use it, so the known-filter cannot be forgotten in one place.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pandas as pd

from kit import corpora, mcq
from kit.data import DataError, load_split
from kit.evaluation import generate_answers
from kit.paths import cache_dir, digest, write_atomic
from kit.tofu import ANSWER_TOKENS, tofu_splits

KNOWN_FILTERED = ("forget", "retain")   # roles that must be knowledge the model had


@dataclass
class Scenario:
    model: str                      # the model's name (cache key of its known-filter)
    source: str                     # builtin, real, locuslab/TOFU or a folder
    forget_split: str
    forget: list[dict]              # the records unlearned
    retain: list[dict]              # the records a retain regulariser (and e_r) uses
    splits: dict[str, list[dict]]   # evaluation roles for kit.evaluate (forget, retain, real_authors, ...)
    reference: str | None           # tiny variant trained without the forget split ("retain99"), else None
    counts: pd.DataFrame            # per role: candidates and kept items

    def describe(self) -> str:
        kept = "; ".join(f"{r.role} {r.kept}/{r.candidates}" for r in self.counts.itertuples())
        ref = f"reference: the {self.reference} model" if self.reference else "no retain model (no forget quality)"
        return (f"{self.model} on {self.source}/{self.forget_split}: {len(self.forget)} forget and "
                f"{len(self.retain)} retain records to unlearn with; evaluation items kept {kept}; {ref}")


def knows(answer: str, fact: str) -> bool:
    """Whether a free-form answer contains the fact (case-insensitive; "a|b" accepts either)."""
    return any(alt.lower() in answer.lower() for alt in fact.split("|"))


def keep_known(model, tokenizer, records, max_new_tokens: int | None = None, batch_size: int = 16,
               cache_key: str | None = None) -> list[dict]:
    """The items a model already answers correctly: its greedy answer contains the item's `fact`.

    "Answers" means what the evaluation reads: the greedy answer under the model's template
    ("auto") within the token budget of kit.tofu's ROUGE-L (ANSWER_TOKENS, the default).

    The real-knowledge scenario (source "real") keeps only these before unlearning, so that
    forgetting is measured on knowledge the model actually had.

    Args:
        cache_key: when given (e.g. the model name), the verdicts are cached in the kit cache,
            keyed by it and the questions, so the generation runs once per model.
    """
    max_new_tokens = max_new_tokens or ANSWER_TOKENS
    records = list(records)
    questions = [r["question"] for r in records]
    path = None
    if cache_key:
        name = f"{cache_key.replace('/', '--')}-{digest([cache_key, questions, max_new_tokens], 12)}"
        path = cache_dir() / "known" / f"{name}.json"
        if path.exists():
            return [r for r, ok in zip(records, json.loads(path.read_text())) if ok]
    answers = generate_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens, batch_size=batch_size)
    verdicts = [knows(a, r["fact"]) for r, a in zip(records, answers)]
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(verdicts))
    return [r for r, ok in zip(records, verdicts) if ok]


def draw(records: list, n: int, seed: int, what: str = "records") -> list:
    """n of `records` drawn without replacement by `seed`, in their original order."""
    if not 0 < n <= len(records):
        raise DataError(f"Cannot draw {n} of {len(records)} {what}: use 1 to {len(records)} (0 keeps all).")
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]


def retain_split_of(forget: str) -> str:
    """The retain split that goes with a forget split: forget01 -> retain99, forget -> retain."""
    return f"retain{100 - int(forget[6:]):02d}" if forget.startswith("forget") and forget[6:].isdigit() else "retain"


def load_scenario(model, tokenizer, model_name: str, forget: str = "forget01", source: str = "builtin", *,
                  retain: str | None = None, retain_items: int = 0, forget_items: int = 0, seed: int = 0,
                  max_items: int = 0, known_only: bool | None = None) -> Scenario:
    """The records of one unlearning scenario.

    Args:
        model_name: the model's name ("tiny", "smollm2-135m", an HF id); decides the reference
            model and keys the cached known-filter.
        forget: the forget split ("forget01/05/10" on builtin, "forget" on real).
        retain: the retain split to unlearn with (default: the one that goes with `forget`).
        retain_items: keep only the first n retain records for unlearning (0: all).
        forget_items: unlearn a draw of n of the (known) forget records, the same n as the
            evaluation's forget role (0: all). The draw depends on `seed` only, so a run seed
            decides which items a replicate forgets.
        max_items: evaluate at most n items of each role other than forget (0: all).
        known_only: filter forget and retain by `keep_known` (default: on for source "real").
    Returns:
        Scenario; `describe()` says what was kept.
    """
    known_only = source == "real" if known_only is None else known_only
    try:
        forget_records = list(load_split(forget, source))
        retain_records = list(load_split(retain or retain_split_of(forget), source))
    except DataError as err:
        raise DataError(f"{err} (load_scenario needs a forget split and its retain split, e.g. "
                        f"forget01 / retain99 on builtin, forget / retain on real).") from None
    splits = tofu_splits(forget, source)
    counts = []
    for role, records in list(splits.items()):
        if role != "forget" and max_items:
            records = records[:max_items]
        n = len(records)
        if known_only and role in KNOWN_FILTERED:
            records = keep_known(model, tokenizer, records, cache_key=model_name)
        splits[role] = records
        counts.append({"role": role, "candidates": n, "kept": len(records)})
    if known_only:
        known = {r["question"] for r in splits["forget"]}
        forget_records = [r for r in forget_records if r["question"] in known]
        retain_records = keep_known(model, tokenizer, retain_records, cache_key=model_name)
        if not forget_records:
            raise DataError(f"{model_name} answers none of the {forget!r} questions of source {source!r} correctly: "
                            "there is nothing to unlearn. Use a model that knows them, or known_only=False.")
    if forget_items:
        forget_records = draw(forget_records, forget_items, seed, what=f"{forget!r} forget records of {model_name}")
        splits["forget"] = forget_records
    if retain_items:
        retain_records = retain_records[:retain_items]
    reference = retain_split_of(forget) if model_name == "tiny" and source == "builtin" else None
    return Scenario(model_name, source, forget, forget_records, retain_records, splits, reference,
                    pd.DataFrame(counts))


@dataclass
class ChoiceScenario:
    """WMDP's setting on the kit's data: unlearn text about a topic, measure multiple-choice accuracy
    on the topic (forget) and on everything else (utility)."""
    model: str
    source: str
    forget_split: str
    formulation: str
    forget_docs: list[dict]          # documents about the forget authors (text records)
    retain_docs: list[dict]          # documents about retain authors
    forget_mc: list[dict]            # multiple-choice items about the forget authors
    utility_mc: list[dict]           # multiple-choice items about retain authors, real authors and world facts
    counts: pd.DataFrame             # per set: candidates, accuracy before unlearning, kept

    def describe(self) -> str:
        sets = "; ".join(f"{r.set} {r.kept}/{r.candidates} (accuracy {r.accuracy:.2f})" for r in self.counts.itertuples())
        return (f"{self.model} on {self.source}/{self.forget_split}: {len(self.forget_docs)} forget and "
                f"{len(self.retain_docs)} retain documents; {self.formulation} multiple choice, items kept {sets}")


def load_choice_scenario(model, tokenizer, model_name: str, forget: str = "forget05", source: str = "builtin", *,
                         formulation: str = "cloze", n_choices: int = 4, retain_authors: int = 10,
                         utility_items: int = 40, known_only: bool = True, seed: int = 0) -> ChoiceScenario:
    """Documents to unlearn and multiple-choice items to measure, from one forget split.

    The forget documents are the forget authors' answers written out as text (kit.corpora.from_qa),
    the retain documents those of the first `retain_authors` retain authors. The questions become
    multiple-choice items (kit.mcq.from_qa: the answer among n − 1 perturbed answers): forget items
    from the forget split, utility items from up to `utility_items` of each other evaluation role.
    With `known_only`, only the items the model answers correctly before unlearning are kept (as
    the real-knowledge QA scenario keeps what the model knew), so forget accuracy starts at 1 and
    falls towards chance (1 / n_choices) as the topic is unlearned; `counts` gives the accuracy
    over all candidates too.
    """
    mcq.requests({"question": "q", "choices": ["a", "b"], "answer": 0}, formulation)   # a bad name fails first
    try:
        forget_records = list(load_split(forget, source))
        retain_records = list(load_split(retain_split_of(forget), source))
    except DataError as err:
        raise DataError(f"{err} (load_choice_scenario needs a forget split and its retain split).") from None
    authors = list(dict.fromkeys(r.get("author") for r in retain_records))[:retain_authors]
    retain_docs = corpora.from_qa([r for r in retain_records if r.get("author") in authors], seed=seed)
    forget_docs = corpora.from_qa(forget_records, seed=seed)
    splits = tofu_splits(forget, source, holdout=False)
    sets = {"forget": splits.pop("forget")}
    sets["utility"] = [r for role in splits.values() for r in role[:utility_items or None]]
    rows, kept = [], {}
    for name, records in sets.items():
        items = mcq.from_qa(records, n_choices, seed)
        table = mcq.score(model, tokenizer, items, formulation=formulation)
        kept[name] = [i for i, ok in zip(items, table.correct) if ok] if known_only else items
        rows.append({"set": name, "candidates": len(items), "accuracy": float(table.correct.mean()),
                     "kept": len(kept[name])})
        if not kept[name]:
            raise DataError(f"{model_name} answers none of the {len(items)} {name} items correctly in the "
                            f"{formulation} formulation: nothing to measure. Try formulation='cloze' or known_only=False.")
    return ChoiceScenario(model_name, source, forget, formulation, forget_docs, retain_docs, kept["forget"],
                          kept["utility"], pd.DataFrame(rows))
