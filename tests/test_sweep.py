"""`python -m kit sweep`: grids, resumable / atomic / isolated runs, the summary table and figure."""
import glob
import json
import os
import subprocess
import sys

import pandas as pd
import papermill
import pytest

from kit.paths import ROOT
from kit.sweep import SweepError, combinations, notebook_parameters, parse_values, read_grid, run_id, sweep
from tests.conftest import write_notebook

NOTEBOOKS = sorted(glob.glob(str(ROOT / "notebooks" / "[0-9][0-9]_*.ipynb")))


def _probe_notebook(folder):
    """A three-cell notebook that records X² and fails when WORD is 'boom' (runs in ~3 s)."""
    return write_notebook(folder / "probe.ipynb",
                          'X: int = 1  # a number\nWORD: str = "ok"  # "boom" fails\nRUN_TAG: str = "default"',
                          "import kit\nfrom kit.paths import figures_dir\n"
                          "if WORD == 'boom':\n    raise ValueError(f'boom requested with X={X}')",
                          "(figures_dir(RUN_TAG) / 'probe.txt').write_text(str(X))\n"
                          "kit.record('probe', RUN_TAG, x=X, square=X * X, nested={'cube': X ** 3})")


def test_grid_values_are_read_as_yaml(tmp_path):
    assert parse_values("1e-3,2,ga") == [0.001, 2, "ga"]
    assert parse_values("[ga,npo],[ga]") == [["ga", "npo"], ["ga"]]       # list-valued parameters
    (tmp_path / "g.yaml").write_text("LR: [0.001, 0.01]\nMODEL: tiny\nOBJECTIVES: [[ga], [npo]]\n")
    grid = read_grid(tmp_path / "g.yaml")
    assert grid == {"LR": [0.001, 0.01], "MODEL": ["tiny"], "OBJECTIVES": [["ga"], ["npo"]]}
    combos = combinations(grid)
    assert len(combos) == 4 and combos[0] == {"LR": 0.001, "MODEL": "tiny", "OBJECTIVES": ["ga"]}
    assert run_id("a.ipynb", {"X": 1}) != run_id("a.ipynb", {"X": 2}) == run_id("dir/a.ipynb", {"X": 2})
    with pytest.raises(SweepError, match="'LR' has an empty list"):
        combinations({"LR": []})
    with pytest.raises(SweepError, match="not found"):
        read_grid(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.rsplit("/", 1)[-1])
def test_every_notebook_has_parameters_papermill_can_read(path):
    """The sweep checks names against the `parameters` cell; papermill's own reader must see the same."""
    ours = notebook_parameters(path)
    assert "RUN_TAG" in ours
    assert set(papermill.inspect_notebook(path)) == set(ours)


def test_unknown_parameter_is_refused_before_anything_runs(tmp_path):
    nb = _probe_notebook(tmp_path)
    with pytest.raises(SweepError, match="has no parameter 'Y'; its parameters are: X, WORD, RUN_TAG"):
        sweep(nb, {"Y": [1]}, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    cli = subprocess.run([sys.executable, "-m", "kit", "sweep", str(nb), "-p", "Y", "1,2"], capture_output=True, text=True)
    assert cli.returncode == 2 and "has no parameter 'Y'" in cli.stderr


@pytest.mark.slow
def test_sweep_is_resumable_atomic_and_isolates_failures(tmp_path):
    nb, out = _probe_notebook(tmp_path), tmp_path / "out"
    grid = {"X": [2, 3], "WORD": ["ok", "boom"]}
    first = sweep(nb, grid, out, jobs=2, log=lambda *_: None)
    assert sorted(r.status for r in first.runs) == ["done", "done", "failed", "failed"]
    for r in first.failed:                                  # the summary names the run, the cell and the error
        assert r.cell.startswith("cell 2: import kit") and r.error == f"ValueError: boom requested with X={r.params['X']}"
        assert (out / ".failed" / r.run / "probe.ipynb").exists()
    done = [r for r in first.runs if r.status == "done"]
    for r in done:                                          # everything the run wrote is inside its folder
        folder = out / r.run
        assert json.loads((folder / "runs/default/results/probe.json").read_text())["square"] == r.params["X"] ** 2
        assert (folder / "figures/default/probe.txt").read_text() == str(r.params["X"])
        assert (folder / "probe.ipynb").exists() and (folder / "params.yaml").exists()
    assert not list(out.glob(".partial-*"))
    table = pd.read_csv(out / "summary.csv")
    assert len(table) == 4 and set(table.status) == {"done", "failed"}
    ok = table[table.status == "done"].set_index("X")
    assert ok.loc[3, "square"] == 9 and ok.loc[2, "nested.cube"] == 8
    assert pd.read_parquet(out / "summary.parquet").shape == table.shape
    assert (out / "summary.png").stat().st_size > 1000
    stamps = {r.run: (out / r.run / "status.json").stat().st_mtime_ns for r in done}

    again = sweep(nb, grid, out, jobs=2, log=lambda *_: None)          # finished runs are skipped, failed rerun
    assert sorted(r.status for r in again.runs) == ["failed", "failed", "skipped", "skipped"]
    assert {r.run: (out / r.run / "status.json").stat().st_mtime_ns for r in done} == stamps
    assert len(again.table) == 4


def _storing_notebook(folder):
    """A notebook that stores one table (kit.paths.stored_frame), counting each measurement in
    COUNTER, then fails while the file STOP exists."""
    return write_notebook(folder / "storing.ipynb",
                          'COUNTER: str = "counter"  # a file\nSTOP: str = "stop"  # a file\nRUN_TAG: str = "default"',
                          "from pathlib import Path\nimport pandas as pd\nfrom kit.paths import runs_dir, stored_frame\n"
                          "def measure():\n    Path(COUNTER).write_text(str(int(Path(COUNTER).read_text() or 0) + 1))\n"
                          "    return pd.DataFrame({'value': [42]})\n"
                          "stored_frame(runs_dir(RUN_TAG) / 'store', {'what': 'answer'}, measure)\n"
                          "if Path(STOP).exists():\n    raise RuntimeError('stopped after storing')")


@pytest.mark.slow
def test_a_retried_run_reads_back_what_its_earlier_attempt_stored(tmp_path):
    nb, out, counter, stop = _storing_notebook(tmp_path), tmp_path / "out", tmp_path / "counter", tmp_path / "stop"
    counter.write_text("0")
    stop.touch()
    grid = {"COUNTER": [str(counter)], "STOP": [str(stop)]}
    assert [r.status for r in sweep(nb, grid, out, log=lambda *_: None).runs] == ["failed"]
    assert counter.read_text() == "1"
    rid = next((out / ".failed").iterdir()).name
    os.replace(out / ".failed" / rid, out / f".partial-{rid}")        # as a run stopped part-way leaves it
    assert [r.status for r in sweep(nb, grid, out, log=lambda *_: None).runs] == ["failed"]
    stop.unlink()
    assert [r.status for r in sweep(nb, grid, out, log=lambda *_: None).runs] == ["done"]
    assert counter.read_text() == "1"                                # measured once over three attempts
    assert not (out / ".failed" / rid).exists() and not (out / f".partial-{rid}").exists()
    assert len(list((out / rid / "runs/default/store").glob("*.parquet"))) == 1


def test_a_run_whose_kernel_never_started_is_started_again(tmp_path, monkeypatch):
    """Kernels started together on a busy machine can collide on ports and die before their first
    reply; the sweep starts such a run again (up to KERNEL_RETRIES times) instead of failing it."""
    import subprocess as sp

    from kit import sweep as sweep_module
    calls = []

    def flaky(cmd, **kwargs):
        calls.append(cmd)
        if len(calls) == 1:
            return sp.CompletedProcess(cmd, 1, "", "RuntimeError: Kernel died before replying to kernel_info")
        return sp.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sweep_module.subprocess, "run", flaky)
    result = sweep_module._execute(_probe_notebook(tmp_path), {"X": 2}, tmp_path / "out", threads=1, timeout=None)
    assert result.status == "done" and len(calls) == 2
    assert "the kernel did not start (attempt 1)" in (tmp_path / "out" / result.run / "papermill.log").read_text()
    calls.clear()

    def broken(cmd, **kwargs):                  # any other failure is the run's own: no retry
        calls.append(cmd)
        return sp.CompletedProcess(cmd, 1, "", "ValueError: boom")

    monkeypatch.setattr(sweep_module.subprocess, "run", broken)
    assert sweep_module._execute(_probe_notebook(tmp_path), {"X": 3}, tmp_path / "out", threads=1, timeout=None).status == "failed"
    assert len(calls) == 1


@pytest.mark.slow
def test_a_numbered_notebook_sweeps(tmp_path):
    """A real notebook, two values at a time, through the command line (relative --out: the kernels
    run in the notebook's folder, the outputs must still land in the run folders)."""
    out = tmp_path / "quick"
    cli = subprocess.run([sys.executable, "-m", "kit", "sweep", str(ROOT / "notebooks/00_quickstart.ipynb"),
                          "-p", "EPOCHS", "1,2", "-p", "OBJECTIVES", "[ga]", "-p", "N_BOOT", "50", "--jobs", "2",
                          "--out", "quick"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    said = cli.stdout + cli.stderr
    table = pd.read_csv(out / "summary.csv")
    assert sorted(table.EPOCHS) == [1, 2] and (table.status == "done").all(), said
    assert (table["e_u_start.ga"] < 0).all(), table.to_string()         # GA's e_u = -||grad R_u||^2
    assert "2 done, 0 skipped" in cli.stdout, said
    assert len(list(out.glob("*/figures/default/00_quickstart.png"))) == 2
    assert len(list(out.glob("*/runs/default/results/00_quickstart.json"))) == 2


def test_threads_per_run_must_be_positive(tmp_path):
    nb = _probe_notebook(tmp_path)
    with pytest.raises(SweepError, match="threads must be a positive integer, got 0"):
        sweep(nb, {"X": [1]}, tmp_path / "out", threads=0)


@pytest.mark.slow
def test_a_sweep_through_submitits_local_executor_keeps_the_semantics(tmp_path):
    """Two runs as submitit jobs (its local executor stands in for Slurm): same folders, summary,
    resumption and failure isolation as a local sweep."""
    from kit.cluster import Resources
    nb, out = _probe_notebook(tmp_path), tmp_path / "out"
    said = []
    first = sweep(nb, {"X": [2], "WORD": ["ok", "boom"]}, out, executor="submitit-local",
                  resources=Resources(cpus=1, time_min=5), log=said.append)
    assert sorted(r.status for r in first.runs) == ["done", "failed"], said
    ok = next(r for r in first.runs if r.status == "done")
    assert json.loads((out / ok.run / "runs/default/results/probe.json").read_text())["square"] == 4
    assert first.failed[0].error == "ValueError: boom requested with X=2"
    assert list((out / ".submitit").iterdir()) and "one submitit-local job each" in said[0]
    assert len(pd.read_csv(out / "summary.csv")) == 2
    again = sweep(nb, {"X": [2], "WORD": ["ok"]}, out, executor="submitit-local", resources=Resources(cpus=1),
                  log=lambda *_: None)
    assert [r.status for r in again.runs] == ["skipped"]


def test_cluster_options_are_checked_before_anything_is_submitted(tmp_path):
    from kit.cluster import ClusterError, Resources
    nb = _probe_notebook(tmp_path)
    with pytest.raises(ClusterError, match="Unknown executor 'pbs'; use one of local, submitit-local, slurm"):
        sweep(nb, {"X": [1]}, tmp_path / "out", executor="pbs")
    with pytest.raises(ClusterError, match="needs a partition: pass --partition"):
        sweep(nb, {"X": [1]}, tmp_path / "out", executor="slurm", resources=Resources())
    with pytest.raises(ClusterError, match="cpus must be a positive integer, got 0"):
        sweep(nb, {"X": [1]}, tmp_path / "out", executor="submitit-local", resources=Resources(cpus=0))
    cli = subprocess.run([sys.executable, "-m", "kit", "sweep", str(nb), "-p", "X", "1", "--executor", "slurm"],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "needs a partition" in cli.stderr


@pytest.mark.slow
def test_a_job_that_dies_without_a_result_is_returned_as_its_error(tmp_path):
    import os

    from kit.cluster import Resources, make_executor, run_jobs
    ex = make_executor("submitit-local", tmp_path, Resources(cpus=1, time_min=2))
    results = run_jobs(ex, os._exit, [(3,)])                  # the process ends before any result exists
    assert isinstance(results[0], Exception), results                  # kit.sweep turns it into a failed run
