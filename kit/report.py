"""The environment report each notebook prints in its header (versions, device, threads)."""
from __future__ import annotations

import platform


def environment_report() -> dict:
    """Versions of the kit and its main libraries, the device, the CPU threads in use, the model
    cache, and (inside a sweep, where `$KIT_OUTPUT_DIR` redirects them) where outputs go."""
    import os

    import torch
    import transformers

    import kit
    from kit.paths import OUTPUT_ENV, cache_dir
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    report = {"kit": kit.__version__, "python": platform.python_version(),
              "torch": torch.__version__, "transformers": transformers.__version__,
              "device": device, "threads": torch.get_num_threads(), "cache": str(cache_dir())}
    if os.environ.get(OUTPUT_ENV):
        report["outputs"] = f"{os.environ[OUTPUT_ENV]} (${OUTPUT_ENV}, set by kit sweep)"
    return report


def record(notebook: str, run_tag: str = "default", **numbers) -> dict:
    """Save a notebook's key numbers as `runs/<run_tag>/results/<notebook>.json` and return them.

    Sweeps and tests read these files back; values must be JSON-serialisable.
    """
    import json

    from kit.paths import runs_dir, write_atomic
    folder = runs_dir(run_tag) / "results"
    folder.mkdir(parents=True, exist_ok=True)
    clean = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (int, bool, str)) else v)
             for k, v in numbers.items()}
    write_atomic(folder / f"{notebook}.json", json.dumps(clean, indent=2))
    return clean


def nll_axes(ax, x, y) -> None:
    """Log scale on a trade-off plot's axes where the data spans more than a factor 3 (linear
    otherwise: a short run has no log ticks to label), with plain tick labels (minor ones too
    where the range spans less than a decade)."""
    import matplotlib.pyplot as plt
    for axis, values, scale in ((ax.xaxis, x, ax.set_xscale), (ax.yaxis, y, ax.set_yscale)):
        values = [v for v in values if v > 0]
        if values and max(values) > 3 * min(values):
            scale("log")
            axis.set_major_formatter(plt.FormatStrFormatter("%g"))
            short = max(values) < 10 * min(values)      # under a decade: label the minor ticks 2, 3, 5 too
            if short:                                   # (not 9 or 1.5: they would crowd the decade's label)
                axis.set_minor_locator(plt.LogLocator(base=10, subs=(2, 3, 5)))
            axis.set_minor_formatter(plt.FormatStrFormatter("%g") if short else plt.NullFormatter())
