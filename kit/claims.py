"""Claims: the papers' statements as data, tested over replicates with an interval and a verdict.

A reading of one model from one run is an anecdote: `tiny` is trained on the user's machine,
another CPU gives other floating point and so another tiny, and a sign or an ordering seen on
one of them can flip on the next. So every empirical statement a notebook makes is a *claim*:

- its id and the paper's statement, in the kit's words (the registry `CLAIMS` below);
- a statistic measured once per replicate, signed so that the paper's prediction is > 0
  (e.g. retain NLL of NPO minus that of WTNPO at matched forgetting);
- a verdict over the replicates: `holds` when the 95% interval lies above 0, `reversed` when it
  lies below, `inconclusive` when it contains 0 (or there are fewer than two replicates).

A replicate is one independent repetition of the whole experiment: on tiny, a family (the models
built from one seed on one machine, named by its seed and weight fingerprint) crossed with a run
seed (data order, RMU's direction, LoRA's initialisation); on a pretrained model, a run seed.
Runs that share a family are correlated, so the interval is a Student t interval over the
*family means* when there are two or more families; with a single family (a notebook's defaults)
it is a t interval over the run seeds, and the table says that it speaks for that family only
(`basis`). The replication study (`python -m kit replicate`) pools families across machines and
writes FINDINGS.md; a notebook asserts an empirical claim only where that study found it in
every replicate with a margin.

    ledger = claims.Ledger("tiny")
    for rep in claims.replicates("tiny", tiny_seeds=[0, 1], seeds=[0, 1, 2]):
        ...                                     # run the experiment for rep.family, rep.seed
        ledger.add("wga.matched", value, rep)
    table = ledger.table()                      # mean, 95% interval, k of n, verdict per claim
    print(claims.conclusions(table))

Used in: notebooks 04-09 and 12 (their last cells) and kit.replicate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

VERDICTS = ("holds", "reversed", "inconclusive")


class ClaimError(ValueError):
    """An unknown claim id or a malformed observation; the message names the fix."""


@dataclass(frozen=True)
class Claim:
    id: str
    notebook: str       # where it is measured
    paper: str          # which paper says it
    statement: str      # what the paper says, in the kit's words
    statistic: str      # what one replicate measures; the paper predicts it is > 0
    scale: str = "linear"   # "correlation": the interval is computed on Fisher's z = artanh(r), so it stays in (-1, 1)
    tiny_only: str = ""     # why a pretrained model cannot measure it (it needs a model that never saw the forget data)


_G, _W = "G-effect (Wang et al., 2025)", "WAGLE (Jia et al., 2024)"
CLAIMS: dict[str, Claim] = {c.id: c for c in [
    Claim("ga.mirror", "04_ga_and_wga", _G, "GA's retain damage mirrors its forgetting along the run",
          "correlation of the changes of GA's e_u and e_r from probe to probe (trends removed)", "correlation"),
    Claim("ga.ratio_climbs", "04_ga_and_wga", _G, "GA's retain cost per unit of forgetting grows over the run",
          "e_r/e_u at GA's last probe minus at θ_0"),
    Claim("ga.shallow", "04_ga_and_wga", _G, "GA's G-effect sits in the shallow layers more than the deep ones",
          "log(|e_u| per block of the shallow third / |e_u| per block of the deep third) at GA's last probe"),
    Claim("wga.matched", "04_ga_and_wga", _G, "WGA keeps more retain knowledge than GA at matched forgetting",
          "retain NLL of GA minus WGA at matched forget NLL, mean over the matched levels"),
    Claim("npo.shrink", "05_npo_and_tnpo", _G, "NPO's weights shrink as forgetting proceeds",
          "mean NPO weight at θ_0 (1) minus at the last checkpoint"),
    Claim("npo.known", "05_npo_and_tnpo", _G, "NPO's weights favour the examples that are still known",
          "minus the correlation of weight and forget NLL over examples at the last checkpoint", "correlation"),
    Claim("tnpo.vs_npo", "05_npo_and_tnpo", _G, "token-wise NPO keeps more retain knowledge than NPO at matched forgetting",
          "retain NLL of NPO minus TNPO at matched forget NLL, mean over the matched levels"),
    Claim("wtnpo.vs_tnpo", "05_npo_and_tnpo", _G, "WTNPO keeps more retain knowledge than TNPO at matched forgetting",
          "retain NLL of TNPO minus WTNPO at matched forget NLL, mean over the matched levels"),
    Claim("po.sign", "06_po_and_rmu", _G, "the sign of PO's e_u at θ_0 tells whether its run forgets",
          "change of the forget NLL over PO's run, times the sign of -e_u at θ_0"),
    Claim("rmu.layer", "06_po_and_rmu", _G + "; Dang et al., 2025 (Adaptive RMU)",
          "RMU forgets more when it steers an early block than the last block",
          "final forget NLL of the RMU run at the first swept block minus at the last swept block"),
    Claim("rmu.coeff", "06_po_and_rmu", _G, "a larger RMU coefficient makes RMU's first step unlearn more",
          "e_u at the smallest swept coefficient minus at the largest, mean over the blocks"),
    Claim("reg.nll", "07_regularizers", _G, "the NLL retain term protects held-out retain data at matched forgetting",
          "retain NLL of GA minus GA+NLL at matched forget NLL, mean over the matched levels"),
    Claim("reg.kl", "07_regularizers", _G, "the KL retain term protects held-out retain data at matched forgetting",
          "retain NLL of GA minus GA+KL at matched forget NLL, mean over the matched levels"),
    Claim("reg.kl_vs_nll", "07_regularizers", _G, "the KL term protects held-out retain data better than the NLL term",
          "retain NLL of GA+NLL minus GA+KL at matched forget NLL, mean over the matched levels"),
    Claim("tofu.npo_utility", "08_tofu_benchmark", _G, "NPO keeps more model utility than GA",
          "model utility of NPO minus GA after the same run"),
    Claim("tofu.npo_quality", "08_tofu_benchmark", _G, "NPO reaches a better forget quality than GA",
          "log10 forget quality of NPO minus GA after the same run",
          tiny_only="forget quality is a test against a retain model, which a pretrained model does not have"),
    Claim("tofu.gd_utility", "08_tofu_benchmark", _G + "; Maini et al., 2024 (TOFU)",
          "a retain regulariser (GD = GA + NLL on retain data) keeps more model utility than GA",
          "model utility of GD minus GA after the same run"),
    Claim("wagle.vs_random", "09_weight_attribution", _W, "WAGLE's mask keeps more retain knowledge than a random mask",
          "retain NLL of the random mask minus WAGLE's at matched forget NLL"),
    Claim("wagle.vs_magnitude", "09_weight_attribution", _W, "WAGLE's mask keeps more retain knowledge than a magnitude mask",
          "retain NLL of the magnitude mask minus WAGLE's at matched forget NLL"),
    Claim("wagle.vs_wanda", "09_weight_attribution", _W, "WAGLE's mask keeps more retain knowledge than a Wanda mask",
          "retain NLL of the Wanda mask minus WAGLE's at matched forget NLL"),
    Claim("wagle.vs_dense", "09_weight_attribution", _W, "unlearning through WAGLE's mask keeps more retain knowledge than dense unlearning",
          "retain NLL of dense unlearning (which also moves embeddings, norms and head) minus WAGLE's at matched forget NLL"),
    Claim("audit.relearn", "12_robustness", "Hu et al., 2024; Lynch et al., 2024 (relearning attacks)",
          "a few fine-tuning steps on half of the forget questions bring the other half's answers back towards the target",
          "NLL recovery score on the held-out forget half after the largest relearning budget minus before, "
          "mean over the unlearned models"),
    Claim("audit.specific", "12_robustness", "Hu et al., 2024 (relearning attacks)",
          "relearning on forget questions brings back more than the same fine-tuning on retain data (knowledge, not repair)",
          "NLL recovery score after relearning on the forget half minus after as many steps on retain data, "
          "mean over the unlearned models"),
    Claim("audit.quantize", "12_robustness", "Zhang et al., 2025 (quantization attacks)",
          "rounding the unlearned weights to 4 bits brings unlearned knowledge back",
          "NLL recovery score after 4-bit rounding minus before, mean over the unlearned models"),
    Claim("audit.geffect", "12_robustness", "the kit's question, read with the G-effect (Wang et al., 2025)",
          "runs with a larger relearning G-effect at the end of unlearning regain more when relearning",
          "Spearman correlation over the unlearned models between the relearning G-effect at their final weights and "
          "the NLL recovery gained by the largest relearning budget", "correlation"),
    Claim("audit.moved", "12_robustness", "the kit's question (the simpler candidate)",
          "runs whose weights moved less regain more when relearning",
          "minus the Spearman correlation over the unlearned models between the relative weight distance from the "
          "target and the NLL recovery gained by the largest relearning budget", "correlation"),
]}


def claim(claim_id: str) -> Claim:
    """The registered claim `claim_id`."""
    if claim_id not in CLAIMS:
        raise ClaimError(f"Unknown claim {claim_id!r}. Registered: {', '.join(CLAIMS)}; add new ones to kit.claims.CLAIMS.")
    return CLAIMS[claim_id]


# ---------------------------------------------------------------- replicates
@dataclass(frozen=True)
class Replicate:
    model: str
    family: int | None     # tiny's family seed; None for a fixed (pretrained) model
    seed: int              # the run seed

    @property
    def label(self) -> str:
        return f"family {self.family}, seed {self.seed}" if self.family is not None else f"seed {self.seed}"


def replicates(model: str, tiny_seeds=(), seeds=(0,)) -> list[Replicate]:
    """Every (family, run seed) pair, families outermost. On tiny an empty `tiny_seeds` means the
    default family ($KIT_TINY_SEED, else 0); other models have no families."""
    for name, value in (("TINY_SEEDS", tiny_seeds), ("SEEDS", seeds)):
        if isinstance(value, str):
            raise ClaimError(f"{name} is the text {value!r}, not a list: papermill's -p passes text; "
                             f"use -y '{name}: [0, 1, 2]' (or a parameters file).")
    seeds = list(seeds)
    if not seeds:
        raise ClaimError("SEEDS is empty: give at least one run seed, e.g. [0, 1, 2].")
    if model != "tiny":
        return [Replicate(model, None, int(s)) for s in seeds]
    from kit.models import tiny_seed
    families = [tiny_seed(f) for f in tiny_seeds] or [tiny_seed()]
    return [Replicate(model, f, int(s)) for f in families for s in seeds]


class Ledger:
    """Collects one value per (claim, replicate); `table()` turns them into verdicts."""

    def __init__(self, model: str):
        self.model, self.rows = model, []

    def add(self, claim_id: str, value: float, rep: Replicate, family_id: str | None = None) -> None:
        """Record `value` of `claim_id` for `rep`. `family_id` names the family beyond its seed
        (the replication study passes the weights' fingerprint: another machine, another family)."""
        claim(claim_id)
        value = float(value)
        family = None if rep.family is None else (family_id or str(rep.family))
        self.rows.append({"claim": claim_id, "model": rep.model, "family": family, "seed": rep.seed, "value": value})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["claim", "model", "family", "seed", "value"])

    def table(self, level: float = 0.95) -> pd.DataFrame:
        return summarize(self.frame(), level)


# ---------------------------------------------------------------- statistics
def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student t interval of the mean; (mean, nan, nan) for fewer than 2 values."""
    from scipy import stats
    x = pd.Series(values, dtype=float).dropna()
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def means(frame: pd.DataFrame, by: list[str], columns: list[str], bounds: tuple[float, float] | None = None,
          level: float = 0.95, digits: int = 3) -> pd.DataFrame:
    """Per group of `by`: n, then each column's mean over the group's rows (replicates) and its
    Student t interval written "[low, high]" ("-" under 2 rows); `bounds` clips the interval to
    the values a column can take (accuracies: (0, 1))."""
    rows = []
    for key, group in frame.groupby(by, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)), n=len(group))
        for column in columns:
            mean, low, high = t_interval(group[column], level)
            if bounds and not math.isnan(low):
                low, high = max(low, bounds[0]), min(high, bounds[1])
            row[column] = mean
            row[f"{column} {level:.0%}"] = "-" if math.isnan(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def verdict(low: float, high: float) -> str:
    """`holds` if the interval lies above 0, `reversed` if below, else `inconclusive`."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    return "holds" if low > 0 else "reversed" if high < 0 else "inconclusive"


def summarize(obs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per (claim, model): the paper's statement, n replicates and families, mean, interval,
    how many replicates had the predicted sign, the interval's basis and the verdict."""
    need = {"claim", "model", "family", "seed", "value"}
    if not need <= set(obs.columns):
        raise ClaimError(f"Observations need columns {sorted(need)}; got {sorted(obs.columns)}.")
    rows = []
    for (cid, model), g in obs.groupby(["claim", "model"], sort=False):
        g, c = g[g.value.notna()], claim(cid)
        z = c.scale == "correlation"            # average and interval on Fisher's z, reported back as correlations
        values = g.value.clip(-0.999999, 0.999999).map(math.atanh) if z else g.value
        families = g.family.dropna().unique()
        if len(families) >= 2:
            units, basis = values.groupby(g.family).mean(), f"t over {len(families)} family means"
        else:
            units = values
            basis = f"t over run seeds of family {families[0]}" if len(families) else "t over run seeds"
        mean, low, high = (math.tanh(v) if z and not math.isnan(v) else v for v in t_interval(units, level))
        basis += " (on Fisher z)" if z else ""
        rows.append({"claim": cid, "model": model, "paper": c.paper, "statement": c.statement, "statistic": c.statistic,
                     "n": len(g), "families": len(families), "mean": mean, "low": low, "high": high,
                     "k_of_n": f"{int((g.value > 0).sum())}/{len(g)}", "basis": basis, "verdict": verdict(low, high)})
    columns = ["claim", "model", "paper", "statement", "statistic", "n", "families", "mean", "low", "high",
               "k_of_n", "basis", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _number(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3g}"


def sentence(row) -> str:
    """One claim's conclusion, written from its numbers."""
    interval = f"95% interval [{_number(row['low'])}, {_number(row['high'])}]" if not math.isnan(row["low"]) \
        else "no interval with one replicate"
    reading = {"holds": "holds", "reversed": "is reversed", "inconclusive": "is inconclusive"}[row["verdict"]]
    return (f"{row['statement'][0].upper()}{row['statement'][1:]} ({row['claim']}): {reading} on {row['model']}. "
            f"Statistic ({row['statistic']}): mean {_number(row['mean'])}, {interval}, "
            f"predicted sign in {row['k_of_n']} replicates ({row['basis']}).")


def conclusions(table: pd.DataFrame) -> str:
    """The conclusions text of a claims table, one line per claim, printed from its numbers."""
    return "\n".join(f"- {sentence(row)}" for _, row in table.iterrows())


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader needs, rounded (for a notebook's last cell)."""
    shown = table[["claim", "model", "n", "mean", "low", "high", "k_of_n", "verdict", "basis"]].copy()
    three = lambda v: float(f"{v:.3g}") if pd.notna(v) else v           # three significant digits: 4.93e-05, not 0.0000
    return shown.assign(**{c: shown[c].map(three) for c in ("mean", "low", "high")}).set_index("claim")
