"""Data: one loader for the kit's benchmark, local TOFU files and the TOFU hub dataset,
and the tokenisation every objective and metric shares.

Sources (same split names, same schema):
- `"builtin"`: the kit's fictitious authors (kit.authors) and world/real-author facts (kit.facts);
- `"real"`: the forget-real-knowledge scenario for pretrained models (kit.realworld; world facts
  from kit.facts);
- a directory of TOFU-format `<split>.json` / `.jsonl` files;
- `"locuslab/TOFU"` (alias `"hf"`): `datasets.load_dataset` when a network is there.

Documents are unlearning data too: a record with a `text` field (and no question) is split into
chunks of `max_length` tokens with the loss on every token (WMDP's corpora; kit.corpora loads them),
and goes wherever QA pairs go (datasets, objectives, regularisers, G-effect risks, attribution).

Tokenisation follows TOFU: a prompt template per model (plain `Question: ...\\nAnswer:` for
base models, the chat template for instruct models), loss labels only on answer tokens
(prompt and padding are -100), one EOS appended to the answer. Right padding for training,
left padding for generation.
"""
from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import torch
from datasets import Dataset

from kit import authors, facts, realworld

REQUIRED_KEYS = ("question", "answer")
PERTURBED_KEYS = ("perturbed_answer",)
IGNORE = -100
HF_NAMES = ("locuslab/TOFU", "hf")


class DataError(ValueError):
    """A split name, file or schema the kit cannot use; the message says how to fix it."""


# ---------------------------------------------------------------- the built-in sources
@functools.lru_cache(maxsize=4)
def _builtin_splits(n_authors: int = 100, n_holdout: int = 10, seed: int = 0) -> dict[str, list[dict]]:
    bench = authors.make_benchmark(authors.BenchmarkConfig(n_authors, n_holdout, seed))
    full, holdout, per = bench["full"], bench["holdout"], len(authors.TEMPLATES)
    splits = {"full": full, "world_facts": facts.world_facts(seed),
              "real_authors": facts.real_author_items(seed),
              "retain_perturbed": full[:10 * per]}
    for pct in (1, 5, 10):
        n = max(1, round(n_authors * pct / 100)) * per
        splits[f"forget{pct:02d}"] = full[-n:]
        splits[f"retain{100 - pct}"] = full[:-n]
        splits[f"holdout{pct:02d}"] = holdout[:max(1, round(n_holdout * pct / 10)) * per]
    return _with_perturbed_aliases(splits)


@functools.lru_cache(maxsize=2)
def _real_splits(seed: int = 0) -> dict[str, list[dict]]:
    parts = realworld.author_items(seed)
    forget, retain = parts["forget"], parts["retain"]
    return _with_perturbed_aliases({"forget": forget, "retain": retain, "full": forget + retain,
                                    "real_authors": parts["real_authors"], "world_facts": facts.world_facts(seed)})


def _with_perturbed_aliases(splits: dict) -> dict:
    # every built-in item carries the evaluation fields, so `x_perturbed` is `x`
    return {**splits, **{f"{k}_perturbed": v for k, v in splits.items()
                         if not k.endswith("_perturbed") and k != "full"}}


# ---------------------------------------------------------------- loading and validation
def read_records(path: Path) -> list[dict]:
    """A JSON list or JSON lines (TOFU ships JSON lines under `.json` names)."""
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        return []
    if text[0] == "[":
        return json.loads(text)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {n} is not valid JSON ({err.msg}).") from None
    return rows


def _local_files(directory: Path) -> dict[str, Path]:
    return {p.name.split(".")[0]: p for p in sorted(directory.iterdir())
            if p.suffix in (".json", ".jsonl")}


def list_splits(source: str = "builtin") -> list[str]:
    """The split names a source offers."""
    if source == "builtin":
        return sorted(_builtin_splits())
    if source == "real":
        return sorted(_real_splits())
    if source in HF_NAMES:
        return ["full", "forget01", "forget05", "forget10", "retain99", "retain95", "retain90",
                "forget01_perturbed", "forget05_perturbed", "forget10_perturbed",
                "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed",
                "holdout01", "holdout05", "holdout10"]
    path = Path(source).expanduser()
    if path.is_dir():
        return sorted(_local_files(path))
    raise DataError(f"Unknown data source {source!r}: use 'builtin', 'real', 'locuslab/TOFU' "
                    "or a directory of TOFU-format <split>.json files.")


def validate(records: list[dict], split: str, origin: str) -> None:
    """Raise DataError naming the origin, row and key of the first schema problem."""
    if not records:
        raise DataError(f"Split {split!r} from {origin} is empty: an unlearning or evaluation "
                        "run needs at least one item. Check the file or pick another split.")
    need = REQUIRED_KEYS + (PERTURBED_KEYS if _needs_perturbed(split) else ())
    for row, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{origin}: row {row} is {type(rec).__name__}, expected a JSON object "
                            f"with keys {list(need)} (or a 'text' document).")
        if is_text(rec) and not _needs_perturbed(split):
            if not isinstance(rec["text"], str) or not rec["text"].strip():
                raise DataError(f"{origin}: row {row} key 'text' must be a non-empty string.")
            continue
        for key in need:
            if key not in rec:
                raise DataError(f"{origin}: row {row} has no {key!r} key (it has {sorted(rec)}); "
                                f"split {split!r} needs {list(need)}.")
        for key in REQUIRED_KEYS:
            if not isinstance(rec[key], str) or not rec[key].strip():
                raise DataError(f"{origin}: row {row} key {key!r} must be a non-empty string.")
        if "perturbed_answer" in rec and not (
                isinstance(rec["perturbed_answer"], list) and rec["perturbed_answer"]
                and all(isinstance(a, str) for a in rec["perturbed_answer"])):
            raise DataError(f"{origin}: row {row} key 'perturbed_answer' must be a non-empty "
                            "list of strings.")


def is_text(record: dict) -> bool:
    """A document (`text`, the loss on every token) rather than a question-answer pair."""
    return record.get("text") is not None and record.get("question") is None


def _needs_perturbed(split: str) -> bool:
    return split.endswith("_perturbed")


def load_split(name: str, source: str = "builtin") -> Dataset:
    """Load one split as a `datasets.Dataset` with at least `question` and `answer`.

    Args:
        name: a TOFU split name (`forget10`, `retain90`, `world_facts_perturbed`, ...);
            `list_splits(source)` lists them.
        source: `"builtin"`, `"real"`, `"locuslab/TOFU"` or a directory of `<split>.json`.
    Returns:
        Dataset; built-in items also carry `paraphrased_question`, `paraphrased_answer`,
        `perturbed_answer` (5), `author` and `kind`.
    Used in: notebooks/01_benchmark_and_models.ipynb
    """
    if source in ("builtin", "real"):
        splits = _builtin_splits() if source == "builtin" else _real_splits()
        if name not in splits:
            raise DataError(f"Unknown split {name!r} for source {source!r}. "
                            f"Valid splits: {', '.join(sorted(splits))}.")
        records, origin = splits[name], f"the {source} benchmark"
    elif source in HF_NAMES:
        import datasets
        try:
            records = list(datasets.load_dataset("locuslab/TOFU", name, split="train"))
        except ValueError as err:
            raise DataError(f"Unknown split {name!r} for locuslab/TOFU ({err}).") from None
        except (OSError, ConnectionError) as err:
            raise DataError(f"Could not reach locuslab/TOFU ({err}). Offline, use "
                            "source='builtin' or a local directory of TOFU files.") from None
        origin = f"locuslab/TOFU:{name}"
    else:
        path = Path(source).expanduser()
        if not path.is_dir():
            raise DataError(f"Data directory {str(path)!r} does not exist. Pass 'builtin', "
                            "'real', 'locuslab/TOFU' or a directory of <split>.json files.")
        files = _local_files(path)
        if name not in files:
            raise DataError(f"No file for split {name!r} in {path}. Files found for splits: "
                            f"{', '.join(files) or 'none'} (expected {name}.json or {name}.jsonl).")
        records, origin = read_records(files[name]), str(files[name])
    validate(records, name, origin)
    return Dataset.from_list(records)


def idk_answers() -> list[str]:
    """The kit's refusal answers (PO / IdK objectives)."""
    return facts.idk_answers()


# ---------------------------------------------------------------- tokenisation
def resolve_template(tokenizer, template: str = "auto") -> str:
    """`"chat"` for tokenizers with a chat template (instruct models), else `"plain"`."""
    if template == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if template not in ("plain", "chat"):
        raise DataError(f"Unknown prompt template {template!r}: use 'auto', 'plain' or 'chat'.")
    return template


def prompt_ids(tokenizer, question: str, template: str) -> list[int]:
    """Token ids of the prompt that precedes an answer (BOS included where the model uses one)."""
    if template == "chat":
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                             tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(f"Question: {question}\nAnswer:", add_special_tokens=True)["input_ids"]


def answer_ids(tokenizer, answer: str, template: str) -> list[int]:
    """Answer token ids followed by one EOS."""
    text = answer if template == "chat" else " " + answer
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def encode_text(tokenizer, text: str, max_length: int = 512) -> list[dict]:
    """A document as examples: consecutive chunks of up to `max_length` tokens (the tokenizer's
    special tokens on the first), labels on every token; a one-token tail predicts nothing and is dropped."""
    ids = tokenizer(text, verbose=False)["input_ids"]
    chunks = [ids[i:i + max_length] for i in range(0, len(ids), max_length)]
    return [{"input_ids": c, "labels": list(c)} for c in chunks if len(c) > 1]


def encode_qa(tokenizer, question: str, answer: str, template: str, max_length: int = 512) -> dict:
    """One training example: `input_ids`, `labels` (-100 on the prompt), both lists of ints."""
    p, a = prompt_ids(tokenizer, question, template), answer_ids(tokenizer, answer, template)
    ids = (p + a)[:max_length]
    labels = ([IGNORE] * len(p) + a)[:max_length]
    return {"input_ids": ids, "labels": labels}


class QADataset(torch.utils.data.Dataset):
    """Tokenised (question, answer) pairs, the loss on the answer; `answer_key` picks e.g.
    `paraphrased_answer`. Documents (`text` records) become chunks of `max_length` tokens with
    the loss on every token (encode_text), so an item is a pair or a chunk.

    Used in: notebooks/00_quickstart.ipynb
    """

    def __init__(self, records, tokenizer, template: str = "auto", max_length: int = 512,
                 question_key: str = "question", answer_key: str = "answer"):
        self.template = resolve_template(tokenizer, template)
        self.examples = []
        for r in records:
            if is_text(r):
                self.examples += encode_text(tokenizer, r["text"], max_length)
            else:
                self.examples.append(encode_qa(tokenizer, r[question_key], r[answer_key], self.template, max_length))
        if not self.examples:
            raise DataError("QADataset got no records: the split is empty.")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]


def pad_batch(examples: list[dict], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad `input_ids` (with pad_id), `labels` (with -100) and build `attention_mask`: [B, T]."""
    width = max(len(e["input_ids"]) for e in examples)
    out = {"input_ids": [], "attention_mask": []}
    if "labels" in examples[0]:
        out["labels"] = []
    for e in examples:
        n = width - len(e["input_ids"])
        fill = lambda seq, v: [v] * n + seq if side == "left" else seq + [v] * n  # noqa: E731
        out["input_ids"].append(fill(list(e["input_ids"]), pad_id))
        out["attention_mask"].append(fill([1] * len(e["input_ids"]), 0))
        if "labels" in out:
            out["labels"].append(fill(list(e["labels"]), IGNORE))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


class Collator:
    """Right-pads flat examples, or each part of paired examples (`forget`, `retain`, `idk`)."""

    def __init__(self, tokenizer, side: str = "right"):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.side = side

    def __call__(self, examples: list[dict]) -> dict:
        if "input_ids" in examples[0]:
            return pad_batch(examples, self.pad_id, self.side)
        return {k: pad_batch([e[k] for e in examples], self.pad_id, self.side) for k in examples[0]}


class ForgetRetainDataset(torch.utils.data.Dataset):
    """Pairs each forget example with a retain example (and an IdK answer to the forget question).

    Length is the forget set's; retain partners are drawn with a seeded RNG, as in TOFU, so an
    epoch covers the forget set once.
    """

    def __init__(self, forget, retain, tokenizer, template: str = "auto", max_length: int = 512,
                 with_idk: bool = False, seed: int = 0):
        self.forget = QADataset(forget, tokenizer, template, max_length)
        self.retain = QADataset(retain, tokenizer, template, max_length) if retain is not None else None
        rng = random.Random(seed)
        self.partner = [rng.randrange(len(self.retain)) for _ in range(len(self.forget))] if self.retain else None
        self.idk = None
        if with_idk and any(is_text(r) for r in forget):
            raise DataError("Refusal answers (PO, IdkDPO) need forget questions; these forget records are "
                            "documents ('text'). Use an objective without refusals (GA, GD, NPO, RMU, ...).")
        if with_idk:
            refusals = idk_answers()
            self.idk = [encode_qa(tokenizer, r["question"], rng.choice(refusals), self.forget.template, max_length)
                        for r in forget]

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> dict:
        item = {"forget": self.forget[i]}
        if self.retain is not None:
            item["retain"] = self.retain[self.partner[i]]
        if self.idk is not None:
            item["idk"] = self.idk[i]
        return item
