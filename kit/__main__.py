"""Command line:
- `python -m kit data` rewrites data/ from the generator;
- `python -m kit models` builds the built-in models into the cache ahead of time;
- `python -m kit tofu-score MODEL_LOG [--retain RETAIN_LOG]` prints TOFU's summary numbers of an
  evaluation log (TOFU's eval_log_aggregated.json layout, or one the kit saved) as one JSON object;
- `python -m kit sweep NOTEBOOK [--grid GRID.yaml] [-p NAME v1,v2]... [--jobs N]` runs a notebook
  once per parameter combination (kit.sweep); exit status 1 when a run failed.
"""
from __future__ import annotations

import argparse
import json

from kit.paths import DATA_DIR

DATA_FILES = {  # file in data/<source>/ -> split of kit.data
    "builtin": ["full", "holdout10", "world_facts", "real_authors"],
    "real": ["forget", "retain", "world_facts"],
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kit")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("data", help="rewrite data/ from the generator")
    sub.add_parser("models", help="build tiny's four models and convert smollm2-135m into the cache")
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
    args = parser.parse_args(argv)
    if args.command == "data":
        for path in write_data():
            print(path)
    elif args.command == "models":
        from kit.models import build_tiny_family, load_model
        for variant, folder in build_tiny_family().items():
            print(f"tiny/{variant}: {folder}")
        load_model("smollm2-135m")
        print("smollm2-135m: ready")
    elif args.command == "tofu-score":
        from kit.tofu import EvaluationError, tofu_score
        try:
            print(json.dumps(tofu_score(args.model_log, args.retain_log, args.truth_ratio)))
        except EvaluationError as err:
            parser.exit(2, f"error: {err}\n")
    elif args.command == "sweep":
        from kit.sweep import SweepError, parse_values, read_grid, sweep
        try:
            grid = read_grid(args.grid) if args.grid else {}
            grid.update({name: parse_values(values) for name, values in args.param})
            if not grid:
                raise SweepError("Nothing to sweep: give --grid GRID.yaml or -p NAME v1,v2.")
            result = sweep(args.notebook, grid, args.out, args.jobs, args.timeout)
        except SweepError as err:
            parser.exit(2, f"error: {err}\n")
        if result.failed:
            parser.exit(1)


if __name__ == "__main__":
    main()
