"""Shared by the benchmarks that compare peak memory: every job runs in a fresh process of the
calling script (`script --worker MODEL JOB ARG`), which prints one JSON line that ends with its
peak resident memory. Not a benchmark itself (`make bench` skips files starting with `_`)."""
from __future__ import annotations

import json
import resource
import subprocess
import sys


def report(**numbers) -> None:
    """Print the worker's numbers with its peak RSS in bytes, as the last line of its output."""
    print(json.dumps({**numbers, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def measure(script: str, model_name: str, job: str, arg: int) -> dict:
    """Run one job of `script` in its own process and return what its worker reported."""
    out = subprocess.run([sys.executable, script, "--worker", model_name, job, str(arg)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(main, worker, default_arg: int) -> None:
    """`script [MODELS] [ARG]` calls main(models, arg); `script --worker MODEL JOB ARG` calls worker."""
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main(sys.argv[1].split(",") if len(sys.argv) > 1 else ["tiny", "smollm2-135m"],
             int(sys.argv[2]) if len(sys.argv) > 2 else default_arg)
