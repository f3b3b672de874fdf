"""Parameter sweeps: run a notebook once per parameter combination with papermill.

    python -m kit sweep notebooks/04_ga_and_wga.ipynb --grid grid.yaml -p LR 1e-4,5e-4 --jobs 2

A grid maps each notebook parameter to the list of values to try (a scalar is one fixed value;
a list-valued parameter such as OBJECTIVES is written as a list of lists). Every combination
runs in its own papermill process, `jobs` at a time, into `<out>/<id>/` where the id is a hash of
the notebook and its parameters. Each run is

- resumable: a finished run's folder is kept and skipped on the next call; a run that failed or
  was stopped restarts in the folder of its earlier attempt, so the tables its notebook stored
  as it went (kit.paths.stored_frame: notebook 11's runs, 12's audited models) are read back, not measured again;
- atomic: the run writes into `<out>/.partial-<id>/` (its figures and `kit.record` numbers go
  there through $KIT_OUTPUT_DIR) and is renamed to `<out>/<id>/` only once it finished;
- isolated: a failing run moves to `<out>/.failed/<id>/` and the others go on; the summary names
  the run, the notebook cell and the error.

At the end `<out>/summary.csv` and `summary.parquet` hold one row per run (its parameters and
every number its notebook recorded with `kit.record`) and `summary.png` plots the recorded
numbers against the swept parameters.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from kit.paths import OUTPUT_ENV, ROOT, atomic

_META = ["run", "status", "seconds", "cell", "error"]


class SweepError(ValueError):
    """A sweep that cannot start (unknown notebook or parameter, empty grid); says the fix."""


@dataclass
class RunResult:
    run: str                      # the run's id (folder name)
    params: dict
    status: str                   # "done", "skipped" (finished earlier) or "failed"
    seconds: float = 0.0
    cell: str = ""                # where a failed run stopped
    error: str = ""


@dataclass
class Sweep:
    folder: Path
    runs: list[RunResult]
    table: pd.DataFrame = field(repr=False)

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if r.status == "failed"]


# ---------------------------------------------------------------- the grid
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")   # 1e-3: a string to YAML 1.1


def _numbers(value):
    """YAML 1.1 reads 1e-3 (no dot) as a string; such numbers become floats (also inside lists)."""
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return float(value) if isinstance(value, str) and _EXPONENT.fullmatch(value) else value


def parse_values(text: str) -> list:
    """`-p NAME v1,v2`: the comma-separated values, each read as YAML ("1e-3" -> 0.001, "[ga,npo]" -> a list)."""
    try:
        values = yaml.safe_load(f"[{text}]")
    except yaml.YAMLError as err:
        raise SweepError(f"Cannot read the values {text!r}: {err}. Write them as v1,v2 (lists as [a,b]).") from None
    if not values:
        raise SweepError(f"No values in {text!r}; write -p NAME v1,v2.")
    return _numbers(values)


def read_grid(path: str | Path) -> dict[str, list]:
    """A YAML file {parameter: [values]} (a scalar is one fixed value)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"Grid file {path} not found.")
    grid = yaml.safe_load(path.read_text()) or {}
    if not isinstance(grid, dict):
        raise SweepError(f"{path} must map parameter names to lists of values, not a {type(grid).__name__}.")
    return {k: _numbers(v if isinstance(v, list) else [v]) for k, v in grid.items()}


def combinations(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in the grid's order."""
    for name, values in grid.items():
        if not values:
            raise SweepError(f"Parameter {name!r} has an empty list of values; give at least one.")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def run_id(notebook: str | Path, params: dict) -> str:
    """A short hash of the notebook's name and the parameters (the run's folder name)."""
    key = json.dumps({"notebook": Path(notebook).name, "parameters": params}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def notebook_parameters(notebook: str | Path) -> list[str]:
    """Names assigned in the notebook's cell tagged `parameters` (read with ast, comments and all)."""
    import ast

    import nbformat
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise SweepError(f"{Path(notebook).name} has no cell tagged `parameters`; tag one so papermill can set values.")
    names = []
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def check_parameters(notebook: Path, names) -> None:
    """Every swept name must be a parameter of the notebook (papermill would silently ignore it)."""
    known = notebook_parameters(notebook)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SweepError(f"{notebook.name} has no parameter {unknown[0]!r}; its parameters are: {', '.join(known)}.")


# ---------------------------------------------------------------- one run
def _failure(executed: Path, log: str) -> tuple[str, str]:
    """(cell, error) of a failed run, from the executed notebook or papermill's log."""
    import nbformat
    if executed.exists():
        nb = nbformat.read(executed, as_version=4)
        skip = {"injected-parameters", "papermill-error-cell-tag"}
        cells = [c for c in nb.cells if not skip & set(c.metadata.get("tags", []))]
        for i, cell in enumerate(cells, 1):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
                    return f"cell {i}: {first[:80]}", f"{out['ename']}: {out['evalue']}"[:500]
    lines = [ln for ln in log.strip().splitlines() if ln.strip()]
    return "(before the first cell)", (lines[-1] if lines else "papermill failed without a message")[:500]


# a kernel that died before its first reply: on a busy machine, runs started together can pick the
# same free ports; the notebook never ran, so the run is started again
KERNEL_START_FAILED = ("Kernel died before replying to kernel_info", "Kernel didn't respond in")
KERNEL_RETRIES = 2


def _execute(notebook: Path, params: dict, out: Path, threads: int, timeout: float | None) -> RunResult:
    rid = run_id(notebook, params)
    final = out / rid
    if (final / "status.json").exists():
        return RunResult(rid, params, "skipped")
    partial = out / f".partial-{rid}"
    earlier = out / ".failed" / rid        # a stopped attempt left `partial`, a failed one this folder
    if earlier.exists() and not partial.exists():
        os.replace(earlier, partial)
    for stale in ("status.json", "papermill.log", notebook.name):
        (partial / stale).unlink(missing_ok=True)
    partial.mkdir(parents=True, exist_ok=True)     # what the earlier attempt stored (kit.paths.stored_frame) is read back
    (partial / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    executed = partial / notebook.name
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(executed), "-f", str(partial / "params.yaml"),
           "--cwd", str(notebook.parent), "--no-progress-bar"]
    if timeout:
        cmd += ["--execution-timeout", str(int(timeout))]
    env = {**os.environ, OUTPUT_ENV: str(partial), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start, log = time.perf_counter(), ""
    for attempt in range(1 + KERNEL_RETRIES):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        log += proc.stdout + proc.stderr
        if proc.returncode == 0 or not any(m in proc.stderr for m in KERNEL_START_FAILED):
            break
        again = "starting the run again" if attempt < KERNEL_RETRIES else "giving up"
        log += f"\n[kit sweep] the kernel did not start (attempt {attempt + 1}); {again}\n"
    seconds = time.perf_counter() - start
    (partial / "papermill.log").write_text(log)
    status = {"notebook": notebook.name, "params": params, "seconds": round(seconds, 2)}
    if proc.returncode == 0:
        (partial / "status.json").write_text(json.dumps({**status, "status": "done"}, indent=2, default=str))
        os.replace(partial, final)
        shutil.rmtree(out / ".failed" / rid, ignore_errors=True)     # an earlier failure of this run
        return RunResult(rid, params, "done", seconds)
    cell, error = _failure(executed, proc.stderr)
    (partial / "status.json").write_text(json.dumps({**status, "status": "failed", "cell": cell, "error": error},
                                                    indent=2, default=str))
    failed = out / ".failed" / rid
    shutil.rmtree(failed, ignore_errors=True)
    failed.parent.mkdir(exist_ok=True)
    os.replace(partial, failed)
    return RunResult(rid, params, "failed", seconds, cell, error)


# ---------------------------------------------------------------- the summary
def _cell_value(v):
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def collect(out: str | Path) -> pd.DataFrame:
    """One row per run under `out` (finished and failed): run, status, parameters and recorded numbers."""
    out, rows = Path(out), []
    folders = [p for p in sorted(out.iterdir()) if p.is_dir() and not p.name.startswith(".")] if out.exists() else []
    folders += sorted((out / ".failed").iterdir()) if (out / ".failed").exists() else []
    for folder in folders:
        if not (folder / "status.json").exists():
            continue
        status = json.loads((folder / "status.json").read_text())
        row = {"run": folder.name, "status": status["status"], "seconds": status["seconds"],
               "cell": status.get("cell", ""), "error": status.get("error", "")}
        row.update({k: _cell_value(v) for k, v in status["params"].items()})
        for path in sorted(folder.glob("runs/*/results/*.json")):
            flat = pd.json_normalize(json.loads(path.read_text()), sep=".").iloc[0].to_dict()
            row.update({k: _cell_value(v) for k, v in flat.items() if k not in row})
        rows.append(row)
    return pd.DataFrame(rows)


def _figure(table: pd.DataFrame, params: list[str], path: Path, most: int = 12) -> Path | None:
    """Every recorded number of the finished runs against the swept parameters, one panel each."""
    from matplotlib.figure import Figure           # no pyplot: the caller's backend and open figures stay as they are
    done = table[table.status == "done"]
    skip = set(_META) | set(params)
    numbers = [c for c in done.columns if c not in skip and pd.api.types.is_numeric_dtype(done[c])
               and done[c].notna().any() and not pd.api.types.is_bool_dtype(done[c])][:most]
    if done.empty or not numbers:
        return None
    varied = [p for p in params if done[p].astype(str).nunique() > 1] or params[:1]
    labels = done[varied].astype(str).agg(", ".join, axis=1) if varied else done["run"]
    cols = min(3, len(numbers))
    rows = -(-len(numbers) // cols)
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, numbers):
        ax.plot(range(len(done)), done[name].to_numpy(), "o-" if len(done) > 1 else "o")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(done)), labels, rotation=30, ha="right", fontsize=7)
    for ax in axes.flat[len(numbers):]:
        ax.set_visible(False)
    fig.suptitle(f"{len(done)} runs by {', '.join(varied)}", fontsize=10)
    fig.tight_layout()
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def _write_atomic(table: pd.DataFrame, path: Path) -> None:
    with atomic(path) as tmp:
        table.to_csv(tmp, index=False) if path.suffix == ".csv" else table.to_parquet(tmp, index=False)


# ---------------------------------------------------------------- the sweep
def sweep(notebook: str | Path, grid: dict[str, list], out: str | Path | None = None, jobs: int = 1,
          timeout: float | None = None, log=print, threads: int | None = None, executor: str = "local",
          resources=None) -> Sweep:
    """Run `notebook` once per combination of `grid`, `jobs` processes at a time (or as cluster jobs).

    Args:
        notebook: an .ipynb with a cell tagged `parameters`.
        grid: {parameter: [values]}; see the module doc (read_grid / parse_values build one).
        out: the sweep folder (default runs/sweeps/<notebook name>/).
        jobs: runs at a time; each gets cpu_count // jobs threads.
        timeout: seconds any one cell may run (papermill's execution timeout).
        threads: CPU threads per run (default cpu_count // jobs); 1 leaves the other cores to other work.
        executor: "local" (this machine's processes), "slurm" or "submitit-local": one submitit job
            per run, all submitted at once (kit.cluster); `jobs` is then the scheduler's business.
        resources: kit.cluster.Resources of each job (CPUs, GPUs, memory, time, partition).
    Returns:
        Sweep(folder, runs, table); the table is also written as summary.csv / summary.parquet.
    """
    notebook = Path(notebook).resolve()
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise SweepError(f"Notebook {notebook} not found; pass a path such as notebooks/04_ga_and_wga.ipynb.")
    if not isinstance(jobs, int) or jobs < 1:
        raise SweepError(f"jobs must be a positive integer, got {jobs!r}.")
    combos = combinations(grid)
    check_parameters(notebook, grid)
    out = (Path(out) if out is not None else ROOT / "runs" / "sweeps" / notebook.stem).resolve()  # kernels run elsewhere
    out.mkdir(parents=True, exist_ok=True)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise SweepError(f"threads must be a positive integer, got {threads!r}.")
    if executor != "local":
        from kit.cluster import Resources, check
        resources = resources or Resources()
        check(executor, resources)
        threads = resources.cpus
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    where = f"{jobs} at a time" if executor == "local" else f"one {executor} job each"
    log(f"{notebook.name}: {len(combos)} runs into {out} ({where}, {threads} threads each)")
    results = []

    def report(params, result):
        results.append(result)
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        extra = f" at {result.cell}: {result.error}" if result.status == "failed" else ""
        log(f"[{len(results)}/{len(combos)}] {result.run} {result.status}"
            f"{f' in {result.seconds:.0f} s' if result.seconds else ''} ({shown}){extra}")
        return result

    if executor == "local":
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            runs = list(pool.map(lambda p: report(p, _execute(notebook, p, out, threads, timeout)), combos))
    else:
        from kit.cluster import make_executor, run_jobs

        def as_run(params, result):            # a job the scheduler killed is a failed run
            if isinstance(result, RunResult):
                return result
            last = [ln for ln in str(result).strip().splitlines() if ln.strip()] or [type(result).__name__]
            return RunResult(run_id(notebook, params), params, "failed", 0.0, f"({executor} job)", last[-1][:500])
        ex = make_executor(executor, out / ".submitit", resources, name=f"kit-{notebook.stem}")
        done = run_jobs(ex, _execute, [(notebook, p, out, threads, timeout) for p in combos],
                        on_done=lambda i, r: report(combos[i], as_run(combos[i], r)))
        runs = [as_run(p, r) for p, r in zip(combos, done)]
    table = collect(out)
    if len(table):                                          # this sweep's runs, in the grid's order
        order = {r.run: i for i, r in enumerate(runs)}
        table = table[table.run.isin(order)].sort_values("run", key=lambda s: s.map(order)).reset_index(drop=True)
        _write_atomic(table, out / "summary.csv")
        _write_atomic(table, out / "summary.parquet")
        _figure(table, list(grid), out / "summary.png")
    result = Sweep(out, runs, table)
    log(f"{sum(r.status == 'done' for r in runs)} done, {sum(r.status == 'skipped' for r in runs)} skipped "
        f"(finished before), {len(result.failed)} failed; table: {out / 'summary.csv'}")
    for r in result.failed:
        log(f"  failed {r.run} ({out / '.failed' / r.run}) at {r.cell}: {r.error}")
    return result
