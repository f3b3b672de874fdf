"""The run directory: what `kit.unlearn(..., run_dir=...)` leaves behind. Written and read here only.

Layout (FORMAT 1):

    <run_dir>/manifest.json          {"format": 1, "objective", "config", "model", "data", "n_forget",
                                      "steps": [saved steps], "finished": bool, "mask": null or its summary}
    <run_dir>/checkpoint-<step>/     model.safetensors + config.json (step 0: the weights before unlearning)

Every file is written atomically (a reader sees the old version or the new one), and under
torchrun / accelerate only rank 0 writes. Readers validate what they read and say what is wrong
and how to fix it. The G-effect over a run (kit.probes), the explorer (kit.explore) and anything
that audits a run read run directories through `read_manifest` and `load_checkpoint`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kit.paths import write_atomic

FORMAT = 1
MANIFEST = "manifest.json"
REQUIRED = ("objective", "config", "steps", "finished")


class RunDirError(ValueError):
    """A path that is not a (complete) run directory; the message names the file and the fix."""


def is_writer() -> bool:
    """Rank 0 under torchrun / accelerate launch (RANK is set before the process group exists)."""
    return int(os.environ.get("RANK", "0")) == 0


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"checkpoint-{step}"


def write_manifest(run_dir: str | Path, manifest: dict) -> None:
    """Write (or rewrite) the manifest, atomically, from the writing process only."""
    if is_writer():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_atomic(Path(run_dir) / MANIFEST, json.dumps({"format": FORMAT, **manifest}, indent=2, default=str))


def save_checkpoint(model, run_dir: str | Path, step: int) -> Path:
    """Save `model` as checkpoint-<step> (written beside, then renamed into place)."""
    folder = checkpoint_dir(run_dir, step)
    if is_writer():                     # under DDP every rank holds the same weights; one writes
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        from kit.forward import no_file_progress
        with no_file_progress():        # "Writing model shards 0%" once per checkpoint is noise
            model.save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return folder


def read_manifest(run_dir: str | Path) -> dict:
    """The manifest of a run directory, checked: present, valid JSON, a format this kit reads."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a run directory (no {MANIFEST}); pass the run_dir given to unlearn().")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise RunDirError(f"{path} is corrupt (not valid JSON); rerun the unlearning into a new run_dir.") from None
    version = manifest.get("format", FORMAT)          # manifests written before the field existed are format 1
    if version > FORMAT:
        raise RunDirError(f"{path} has format {version}; this kit reads format {FORMAT}: update the kit.")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise RunDirError(f"{path} lacks {', '.join(missing)}; it was not written by kit.unlearn. Rerun into a new run_dir.")
    return manifest


def load_checkpoint(run_dir: str | Path, step: int, dtype=None):
    """The model saved at `step` (eval mode), read from safetensors only."""
    import torch
    from transformers import AutoModelForCausalLM

    from kit.forward import no_file_progress
    folder = checkpoint_dir(run_dir, step)
    if not (folder / "model.safetensors").exists():
        raise RunDirError(f"{folder} has no model.safetensors (half-written or deleted); "
                          "rerun the unlearning or pass steps= without it.")
    try:
        with no_file_progress():            # one bar per checkpoint is noise
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32, use_safetensors=True)
    except Exception as err:   # noqa: BLE001 (a truncated or overwritten file: say which, load nothing)
        raise RunDirError(f"{folder} is corrupt and was not loaded ({type(err).__name__}: {str(err)[:120]}); "
                          "rerun the unlearning or pass steps= without it.") from None
    return model.eval()


def find_runs(folder: str | Path) -> list[Path]:
    """Every run directory under `folder` (itself included), sorted."""
    return sorted(p.parent for p in Path(folder).rglob(MANIFEST))
