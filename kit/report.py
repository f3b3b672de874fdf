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

