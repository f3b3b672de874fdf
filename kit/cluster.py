"""Sweep runs as cluster jobs, through submitit: one job per run, on Slurm or as local
subprocesses (submitit's local executor: a workstation, and the tests).

    python -m kit sweep NOTEBOOK --grid g.yaml --executor slurm --partition gpu --gpus 1 --time 120
    python -m kit replicate --executor slurm --partition cpu --cpus 8 --mem-gb 32

A job runs the same function as a local run (`kit.sweep`'s papermill call into a `.partial-<id>`
folder, renamed when done), so the semantics carry over: a finished run is skipped, a half-run
one is redone, a failed one goes to `.failed/`. A job the scheduler kills (time limit, memory,
cancellation) becomes a failed run whose error quotes the scheduler. Submitit's own files
(pickled function, logs) go to `<sweep folder>/.submitit/<job id>/`, which on Slurm must be on a
filesystem the compute nodes share.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

EXECUTORS = ("local", "submitit-local", "slurm")   # "local": the kit's own process pool, no submitit


class ClusterError(ValueError):
    """An executor that cannot start (unknown name, submitit missing, bad resources); says the fix."""


@dataclass
class Resources:
    """What one job asks for. On Slurm these become sbatch options; the local executor honours
    the CPU count (each run's torch threads) and the time limit."""
    cpus: int = 2
    gpus: int = 0
    mem_gb: float = 16
    time_min: int = 120
    partition: str | None = None
    extra: dict = field(default_factory=dict)     # any other submitit parameter, e.g. {"slurm_account": "x"}


def check(executor: str, resources: Resources) -> None:
    """Refuse an unknown executor or impossible resources before anything is submitted."""
    if executor not in EXECUTORS:
        raise ClusterError(f"Unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}.")
    for name in ("cpus", "time_min"):
        if not isinstance(getattr(resources, name), int) or getattr(resources, name) < 1:
            raise ClusterError(f"{name} must be a positive integer, got {getattr(resources, name)!r}.")
    if resources.gpus < 0 or resources.mem_gb <= 0:
        raise ClusterError(f"gpus must be >= 0 and mem_gb > 0, got {resources.gpus!r} and {resources.mem_gb!r}.")
    if executor == "slurm" and not resources.partition:
        raise ClusterError("The slurm executor needs a partition: pass --partition NAME (sinfo lists them).")


def make_executor(executor: str, folder: str | Path, resources: Resources, name: str = "kit-sweep"):
    """A submitit executor for `executor` ("slurm" or "submitit-local") with `resources`."""
    check(executor, resources)
    try:
        import submitit
    except ImportError:
        raise ClusterError(f"The {executor!r} executor needs submitit: pip install 'unlearning-kit[cluster]' "
                           "(or pip install submitit).") from None
    ex = submitit.AutoExecutor(folder=Path(folder) / "%j", cluster="slurm" if executor == "slurm" else "local")
    params = {"name": name, "timeout_min": resources.time_min, "cpus_per_task": resources.cpus,
              "gpus_per_node": resources.gpus, "mem_gb": resources.mem_gb, "tasks_per_node": 1, "nodes": 1}
    if resources.partition:
        params["slurm_partition"] = resources.partition
    ex.update_parameters(**params, **resources.extra)
    return ex


def run_jobs(executor, function, calls: list[tuple], on_done=None) -> list:
    """Submit `function(*args)` for every args tuple of `calls`, all at once, and wait for them.

    Returns the results in the order of `calls`; a job that died without a result gives the
    exception instead (the caller turns it into a failed run). `on_done(i, result)` is called as
    each job finishes.
    """
    import submitit
    jobs = [executor.submit(function, *args) for args in calls]
    index = {id(job): i for i, job in enumerate(jobs)}
    results: list = [None] * len(jobs)
    for job in submitit.helpers.as_completed(jobs, poll_frequency=1):
        i = index[id(job)]
        try:
            results[i] = job.result()
        except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as err:
            results[i] = err
        if on_done:
            on_done(i, results[i])
    return results
