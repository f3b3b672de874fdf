"""Text corpora as unlearning data: WMDP's corpora, WikiText, or a local folder of documents.

    docs = kit.corpora.load_texts("cais/wmdp-corpora", "cyber-forget-corpus", limit=200)
    retain = kit.corpora.load_texts("wikitext", limit=200)         # WikiText-2 (raw), as RMU's retain text
    mine = kit.corpora.load_texts("path/to/folder")                 # *.txt (one document each), *.jsonl ("text")

Each document is a record {"text": ..., "source": ...}; kit.data chunks it to `max_length` tokens
with the loss on every token, so these records go wherever QA records go (unlearn, the G-effect,
attribution). WMDP's bio forget corpus is not public (its authors share it on request); the cyber
forget and retain corpora and the bio retain corpus are.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from kit.data import DataError

WMDP_CORPORA = ("cyber-forget-corpus", "cyber-retain-corpus", "bio-retain-corpus")
PRIVATE = {"bio-forget-corpus": "WMDP's bio forget corpus is shared by its authors on request "
                                "(https://huggingface.co/datasets/cais/wmdp-bio-forget-corpus, gated)"}
WIKITEXT = ("wikitext", "wikitext-2-raw-v1")
MIN_CHARS = 50           # shorter lines of WikiText are headings and blanks, as RMU's code skips them


def _hub(path: str, name: str | None, split: str) -> list[dict]:
    try:
        import datasets
        return list(datasets.load_dataset(path, name, split=split))
    except Exception as err:  # noqa: BLE001 - offline, gated and unknown corpora all end here
        raise DataError(f"Could not load {path} ({name or 'default'}, split {split}) from the hub: "
                        f"{type(err).__name__}: {err}. A gated corpus needs `huggingface-cli login` and accepted "
                        "terms; offline, save its documents as .txt or .jsonl files in a folder and pass the folder."
                        ) from None


def _folder(path: Path) -> list[dict]:
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.suffix in (".txt", ".jsonl"))
    if not files:
        raise DataError(f"No .txt or .jsonl documents in {path}: put one document per .txt file, or one "
                        "JSON object with a 'text' key per line of a .jsonl file.")
    docs = []
    for file in files:
        if file.suffix == ".txt":
            docs.append({"text": file.read_text(encoding="utf-8"), "source": str(file)})
            continue
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{file}: line {n} is not valid JSON ({err.msg}).") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{file}: line {n} needs a 'text' key with a string (it has "
                                f"{sorted(row) if isinstance(row, dict) else type(row).__name__}).")
            docs.append({"text": row["text"], "source": f"{file}:{n}"})
    return docs


def load_texts(source: str, subset: str | None = None, split: str = "train", limit: int | None = None,
               min_chars: int = MIN_CHARS) -> list[dict]:
    """Documents as `text` records.

    Args:
        source: "cais/wmdp-corpora" (subset one of WMDP_CORPORA), "wikitext" (subset default
            wikitext-2-raw-v1), another hub dataset with a `text` column, or a local file / folder.
        limit: keep the first documents only (after dropping those shorter than `min_chars`).
    """
    path = Path(source).expanduser()
    if path.exists():
        rows, origin = _folder(path), str(path)
    elif source == "cais/wmdp-corpora":
        if subset in PRIVATE:
            raise DataError(f"{subset}: {PRIVATE[subset]}. Public subsets: {', '.join(WMDP_CORPORA)}; "
                            "or pass a local folder of its documents.")
        if subset not in WMDP_CORPORA:
            raise DataError(f"Unknown WMDP corpus {subset!r}: use one of {', '.join(WMDP_CORPORA)}.")
        rows, origin = _hub(source, subset, split), f"{source}:{subset}"
    elif source == "wikitext":
        rows, origin = _hub(WIKITEXT[0], subset or WIKITEXT[1], split), f"wikitext:{subset or WIKITEXT[1]}"
    elif "/" in source:
        rows, origin = _hub(source, subset, split), f"{source}:{subset or 'default'}"
    else:
        raise DataError(f"{source!r} is neither a file or folder nor a hub dataset (owner/name, 'wikitext').")
    docs = []
    for n, row in enumerate(rows):
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise DataError(f"{origin}: row {n} has no 'text' string (it has "
                            f"{sorted(row) if isinstance(row, dict) else type(row).__name__}).")
        if len(text.strip()) >= min_chars:
            docs.append({"text": text.strip(), "source": row.get("source", origin)})
    if not docs:
        raise DataError(f"{origin} has no document of at least {min_chars} characters; lower min_chars.")
    return docs[:limit] if limit else docs


def from_qa(records, by: str = "author", fields=("answer", "paraphrased_answer"), seed: int = 0) -> list[dict]:
    """Documents written from QA records: per `by` group (an author), the group's answer sentences
    (and their paraphrases) in an order drawn by `seed`, joined into one text. What the model read
    about a topic, as a corpus: WMDP's setting, where unlearning sees text and evaluation asks questions."""
    groups: dict[str, list[str]] = {}
    for rec in records:
        groups.setdefault(str(rec.get(by, "all")), []).extend(rec[f] for f in fields if rec.get(f))
    rng = random.Random(seed)
    docs = []
    for name, sentences in groups.items():
        rng.shuffle(sentences)
        docs.append({"text": " ".join(sentences), "source": f"{by}={name}"})
    if not docs:
        raise DataError("corpora.from_qa got no records.")
    return docs
