"""TOFU evaluation: the field's numbers, from a model or from TOFU's own evaluation logs.

Per item (Maini et al., 2024; formulas in docs/methods.md):
- Prob: exp(-mean answer NLL); on real authors / world facts normalised against the perturbed
  answers, P_true / (P_true + sum P_perturbed).
- Truth ratio R = P_pert / P_true-side, with P = exp(-mean token NLL) and P_pert the geometric
  (default) or arithmetic mean over perturbed answers. The true side is the paraphrased answer on
  forget / retain and the original answer on real authors / world facts. Reported as
  mean(max(0, 1 - R)) on utility splits and mean(min(R, 1/R)) on the forget split.
- ROUGE-L recall (rouge-score, stemmer on) of the greedy answer against the gold answer.
Aggregated:
- model utility: harmonic mean of {ROUGE-L, Prob, truth ratio} x {retain, real authors, world facts};
- forget quality: p-value of the two-sample KS test between the forget-set R of the model and of
  a retain model (never trained on the forget set) on the same items.

One aggregation serves both paths: `evaluate()` scores a model into an item table, `read_log()`
turns a TOFU `eval_log_aggregated.json` into the same table, and `aggregate()` reduces either.
`Evaluation.save()` writes the item table back in TOFU's layout, so `python -m kit tofu-score`
reads the kit's runs and TOFU's published logs alike.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from kit import mia
from kit.paths import write_atomic

ROLES = ("forget", "retain", "real_authors", "world_facts")
UTILITY = ("retain", "real_authors", "world_facts")
METRICS = ("rouge", "prob", "truth_ratio")
TOFU_FILES = {"retain": "eval_log.json", "real_authors": "eval_real_author_wo_options.json",
              "world_facts": "eval_real_world_wo_options.json", "forget": "eval_log_forget.json",
              "holdout": "eval_log_holdout.json"}   # the last one is the kit's own (MIA)
LOG_KEYS = ("avg_gt_loss", "average_perturb_loss", "avg_paraphrased_loss", "rougeL_recall")
ANSWER_TOKENS = 64    # greedy tokens per answer for ROUGE-L (kit.keep_known reads the same answers)
SMALL_SPLIT = 50      # below this many forget items the KS test can only see large shifts
TRUTH_RATIOS = ("geometric", "arithmetic")


class EvaluationError(ValueError):
    """An evaluation input the kit cannot use; the message names the file, split or key."""


# ---------------------------------------------------------------- per-item numbers
def _check_truth_ratio(truth_ratio: str) -> None:
    if truth_ratio not in TRUTH_RATIOS:
        raise EvaluationError(f"Unknown truth_ratio {truth_ratio!r}: use 'geometric' (TOFU's reported "
                              "numbers) or 'arithmetic' (TOFU's training-time variant).")


def item_metrics(items: pd.DataFrame, truth_ratio: str = "geometric") -> pd.DataFrame:
    """Add per-item `prob`, `R` (raw truth ratio), `truth_ratio` (the reported form) and `rouge`."""
    _check_truth_ratio(truth_ratio)
    out = items.copy()
    pert = [np.asarray(x, float) for x in out["average_perturb_loss"]]    # lengths may differ by split
    gt, para = out["avg_gt_loss"].to_numpy(float), out["avg_paraphrased_loss"].to_numpy(float)
    normalised = out["split"].isin(["real_authors", "world_facts"]).to_numpy()
    p_true = np.exp(-gt)
    p_pert_sum = np.array([np.exp(-x).sum() for x in pert])
    out["prob"] = np.where(normalised, p_true / (p_true + p_pert_sum), p_true)
    if truth_ratio == "geometric":
        r = np.exp(para - np.array([x.mean() for x in pert]))
    else:
        r = np.array([np.exp(-x).mean() for x in pert]) / np.exp(-para)
    out["R"] = r
    out["truth_ratio"] = np.where(out["split"].eq("forget").to_numpy(), np.minimum(r, 1 / r), np.maximum(0, 1 - r))
    out["rouge"] = out["rougeL_recall"].astype(float)
    return out


def _hmean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    values = np.asarray(values, float)
    with np.errstate(divide="ignore"):
        h = values.shape[axis] / (1 / values).sum(axis)
    return np.where((values <= 0).any(axis), 0.0, h)


def _split(items: pd.DataFrame, role: str) -> pd.DataFrame:
    part = items[items["split"] == role]
    if part.empty:
        raise EvaluationError(f"The item table has no {role!r} items; model utility needs "
                              f"{', '.join(UTILITY)} and forget metrics need 'forget'.")
    return part


def forget_quality(items: pd.DataFrame, reference: pd.DataFrame, truth_ratio: str = "geometric") -> dict:
    """KS test of the forget-set truth ratios against a retain model's on the same items."""
    mine = item_metrics(_split(items, "forget"), truth_ratio)
    ref = item_metrics(_split(reference, "forget"), truth_ratio)
    if len(mine) != len(ref):
        raise EvaluationError(f"Forget quality compares the same items, but the model has {len(mine)} forget "
                              f"items and the retain reference {len(ref)}. Evaluate both on the same split.")
    if "question" in mine and "question" in ref and list(mine["question"]) != list(ref["question"]):
        raise EvaluationError("The model's and the retain reference's forget items differ (other questions "
                              "or order); evaluate both on the same forget split.")
    test = ks_2samp(mine["R"].to_numpy(), ref["R"].to_numpy())
    n = len(mine)
    return {"forget_quality": float(test.pvalue), "ks_statistic": float(test.statistic), "n_forget": n,
            "ks_detectable": float(1.358 * np.sqrt(2 / n))}   # smallest KS distance significant at 5%


def aggregate(items: pd.DataFrame, reference: pd.DataFrame | None = None, truth_ratio: str = "geometric") -> dict:
    """TOFU's summary numbers of an item table (from `evaluate` or `read_log`).

    Returns:
        dict with `model_utility`, `<split>_<metric>` for the 9 utility components and the forget
        split, and with a retain-model `reference`, `forget_quality`, `ks_statistic`.
    """
    scored = item_metrics(items[items["split"].isin(ROLES)], truth_ratio)
    out = {}
    for role in ROLES:
        part = scored[scored["split"] == role]
        for metric in METRICS:
            out[f"{role}_{metric}"] = float(part[metric].mean()) if len(part) else float("nan")
    out["model_utility"] = float(_hmean([out[f"{r}_{m}"] for r in UTILITY for m in METRICS]))
    for role in UTILITY:
        _split(scored, role)
    if reference is not None:
        out.update(forget_quality(items, reference, truth_ratio))
    return out


def bootstrap(items: pd.DataFrame, truth_ratio: str = "geometric", n_boot: int = 1000, level: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """Percentile intervals over items (each split resampled on its own) for model utility and each
    component: DataFrame indexed by metric with `ci_low`, `ci_high`."""
    rng = np.random.default_rng(seed)
    scored = item_metrics(items[items["split"].isin(ROLES)], truth_ratio)
    draws = {}
    for role in ROLES:
        part = scored[scored["split"] == role]
        if part.empty:
            continue
        idx = rng.integers(0, len(part), size=(n_boot, len(part)))
        for metric in METRICS:
            draws[f"{role}_{metric}"] = part[metric].to_numpy()[idx].mean(1)
    draws["model_utility"] = _hmean(np.stack([draws[f"{r}_{m}"] for r in UTILITY for m in METRICS], 1))
    tail = (1 - level) / 2 * 100
    return pd.DataFrame({k: np.percentile(v, [tail, 100 - tail]) for k, v in draws.items()},
                        index=["ci_low", "ci_high"]).T


# ---------------------------------------------------------------- scoring a model
def tofu_splits(forget: str = "forget01", source: str = "builtin", holdout: bool = True) -> dict[str, list]:
    """The evaluation splits of a forget split: forget, retain, real authors, world facts (and the
    matching holdout for MIA where the source has one), as {role: records}."""
    names = {"forget": f"{forget}_perturbed", "retain": "retain_perturbed",
             "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed"}
    if holdout and forget.startswith("forget") and forget[6:].isdigit():
        names["holdout"] = f"holdout{forget[6:]}"
    from kit.data import DataError, load_split
    splits = {}
    for role, name in names.items():
        try:
            splits[role] = list(load_split(name, source))
        except DataError:
            if role != "holdout":
                raise
    return splits


def _rouge(golds: list[str], generations: list[str]) -> tuple[list[float], list[float]]:
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    scores = [scorer.score(g, p) for g, p in zip(golds, generations)]
    return [s["rouge1"].recall for s in scores], [s["rougeL"].recall for s in scores]


def _check(role: str, records: list[dict]) -> None:
    if role not in (*ROLES, "holdout"):
        raise EvaluationError(f"Unknown evaluation split role {role!r}: use {', '.join((*ROLES, 'holdout'))}.")
    if not records:
        raise EvaluationError(f"The {role!r} split is empty; evaluation needs at least one item.")
    need = ("question", "answer") + (("perturbed_answer",) if role != "holdout" else ()) + (
        ("paraphrased_answer",) if role in ("forget", "retain") else ())
    for i, rec in enumerate(records):
        missing = [k for k in need if k not in rec]
        if missing:
            raise EvaluationError(f"Item {i} of the {role!r} split has no {missing[0]!r} key; TOFU metrics need "
                                  f"{list(need)} (use the *_perturbed splits of kit.load_split).")


def score_items(model, tokenizer, splits: dict[str, list], *, generate: bool = True, max_new_tokens: int = ANSWER_TOKENS,
                batch_size: int = 32, template: str = "auto", mia_k: float = 0.4,
                progress: bool = False) -> pd.DataFrame:
    """The item table of a model: one row per item of every split, TOFU's per-item fields plus
    exact memorisation, extraction strength and membership scores.

    All answers of all splits (gold, paraphrased, perturbed) go through one batched scoring pass,
    all questions through one batched greedy generation.
    """
    from kit.evaluation import generate_answers, score_pairs
    for role, records in splits.items():
        _check(role, records)
    questions, answers, where = [], [], {}   # where[(role, i)] = {"gt": row, "para": row, "pert": [rows]}
    for role, records in splits.items():
        for i, rec in enumerate(records):
            kinds = [("gt", rec["answer"])]
            if role != "holdout":
                true_side = rec["paraphrased_answer"] if role in ("forget", "retain") else rec["answer"]
                kinds += [("para", true_side)] + [("pert", a) for a in rec["perturbed_answer"]]
            slot = where[role, i] = {"pert": []}
            for kind, answer in kinds:
                if kind == "pert":
                    slot["pert"].append(len(answers))
                else:
                    slot[kind] = len(answers)
                questions.append(rec["question"])
                answers.append(answer)
    scores = score_pairs(model, tokenizer, questions, answers, template=template, batch_size=batch_size,
                         tokens=True, progress=progress)
    rows = []
    for (role, i), slot in where.items():
        rec, g = splits[role][i], scores.iloc[slot["gt"]]
        row = {"split": role, "index": i, "question": rec["question"], "gold": rec["answer"],
               "avg_gt_loss": g["nll"], "gt_loss": g["nll_sum"], "num_token_gt": int(g["n_tokens"]),
               "exact_memorization": mia.exact_memorization(g["hit"]),
               "extraction_strength": mia.extraction_strength(g["hit"])}
        if role != "holdout":
            row["avg_paraphrased_loss"] = scores.iloc[slot["para"]]["nll"]
            row["average_perturb_loss"] = [float(scores.iloc[j]["nll"]) for j in slot["pert"]]
        rows.append(row)
    items = pd.DataFrame(rows)
    members = mia.membership_scores(scores.iloc[[slot["gt"] for slot in where.values()]].reset_index(drop=True),
                                    list(items["gold"]), k=mia_k)
    items = pd.concat([items, members], axis=1)
    if generate:
        items["generated"] = generate_answers(model, tokenizer, list(items["question"]), max_new_tokens=max_new_tokens,
                                              template=template, batch_size=batch_size, progress=progress)
        items["rouge1_recall"], items["rougeL_recall"] = _rouge(list(items["gold"]), list(items["generated"]))
    else:
        items["generated"], items["rouge1_recall"], items["rougeL_recall"] = "", np.nan, np.nan
    return items


@dataclass
class Evaluation:
    """What `evaluate` returns: the item table, the summary (value and bootstrap interval per metric),
    MIA AUCs (forget vs holdout) and notes on how far the numbers can be trusted."""
    items: pd.DataFrame
    summary: pd.DataFrame
    mia: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, metric: str) -> float:
        return float(self.summary.loc[metric, "value"])

    def row(self, **extra) -> dict:
        """The headline numbers as one flat dict (for a results table across runs)."""
        out = {**extra, **self.summary["value"].to_dict()}
        if "ci_low" in self.summary:
            out["model_utility_low"], out["model_utility_high"] = self.summary.loc["model_utility", ["ci_low", "ci_high"]]
        if self.mia is not None:
            out.update({f"mia_{s}": a for s, a in zip(self.mia["score"], self.mia["auc"])})
        return out

    @classmethod
    def load(cls, folder: str | Path) -> "Evaluation":
        """The Evaluation that `save` wrote into `folder`."""
        folder = Path(folder)
        items = read_log(folder / "eval_log_aggregated.json")
        path = folder / "eval_summary.json"
        if not path.exists():
            raise EvaluationError(f"{path} is missing: {folder} holds no finished evaluation.")
        saved = json.loads(path.read_text())
        summary = pd.DataFrame(saved["summary"]).set_index("metric")
        return cls(items, summary, None if saved["mia"] is None else pd.DataFrame(saved["mia"]), saved["notes"])

    def save(self, folder: str | Path) -> Path:
        """Write `eval_log_aggregated.json` (TOFU's layout, plus the kit's extra per-item fields) and
        `eval_summary.json` into `folder`, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        summary = {"summary": self.summary.reset_index().to_dict("records"), "notes": self.notes,
                   "mia": None if self.mia is None else self.mia.to_dict("records")}
        for name, obj in [("eval_log_aggregated.json", to_log(self.items)), ("eval_summary.json", summary)]:
            write_atomic(folder / name, json.dumps(obj, default=float))
        return folder


def stored_evaluation(root: str | Path, key: dict, make, resume: bool = True) -> Evaluation:
    """The evaluation that `key` names (everything that decides it: model fingerprint, split,
    run settings, ...), from its folder under `root` when `resume` and already finished, else
    `make()` evaluated and saved there at once: a long benchmark never loses a finished row."""
    from kit.paths import digest
    name = digest(key, 10)
    label = "-".join(str(key[k]).replace("/", "--") for k in ("split", "name") if k in key)
    folder = Path(root) / (f"{label}-{name}" if label else name)
    if resume and (folder / "eval_summary.json").exists():
        return Evaluation.load(folder)
    ev = make()
    ev.save(folder)
    return ev


def evaluate(model, tokenizer, splits: dict[str, list], *, reference=None, truth_ratio: str = "geometric",
             generate: bool = True, max_new_tokens: int = ANSWER_TOKENS, batch_size: int = 32, template: str = "auto",
             n_boot: int = 1000, seed: int = 0, out_dir: str | Path | None = None,
             progress: bool = False) -> Evaluation:
    """Evaluate a model the TOFU way.

    Args:
        splits: {role: records} with roles forget, retain, real_authors, world_facts (and optionally
            holdout, for MIA): `tofu_splits("forget01")` builds them.
        reference: the retain model's Evaluation, item table or TOFU log path; gives forget quality.
        truth_ratio: "geometric" (TOFU's reported numbers) or "arithmetic".
        generate: run greedy generation for ROUGE-L (without it ROUGE is NaN and model utility too).
        n_boot: bootstrap resamples for the 95% intervals (0: none).
        out_dir: where to save the item log and summary (e.g. the run directory).
    Returns:
        Evaluation(items, summary, mia, notes).
    Used in: notebooks/08_tofu_benchmark.ipynb
    """
    _check_truth_ratio(truth_ratio)       # a bad option fails before any scoring
    items = score_items(model, tokenizer, splits, generate=generate, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, template=template, progress=progress)
    return summarise(items, reference, truth_ratio, n_boot, seed, out_dir)


def _reference_items(reference) -> pd.DataFrame | None:
    if reference is None or isinstance(reference, pd.DataFrame):
        return reference
    if isinstance(reference, Evaluation):
        return reference.items
    return read_log(reference)


def summarise(items: pd.DataFrame, reference=None, truth_ratio: str = "geometric", n_boot: int = 1000,
              seed: int = 0, out_dir: str | Path | None = None) -> Evaluation:
    """An Evaluation from an item table: summary with intervals, MIA AUCs, notes; saved if asked."""
    ref = _reference_items(reference)
    numbers = aggregate(items, ref, truth_ratio)
    summary = pd.DataFrame({"value": numbers}).rename_axis("metric")
    if n_boot:
        summary = summary.join(bootstrap(items, truth_ratio, n_boot, seed=seed))
    notes = []
    n_forget = int((items["split"] == "forget").sum())
    if ref is not None and n_forget < SMALL_SPLIT:
        notes.append(f"The forget split has {n_forget} items: at 5% the KS test only detects a distance above "
                     f"{numbers['ks_detectable']:.2f}, so forget quality separates only large shifts.")
    if ref is None:
        notes.append("No retain-model reference given: forget quality is not computed.")
    mia_auc = None
    if (items["split"] == "holdout").any():
        mia_auc = mia.mia_table(items[items["split"] == "forget"], items[items["split"] == "holdout"])
    evaluation = Evaluation(items, summary, mia_auc, notes)
    if out_dir is not None:
        evaluation.save(out_dir)
    return evaluation


# ---------------------------------------------------------------- TOFU's log format
def to_log(items: pd.DataFrame) -> dict:
    """An item table in TOFU's eval_log_aggregated.json layout: {file: {metric: {index: value}}}."""
    log = {}
    skip = {"split", "index", "question", "gold", "generated"}
    for role, part in items.groupby("split", sort=False):
        keys = [str(i) for i in part["index"]]
        entry = {col: dict(zip(keys, part[col].tolist())) for col in part.columns
                 if col not in skip and part[col].notna().all()}
        entry["generated_text"] = {k: [q, g, a] for k, q, g, a in
                                   zip(keys, part["question"], part["generated"], part["gold"])}
        if "average_perturb_loss" in entry:
            entry["truth_ratio"] = dict(zip(keys, item_metrics(part)["R"].tolist()))
        log[TOFU_FILES[role]] = entry
    return log


def read_log(path: str | Path) -> pd.DataFrame:
    """A TOFU-format evaluation log (eval_log_aggregated.json) as the kit's item table."""
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"Evaluation log {str(path)!r} does not exist; pass the path of an "
                              "eval_log_aggregated.json (TOFU's, or one Evaluation.save wrote).")
    try:
        log = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EvaluationError(f"{path} is not valid JSON ({err.msg}).") from None
    frames = []
    for role, file_key in TOFU_FILES.items():
        if file_key not in log:
            if role == "holdout":
                continue
            raise EvaluationError(f"{path}: top-level key {file_key!r} ({role} split) is missing; a TOFU "
                                  f"log has {', '.join(v for k, v in TOFU_FILES.items() if k != 'holdout')}.")
        entry = log[file_key]
        for key in (LOG_KEYS if role != "holdout" else ("avg_gt_loss",)):
            if key not in entry:
                raise EvaluationError(f"{path}: key {key!r} is missing under {file_key!r}.")
        index = list(entry["avg_gt_loss"])
        for key in entry:
            if isinstance(entry[key], dict) and list(entry[key]) != index:
                raise EvaluationError(f"{path}: under {file_key!r}, {key!r} covers other items than "
                                      "'avg_gt_loss'; the log is inconsistent.")
        frame = pd.DataFrame({key: list(entry[key].values()) for key in entry if key != "generated_text"})
        frame.insert(0, "index", [int(i) for i in index])
        frame.insert(0, "split", role)
        if "generated_text" in entry:
            texts = list(entry["generated_text"].values())
            frame["question"] = [t[0] for t in texts]
            frame["generated"], frame["gold"] = [t[1] for t in texts], [t[2] for t in texts]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def tofu_score(model_log: str | Path, retain_log: str | Path | None = None, truth_ratio: str = "geometric") -> dict:
    """The summary `python -m kit tofu-score` prints: model utility, its 9 components, the forget
    truth ratio and, with a retain model's log, forget quality and the KS statistic."""
    items = read_log(model_log)
    ref = read_log(retain_log) if retain_log is not None else None
    numbers = aggregate(items, ref, truth_ratio)
    keys = ["model_utility", *(f"{r}_{m}" for r in UTILITY for m in METRICS), "forget_truth_ratio"]
    if ref is not None:
        keys += ["forget_quality", "ks_statistic"]
    return {k: numbers[k] for k in keys}
