"""Privacy-style checks of unlearning: membership-inference scores and extraction.

Every score is oriented as a *membership* score (higher = the model treats the text more like
training data), from per-token arrays of kit.evaluation.score_pairs(..., tokens=True):
- `loss`: minus the mean answer NLL (Yeom et al., 2018);
- `min_k`: mean of the lowest k fraction of token log-probabilities (Min-K%, Shi et al., 2024);
- `min_k_pp`: the same over token log-probabilities standardised by the mean and standard
  deviation of log p under the model's own next-token distribution (Min-K%++, Zhang et al., 2025);
- `zlib`: minus the answer NLL divided by the zlib-compressed length of the answer text
  (Carlini et al., 2021).

`auc(members, non_members)` is the probability that a forget item scores above a never-seen
(holdout) item: 1 for a model that memorised the forget set, about 0.5 for one that never saw it,
and below 0.5 when unlearning overshot (forget items now look *less* familiar than unseen ones).
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from scipy.stats import rankdata

SCORES = ("loss", "min_k", "min_k_pp", "zlib")


def _lowest_mean(x: np.ndarray, k: float) -> float:
    n = max(1, int(np.ceil(k * len(x))))
    return float(np.sort(x)[:n].mean())


def membership_scores(items: pd.DataFrame, texts: list[str], k: float = 0.4) -> pd.DataFrame:
    """Membership scores per item from score_pairs(..., tokens=True) rows and their answer texts."""
    if not 0 < k <= 1:
        raise ValueError(f"min-k fraction k={k} must be in (0, 1]; the usual value is 0.4.")
    rows = []
    for (_, row), text in zip(items.iterrows(), texts):
        z = (row["logp"] - row["mu"]) / np.maximum(row["sigma"], 1e-12)
        mean_nll = -float(np.mean(row["logp"]))
        rows.append({"loss": -mean_nll, "min_k": _lowest_mean(row["logp"], k), "min_k_pp": _lowest_mean(z, k),
                     "zlib": -mean_nll / len(zlib.compress(text.encode("utf-8")))})
    return pd.DataFrame(rows, index=items.index)


def auc(members, non_members) -> float:
    """Area under the ROC curve of a membership score: P(member > non-member), ties count half."""
    members, non_members = np.asarray(members, float), np.asarray(non_members, float)
    if len(members) == 0 or len(non_members) == 0:
        raise ValueError("auc needs at least one member (forget) and one non-member (holdout) score.")
    ranks = rankdata(np.concatenate([members, non_members]))
    n, m = len(members), len(non_members)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * m))


def mia_table(forget: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """AUC of each membership score, forget items (members) against holdout items."""
    return pd.DataFrame([{"score": s, "auc": auc(forget[s], holdout[s])} for s in SCORES])


def extraction_strength(hit) -> float:
    """1 - k/n for the shortest teacher-forced prefix k after which the argmax reproduces every
    remaining answer token; 0 when even the last token is missed (k = n)."""
    hit = np.asarray(hit, bool)
    n = len(hit)
    if n == 0:
        return 0.0
    misses = np.flatnonzero(~hit)
    k = 0 if len(misses) == 0 else int(misses[-1]) + 1
    return 1.0 - k / n


def exact_memorization(hit) -> float:
    """Fraction of answer tokens the argmax reproduces under teacher forcing."""
    hit = np.asarray(hit, bool)
    return float(hit.mean()) if len(hit) else 0.0
