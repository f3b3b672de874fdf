"""`python -m kit replicate`: the plan, resumable units, replicates.csv and the findings it writes."""
import subprocess
import sys

import pandas as pd
import pytest

from kit import replicate
from kit.replicate import ReplicateError, Unit
from tests.conftest import write_notebook


def test_the_plan_covers_tiny_families_then_the_pretrained_notebooks():
    units = replicate.plan(families=[0, 1], seeds=[0, 1, 2], models=["tiny", "smollm2-135m"])
    tiny = [u for u in units if u.model == "tiny"]
    assert len(tiny) == 2 * len(replicate.NOTEBOOKS) and {u.family for u in tiny} == {0, 1}
    smol = [u for u in units if u.model == "smollm2-135m"]
    assert [u.notebook[:2] for u in smol] == [k for k in replicate.PRETRAINED["smollm2-135m"] for _ in range(3)]
    assert all(u.family is None for u in smol) and [u.seeds for u in smol[:3]] == [(0,), (1,), (2,)]  # a unit per seed
    assert tiny[0].params() == {"TINY_SEEDS": [0], "SEEDS": [0, 1, 2], "RUN_TAG": "replicate"}
    p = smol[1].params()      # the notebook's smollm2 parameter file, with the unit's seed
    assert p["MODEL"] == "smollm2-135m" and p["SEEDS"] == [1] and p["RUN_TAG"] == "replicate"
    assert smol[0].params()["FORGET_ITEMS"] > 0                               # the seed draws the items it forgets
    by_notebook = {u.notebook[:2]: u for u in smol}
    assert by_notebook["08"].params()["OBJECTIVES"] == ["ga", "gd", "npo"]    # 08: only what its claims compare
    assert len(by_notebook["12"].params()["OBJECTIVES"]) >= 5                  # 12: enough runs for a rank correlation
    with pytest.raises(ReplicateError, match="Unknown notebook '11'"):
        replicate.plan(notebooks=["11"])
    with pytest.raises(ReplicateError, match="Unknown model 'gpt2'"):
        replicate.plan(models=["gpt2"])


def _probe(folder):
    """A notebook that records one observation per replicate, as the claim-bearing notebooks do."""
    write_notebook(folder / "04_ga_and_wga.ipynb",
                   'TINY_SEEDS: list = []  # families\nSEEDS: list = [0]  # run seeds\nRUN_TAG: str = "default"  # tag',
                   "import kit\nfrom kit import claims\nledger = claims.Ledger('tiny')\n"
                   "for rep in claims.replicates('tiny', TINY_SEEDS, SEEDS):\n"
                   "    ledger.add('wga.matched', 0.1 + 0.01 * rep.family + 0.001 * rep.seed, rep)\n"
                   "kit.record('04_ga_and_wga', RUN_TAG, observations=ledger.rows)")


@pytest.mark.slow
def test_units_resume_and_findings_are_written_from_every_row(tmp_path, monkeypatch):
    _probe(tmp_path)
    monkeypatch.setattr(replicate, "NOTEBOOKS_DIR", tmp_path)
    monkeypatch.setattr(replicate, "_fingerprint", lambda unit: f"fp{unit.family}")
    units = replicate.plan(families=[0, 1], seeds=[0, 1], models=["tiny"], notebooks=["04"])
    log = []
    table = replicate.run(units, tmp_path, log=log.append)
    rows = pd.read_csv(tmp_path / "replicates.csv")
    assert len(rows) == 4 and set(rows.fingerprint) == {"fp0", "fp1"} and set(rows.claim) == {"wga.matched"}
    row = table.set_index("claim").loc["wga.matched"]
    assert row.n == 4 and row.families == 2 and row.basis == "t over 2 family means" and row.k_of_n == "4/4"
    findings = (tmp_path / "FINDINGS.md").read_text()
    assert "`wga.matched`" in findings and "WGA keeps more retain knowledge" in findings and "kit 0.1.0" in findings
    assert pd.read_csv(tmp_path / "findings.csv").claim.tolist() == ["wga.matched"]
    assert "`npo.shrink` on tiny" in findings                      # what is still missing is listed
    log.clear()
    replicate.run(units, tmp_path, log=log.append)                 # finished units are skipped
    assert "2 already in replicates.csv, 0 to run" in log[0] and len(pd.read_csv(tmp_path / "replicates.csv")) == 4
    more = replicate.plan(families=[0, 1, 2], seeds=[0, 1], models=["tiny"], notebooks=["04"])
    replicate.run(more, tmp_path, log=log.append)                  # a new family: only it runs
    assert len(pd.read_csv(tmp_path / "replicates.csv")) == 6


@pytest.mark.slow
def test_the_command_line_refuses_bad_arguments():
    run = subprocess.run([sys.executable, "-m", "kit", "replicate", "--families", "a,b"], capture_output=True, text=True)
    assert run.returncode == 2 and "comma-separated whole numbers" in run.stderr
    run = subprocess.run([sys.executable, "-m", "kit", "replicate", "--notebooks", "03"], capture_output=True, text=True)
    assert run.returncode == 2 and "Unknown notebook '03'" in run.stderr


def test_unit_done_needs_every_seed():
    rows = pd.DataFrame([{"notebook": "04_ga_and_wga", "model": "tiny", "family": 0, "seed": 0},
                         {"notebook": "04_ga_and_wga", "model": "tiny", "family": 0, "seed": 1}])
    assert replicate.done(Unit("04_ga_and_wga", "tiny", 0, (0, 1)), rows)
    assert not replicate.done(Unit("04_ga_and_wga", "tiny", 0, (0, 1, 2)), rows)
    assert not replicate.done(Unit("04_ga_and_wga", "tiny", 1, (0,)), rows)
    mixed = pd.concat([rows, pd.DataFrame([{"notebook": "04_ga_and_wga", "model": "smollm2-135m", "family": None, "seed": 0}])])
    assert replicate.done(Unit("04_ga_and_wga", "tiny", 0, (0, 1)), mixed.astype({"family": float}))   # 0.0 is family 0
    assert replicate.done(Unit("04_ga_and_wga", "smollm2-135m", None, (0,)), mixed)


def test_findings_table_cells_escape_pipes():
    rows = pd.DataFrame([{"notebook": "04_ga_and_wga", "model": "tiny", "family": f, "fingerprint": "x", "seed": s,
                          "claim": "ga.shallow", "value": 1.0 + 0.1 * f + 0.01 * s, "date": "2026-12-03"}
                         for f in (0, 1) for s in (0, 1)])
    text = replicate.markdown(replicate.findings(rows), rows)
    line = next(ln for ln in text.splitlines() if ln.startswith("| `ga.shallow`"))
    assert "log(\\|e_u\\|" in line and line.count(" | ") == 8 and "2 family means" in line and "**holds**" in line
    pending = next(ln for ln in text.splitlines() if ln.startswith("Not measured yet"))
    assert "`tofu.npo_utility` on smollm2-135m" in pending and "`tofu.npo_quality` on smollm2-135m" not in pending
    assert "`tofu.npo_quality` is not measured on smollm2-135m: forget quality is a test against a retain model" in text


def test_replicates_csv_round_trips_fingerprints_and_families(tmp_path):
    rows = pd.DataFrame([{"notebook": "05_npo_and_tnpo", "model": "tiny", "family": 0, "fingerprint": "12776161e965",
                          "seed": 0, "claim": "npo.shrink", "value": 0.99},
                         {"notebook": "05_npo_and_tnpo", "model": "smollm2-135m", "family": pd.NA,
                          "fingerprint": "0123456789ab", "seed": 0, "claim": "npo.shrink", "value": 0.98}])
    path = tmp_path / "replicates.csv"
    for _ in range(2):                                          # written, read and written again: nothing drifts
        rows = rows.reindex(columns=replicate.COLUMNS)
        path.write_text(rows.to_csv(index=False))
        rows = replicate.read(path)
    assert list(rows.fingerprint) == ["12776161e965", "0123456789ab"]    # a hex digest, not the float 1.28e972 = inf
    assert rows.family.iloc[0] == 0 and pd.isna(rows.family.iloc[1])
    assert path.read_text().splitlines()[1].startswith("05_npo_and_tnpo,tiny,0,12776161e965,0,")
