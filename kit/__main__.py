"""Command line:
- `python -m kit data` rewrites data/ from the generator;
- `python -m kit models [--tiny-seeds 0,1,2]` builds the built-in models into the cache ahead of
  time (tiny's families for the given seeds; default: the default family);
- `python -m kit tofu-score MODEL_LOG [--retain RETAIN_LOG]` prints TOFU's summary numbers of an
  evaluation log (TOFU's eval_log_aggregated.json layout, or one the kit saved) as one JSON object;
- `python -m kit sweep NOTEBOOK [--grid GRID.yaml] [-p NAME v1,v2]... [--jobs N]` runs a notebook
  once per parameter combination (kit.sweep); exit status 1 when a run failed; `--dry-run` checks
  the notebook and grid and lists the runs; `--executor slurm --partition P [--cpus --gpus --mem-gb
  --time]` makes each run a Slurm job through submitit (kit.cluster; `submitit-local` runs them as
  local jobs);
- `python -m kit replicate [--families 0,1,2,3,4] [--seeds 0,1,2] [--models tiny,smollm2-135m]
  [--notebooks 04,05,...] [--threads N] [--collect]` runs the replication study (kit.replicate), resumable, and
  writes replicates.csv, findings.csv and FINDINGS.md (`--dry-run`: the units still to run).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from kit.paths import DATA_DIR

DATA_FILES = {  # file in data/<source>/ -> split of kit.data
    "builtin": ["full", "holdout10", "world_facts", "real_authors"],
    "real": ["forget", "retain", "real_authors", "world_facts"],
}


def write_data() -> list[str]:
    """Write the generated benchmark as JSON lines under data/ (one file per base split)."""
    from kit.data import idk_answers, load_split
    written = []
    for source, splits in DATA_FILES.items():
        folder = DATA_DIR / source
        folder.mkdir(parents=True, exist_ok=True)
        for split in splits:
            path = folder / f"{split}.jsonl"
            rows = load_split(split, source).to_list()
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            written.append(str(path.relative_to(DATA_DIR.parent)))
    idk = DATA_DIR / "idontknow.jsonl"
    idk.write_text("".join(a + "\n" for a in idk_answers()))
    return written + [str(idk.relative_to(DATA_DIR.parent))]


def _cluster_options(parser) -> None:
    """--executor and a job's resources (kit.cluster), shared by sweep and replicate."""
    parser.add_argument("--executor", default="local", help="local (default), slurm or submitit-local: one job per run")
    parser.add_argument("--partition", help="Slurm partition")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs per job (and torch threads per run)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per job")
    parser.add_argument("--mem-gb", type=float, default=16, help="memory per job in GB")
    parser.add_argument("--time", type=int, default=120, help="time limit per job in minutes")


def _resources(args):
    from kit.cluster import Resources
    return Resources(cpus=args.cpus, gpus=args.gpus, mem_gb=args.mem_gb, time_min=args.time, partition=args.partition)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kit")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("data", help="rewrite data/ from the generator")
    mod = sub.add_parser("models", help="build tiny's four models and convert smollm2-135m into the cache")
    mod.add_argument("--tiny-seeds", default="", help="comma-separated tiny families to build (default: $KIT_TINY_SEED or 0)")
    score = sub.add_parser("tofu-score", help="model utility / forget quality of a TOFU-format evaluation log")
    score.add_argument("model_log", help="eval_log_aggregated.json of the evaluated model")
    score.add_argument("--retain", dest="retain_log", help="the retain model's log (adds forget quality)")
    score.add_argument("--truth-ratio", choices=["geometric", "arithmetic"], default="geometric")
    sw = sub.add_parser("sweep", help="run a notebook once per parameter combination (papermill)")
    sw.add_argument("notebook", help="the .ipynb to run")
    sw.add_argument("--grid", help="YAML file {parameter: [values]}")
    sw.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUES"),
                    help="a parameter and its comma-separated values (repeatable; overrides --grid)")
    sw.add_argument("--out", help="sweep folder (default runs/sweeps/<notebook>/)")
    sw.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    sw.add_argument("--timeout", type=float, help="seconds any one cell may take")
    sw.add_argument("--dry-run", action="store_true", help="check the notebook and grid, list the runs, run nothing")
    _cluster_options(sw)
    rep = sub.add_parser("replicate", help="the replication study: claims over tiny families, run seeds and models")
    rep.add_argument("--families", default="0,1,2,3,4", help="tiny families (comma-separated seeds)")
    rep.add_argument("--seeds", default="0,1,2", help="run seeds per family / model")
    rep.add_argument("--models", default="tiny,smollm2-135m", help="tiny and/or smollm2-135m")
    rep.add_argument("--notebooks", default="", help="notebook numbers, e.g. 04,05 (default: all claim-bearing)")
    rep.add_argument("--timeout", type=float, help="seconds any one cell may take")
    rep.add_argument("--threads", type=int, help="CPU threads per notebook run (default: all cores)")
    rep.add_argument("--collect", action="store_true", help="only rewrite findings.csv and FINDINGS.md")
    rep.add_argument("--dry-run", action="store_true", help="list the units still to run, run nothing")
    _cluster_options(rep)
    args = parser.parse_args(argv)
    if args.command == "data":
        for path in write_data():
            print(path)
    elif args.command == "models":
        from kit.models import ModelError, TinyRecipe, build_tiny_family, load_model, tiny_seed
        try:
            seeds = [tiny_seed(s) for s in args.tiny_seeds.split(",") if s.strip()] or [tiny_seed()]
        except ModelError as err:
            parser.exit(2, f"error: {err}\n")
        for seed in seeds:
            for variant, folder in build_tiny_family(TinyRecipe().for_seed(seed)).items():
                print(f"tiny family {seed}/{variant}: {folder}")
        load_model("smollm2-135m")
        print("smollm2-135m: ready")
    elif args.command == "tofu-score":
        from kit.tofu import EvaluationError, tofu_score
        try:
            print(json.dumps(tofu_score(args.model_log, args.retain_log, args.truth_ratio)))
        except EvaluationError as err:
            parser.exit(2, f"error: {err}\n")
    elif args.command == "sweep":
        from kit.cluster import ClusterError, check
        from kit.sweep import SweepError, check_parameters, combinations, parse_values, read_grid, sweep
        try:
            grid = read_grid(args.grid) if args.grid else {}
            grid.update({name: parse_values(values) for name, values in args.param})
            if not grid:
                raise SweepError("Nothing to sweep: give --grid GRID.yaml or -p NAME v1,v2.")
            check(args.executor, _resources(args))
            if args.dry_run:
                notebook = Path(args.notebook)
                if notebook.suffix != ".ipynb" or not notebook.is_file():
                    raise SweepError(f"Notebook {notebook} not found; pass a path such as notebooks/04_ga_and_wga.ipynb.")
                check_parameters(notebook, grid)
                for combo in combinations(grid):
                    print(json.dumps(combo))
                return
            result = sweep(args.notebook, grid, args.out, args.jobs, args.timeout, executor=args.executor,
                           resources=_resources(args))
        except (SweepError, ClusterError) as err:
            parser.exit(2, f"error: {err}\n")
        if result.failed:
            parser.exit(1)
    elif args.command == "replicate":
        from kit import replicate
        try:
            ints = [[int(x) for x in text.split(",") if x.strip()] for text in (args.families, args.seeds)]
        except ValueError:
            parser.exit(2, f"error: --families and --seeds take comma-separated whole numbers, got "
                           f"{args.families!r} / {args.seeds!r}\n")
        from kit.cluster import ClusterError, check
        try:
            check(args.executor, _resources(args))
        except ClusterError as err:
            parser.exit(2, f"error: {err}\n")
        try:
            units = replicate.plan(ints[0], ints[1], [m for m in args.models.split(",") if m],
                                   [n for n in args.notebooks.split(",") if n] or None)
        except replicate.ReplicateError as err:
            parser.exit(2, f"error: {err}\n")
        if args.dry_run:
            rows = replicate.read(replicate.ROOT / "replicates.csv")
            todo = [u for u in units if not replicate.done(u, rows)]
            print(f"{len(units)} units, {len(units) - len(todo)} already in replicates.csv, {len(todo)} to run")
            for unit in todo:
                print(f"  {unit.notebook} on {unit.model}" + (f" family {unit.family}" if unit.family is not None else "")
                      + f", seeds {list(unit.seeds)}")
            return
        if args.collect:
            table = replicate.write(replicate.read(replicate.ROOT / "replicates.csv"))
        else:
            table = replicate.run(units, threads=args.threads, timeout=args.timeout, executor=args.executor,
                                  resources=_resources(args))
        print(table[["claim", "model", "n", "mean", "low", "high", "verdict"]].to_string(index=False))


if __name__ == "__main__":
    main()
