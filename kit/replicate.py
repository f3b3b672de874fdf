"""The replication study: every claim-bearing notebook over tiny families, run seeds and models.

    python -m kit replicate                                  # the whole study, resumable
    python -m kit replicate --families 0,1 --notebooks 05     # a part of it
    python -m kit replicate --collect                        # only rewrite the findings

One *unit* is one notebook run on one tiny family with every run seed in `--seeds`, or on one
pretrained model with one run seed; it goes through `kit.sweep` (papermill in its own process, atomic, isolated), and
the claims it measured (`kit.record(..., observations=...)`) are appended to `replicates.csv`,
one row per claim and replicate, with the weights' fingerprint, the machine and the versions.
A unit whose rows are already there is skipped, so the study resumes after an interruption, and
because `replicates.csv` is committed, the next session (on another machine) continues it.

`findings.csv` and `FINDINGS.md` are rewritten from all rows after every unit: per claim and
model the paper's statement, the mean and 95% interval (Student t over family means on tiny,
over run seeds on a pretrained model: kit.claims), how many replicates had the predicted sign,
and the verdict. Families are pooled by seed: another machine's build of family k is a
re-measurement of family k, not a new family (same initialisation and data order).
"""
from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from kit import claims
from kit.paths import NOTEBOOKS_DIR, ROOT, write_atomic

# claim-bearing notebooks, and which of them the study runs on the pretrained model
NOTEBOOKS = {"04": "04_ga_and_wga", "05": "05_npo_and_tnpo", "06": "06_po_and_rmu", "07": "07_regularizers",
             "08": "08_tofu_benchmark", "09": "09_weight_attribution", "12": "12_robustness"}
PRETRAINED = {"smollm2-135m": ["04", "05", "07", "08", "12"]}
STUDY = {"09_weight_attribution": {"METHODS": ["wagle", "magnitude", "random", "wanda"]},   # beyond the defaults
         "12_robustness": {"OBJECTIVES": ["ga", "gd", "npo", "npo+kl", "wga", "tnpo", "wtnpo", "simnpo", "rmu"]}}
STUDY_PRETRAINED = {"08_tofu_benchmark": {"OBJECTIVES": ["ga", "gd", "npo"]}}   # only what its claims compare (CPU time)
COLUMNS = ["notebook", "model", "family", "fingerprint", "seed", "claim", "value", "date", "kit", "torch",
           "transformers", "machine"]


class ReplicateError(ValueError):
    """A study that cannot start (unknown notebook or model, bad seeds); the message says the fix."""


@dataclass(frozen=True)
class Unit:
    notebook: str          # e.g. "05_npo_and_tnpo"
    model: str
    family: int | None     # tiny's family; None for a pretrained model
    seeds: tuple[int, ...]

    def params(self) -> dict:
        if self.family is not None:
            base = {}
        else:
            path = NOTEBOOKS_DIR / "params" / f"{self.notebook}.{self.model.split('-')[0]}.yaml"
            base = yaml.safe_load(path.read_text()) if path.exists() else {"MODEL": self.model}
            base.pop("RUN_TAG", None)
        extra = {"TINY_SEEDS": [self.family]} if self.family is not None else {}
        study = STUDY.get(self.notebook, {}) if self.family is not None else STUDY_PRETRAINED.get(self.notebook, {})
        return {**base, **study, **extra, "SEEDS": list(self.seeds), "RUN_TAG": "replicate"}


def plan(families=range(5), seeds=(0, 1, 2), models=("tiny", "smollm2-135m"), notebooks=None) -> list[Unit]:
    """The units of the study: tiny notebooks × families first, then the pretrained models."""
    keys = list(notebooks or NOTEBOOKS)
    for key in keys:
        if key not in NOTEBOOKS:
            raise ReplicateError(f"Unknown notebook {key!r}; the claim-bearing notebooks are {', '.join(NOTEBOOKS)}.")
    for model in models:
        if model != "tiny" and model not in PRETRAINED:
            raise ReplicateError(f"Unknown model {model!r} for the study; use tiny or {', '.join(PRETRAINED)}.")
    seeds = tuple(int(s) for s in seeds)
    units = []
    if "tiny" in models:
        units += [Unit(NOTEBOOKS[k], "tiny", int(f), seeds) for f in families for k in keys]
    for model in models:
        if model != "tiny":
            # one unit per run seed: a pretrained unit takes tens of minutes on CPU, and an
            # interruption should lose one seed's work, not the notebook's
            units += [Unit(NOTEBOOKS[k], model, None, (s,)) for k in PRETRAINED[model] if k in keys for s in seeds]
    return units


def read(path: Path) -> pd.DataFrame:
    """replicates.csv as written: fingerprints stay text (a hex digest such as 12776161e965 would
    parse as a float), families stay integers (<NA> for a pretrained model)."""
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    rows = pd.read_csv(path, dtype={"fingerprint": str})
    rows["family"] = pd.to_numeric(rows["family"], errors="coerce").astype("Int64")
    return rows


def done(unit: Unit, rows: pd.DataFrame) -> bool:
    """Every seed of the unit already has observations."""
    mine = rows[(rows.notebook == unit.notebook) & (rows.model == unit.model)]
    if unit.family is not None:
        mine = mine[pd.to_numeric(mine.family, errors="coerce") == unit.family]
    return set(unit.seeds) <= set(mine.seed.astype(int))


def committed(folder: Path = ROOT) -> pd.DataFrame:
    """The replication study's findings as last written (`findings.csv`: claim, model, mean,
    95% interval, k of n, verdict); an empty table where the study never ran."""
    path = folder / "findings.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["claim", "model", "verdict"])


def _versions() -> dict:
    import torch
    import transformers

    import kit
    return {"kit": kit.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores"}


def _fingerprint(unit: Unit) -> str:
    from kit.models import fingerprint, load_model
    model, _ = load_model(unit.model, seed=unit.family)
    return fingerprint(model)


def observations(unit: Unit, result_file: Path) -> pd.DataFrame:
    """The claims a finished unit recorded, as rows of replicates.csv."""
    import json
    recorded = json.loads(result_file.read_text()).get("observations", [])
    stamp = {"notebook": unit.notebook, "fingerprint": _fingerprint(unit),
             "date": datetime.date.today().isoformat(), **_versions()}
    rows = pd.DataFrame([{**stamp, **r, "model": unit.model,
                          "family": unit.family if unit.family is not None else pd.NA} for r in recorded])
    rows = rows.reindex(columns=COLUMNS)
    rows["family"] = rows["family"].astype("Int64")
    return rows


def findings(rows: pd.DataFrame) -> pd.DataFrame:
    """The findings table: kit.claims.summarize over every recorded replicate."""
    obs = rows.assign(family=rows.family.where(rows.model == "tiny"))
    obs["family"] = obs.family.map(lambda f: None if pd.isna(f) or f == "" else str(int(float(f))))
    table = claims.summarize(obs[["claim", "model", "family", "seed", "value"]])
    order = {cid: i for i, cid in enumerate(claims.CLAIMS)}                 # the registry's order, then by model
    return table.sort_values(["claim", "model"], key=lambda s: s.map(order) if s.name == "claim" else s).reset_index(drop=True)


def markdown(table: pd.DataFrame, rows: pd.DataFrame) -> str:
    """FINDINGS.md: the verdicts, how they were computed, and what is still missing."""
    v = _versions()
    lines = ["# Findings", "",
             "What the kit's replication study found for each claim of the papers, on each built-in model. "
             "Written by `python -m kit replicate` from `replicates.csv` (one row per claim and replicate); "
             "do not edit by hand.", "",
             f"- written {datetime.date.today().isoformat()} with kit {v['kit']}, torch {v['torch']}, "
             f"transformers {v['transformers']} on {v['machine']}",
             f"- {len(rows)} observations from {rows.date.min() if len(rows) else '-'} to "
             f"{rows.date.max() if len(rows) else '-'}",
             "- a replicate on tiny is a family (built from its own seed) × a run seed; the interval is a Student t "
             "interval over the family means (runs of one family are correlated). On a pretrained model it is a t "
             "interval over run seeds. Each statistic is signed so that the paper's prediction is > 0: `holds` when "
             "the 95% interval lies above 0, `reversed` below, `inconclusive` otherwise.", "",
             "With a single family the interval covers run seeds only and speaks for that family, not for tiny "
             "in general (the `interval over` column says which).", "",
             "| claim | model | the paper says | statistic (> 0 = as the paper predicts) | mean | 95% interval | "
             "predicted sign | interval over | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    cell = lambda text: str(text).replace("|", "\\|")          # a literal | would end the table cell
    for _, r in table.iterrows():
        interval = "-" if pd.isna(r.low) else f"[{r.low:.3g}, {r.high:.3g}]"
        lines.append(f"| `{r.claim}` | {r.model} | {cell(r.statement)} | {cell(r.statistic)} | {r['mean']:.3g} | {interval} | "
                     f"{r.k_of_n} | {r.basis.removeprefix('t over ')} | **{r.verdict}** |")
    measured = set(zip(table.claim, table.model))
    missing = [(c, m) for c in claims.CLAIMS.values() for m in ["tiny", *PRETRAINED]
               if (c.id, m) not in measured and (m == "tiny" or c.notebook[:2] in PRETRAINED.get(m, []))]
    later = [(c, m) for c, m in missing if m == "tiny" or not c.tiny_only]
    if later:
        lines += ["", "Not measured yet (the study resumes where it stopped): "
                  + ", ".join(f"`{c.id}` on {m}" for c, m in later) + "."]
    lines += [f"\n`{c.id}` is not measured on {m}: {c.tiny_only}." for c, m in missing if (c, m) not in later]
    if len(rows):
        counts = rows.groupby(["notebook", "model"]).agg(families=("family", lambda f: f.replace("", pd.NA).nunique()),
                                                         seeds=("seed", "nunique"))
        lines += ["", "## Replicates run", "", "| notebook | model | families | run seeds |", "|---|---|---|---|"]
        lines += [f"| {nb} | {m} | {r.families or '-'} | {r.seeds} |" for (nb, m), r in counts.iterrows()]
    return "\n".join(lines) + "\n"


def write(rows: pd.DataFrame, folder: Path = ROOT) -> pd.DataFrame:
    """Rewrite findings.csv and FINDINGS.md from the replicate rows."""
    table = findings(rows) if len(rows) else claims.summarize(pd.DataFrame(columns=["claim", "model", "family", "seed", "value"]))
    write_atomic(folder / "findings.csv", table.to_csv(index=False))
    write_atomic(folder / "FINDINGS.md", markdown(table, rows))
    return table


def run(units: list[Unit], folder: Path = ROOT, threads: int | None = None, timeout: float | None = None,
        log=print, executor: str = "local", resources=None) -> pd.DataFrame:
    """Run every unit not yet in `folder/replicates.csv`, appending its rows as soon as it finishes.

    Locally the units run one after the other; with a cluster executor (kit.cluster) every unit
    is submitted at once, one job each, and its rows are appended as its job ends."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from kit.sweep import sweep
    path = folder / "replicates.csv"
    rows = read(path)
    todo = [u for u in units if not done(u, rows)]
    log(f"replication study: {len(units)} units, {len(units) - len(todo)} already in {path.name}, {len(todo)} to run")
    lock = threading.Lock()

    def one(i: int, unit: Unit) -> None:
        log(f"[{i}/{len(todo)}] {unit.notebook} on {unit.model}"
            f"{f' family {unit.family}' if unit.family is not None else ''}, seeds {list(unit.seeds)}")
        out = folder / "runs" / "replicate" / unit.notebook
        result = sweep(NOTEBOOKS_DIR / f"{unit.notebook}.ipynb", {k: [v] for k, v in unit.params().items()},
                       out, timeout=timeout, log=lambda *_: None, threads=threads, executor=executor, resources=resources)
        r = result.runs[0]
        if r.status == "failed":
            log(f"  {unit.notebook}: failed at {r.cell}: {r.error} (kept in {out / '.failed' / r.run})")
            return
        found = list((out / r.run).glob(f"runs/*/results/{unit.notebook}.json"))
        if not found:
            log(f"  {unit.notebook} recorded no results; skipped")
            return
        new = observations(unit, found[0])
        with lock:                                  # units finishing together append one at a time
            table = pd.concat([read(path), new], ignore_index=True)
            write_atomic(path, table.to_csv(index=False))
            write(table, folder)
        log(f"  {unit.notebook} done in {r.seconds:.0f} s; {len(table)} observations in {path.name}")

    if executor == "local":
        for i, unit in enumerate(todo, 1):
            one(i, unit)
    else:
        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            list(pool.map(lambda args: one(*args), enumerate(todo, 1)))
    return write(read(path), folder)
