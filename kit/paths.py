"""Where things live: the repository, the user cache, figures and runs.

Paths are resolved from the repository root, not the working directory, because nbval
starts kernels inside `notebooks/` while papermill uses the caller's directory.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
NOTEBOOKS_DIR = ROOT / "notebooks"
CACHE_ENV = "KIT_CACHE_DIR"
OUTPUT_ENV = "KIT_OUTPUT_DIR"      # set by `python -m kit sweep`: a run's figures and numbers go there


@contextmanager
def atomic(path: str | Path):
    """Write a file all at once: yields a temporary path beside `path` to write to, and renames it
    onto `path` only when the block finished (a reader sees the old file or the new one, never half)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, text: str) -> Path:
    """`path.write_text(text)`, atomically (see `atomic`)."""
    with atomic(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def stored_frame(folder: str | Path, key: dict, make):
    """The table `key` names (everything that decides it: model weights, settings, items), read
    from `folder` when an earlier run finished it, else `make()` saved there at once, so a long
    loop of runs that is stopped resumes at the first unfinished one. `key` must be JSON-able
    (other values are written with str); the file is `<digest>.parquet`, with the key beside it
    (long lists and texts in it replaced by their size and digest)."""
    name = digest(key, 16)
    folder = Path(folder)
    path = folder / f"{name}.parquet"
    if path.exists():
        import pandas as pd
        return pd.read_parquet(path)
    frame = make()
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{name}.json", json.dumps(_readable(key), indent=1, sort_keys=True, default=str))
    with atomic(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame


def digest(value, length: int = 64) -> str:
    """The sha256 hex digest of `value` as sorted JSON (other values written with str), its first
    `length` characters: the key of every result the kit stores."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def _readable(value):
    """`value` with every list of more than 8 entries and every text over 200 characters shortened."""
    if isinstance(value, dict):
        return {k: _readable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"{len(value)} entries, sha256 {digest(value, 12)}"
    if isinstance(value, (list, tuple)):
        return [_readable(v) for v in value]
    if isinstance(value, str) and len(value) > 200:
        return f"{len(value)} characters, sha256 {digest(value, 12)}"
    return value


def _output_root() -> Path:
    """$KIT_OUTPUT_DIR inside a sweep; else the source checkout (where the notebooks live), or the
    working directory when the kit is installed as a package (never into site-packages)."""
    env = os.environ.get(OUTPUT_ENV)
    if env:
        return Path(env)
    return ROOT if (ROOT / "pyproject.toml").exists() else Path.cwd()


def cache_dir() -> Path:
    """The user cache holding built models (`$KIT_CACHE_DIR`, else `~/.cache/unlearning-kit`)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "unlearning-kit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir(run_tag: str = "default") -> Path:
    """`figures/<run_tag>/`, created on demand (the default tag's folder is git-ignored).

    Under `$KIT_OUTPUT_DIR` (a sweep's run folder) the same layout lives inside that folder."""
    path = _output_root() / "figures" / run_tag
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir(run_tag: str = "default") -> Path:
    """`runs/<run_tag>/` for run directories (checkpoints, manifests, metrics); see figures_dir."""
    path = _output_root() / "runs" / run_tag
    path.mkdir(parents=True, exist_ok=True)
    return path
