"""How to spend the cores when building tiny: threads inside one process, or one process per core?
And how much does length-chunked batching save over random batches?

Each configuration trains tiny's architecture for the same number of optimizer steps on the
same data; the table gives throughput (models' steps per second, summed over processes)
relative to the baseline (one process, all threads, random batches). Ratios, measured side by
side in one run. Usage: python bench/build_tiny.py [steps]
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import torch


def train(threads: int, sampling: str, steps: int) -> float:
    """Seconds to train `steps` optimizer steps of tiny's recipe with `threads` torch threads."""
    torch.set_num_threads(threads)
    from transformers import LlamaForCausalLM
    from kit import models
    from kit.train import finetune
    recipe = models.TinyRecipe()
    models._build_tokenizer(recipe)
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(models.tiny_dir(recipe) / "tokenizer")
    records = models._training_records("target")
    config = dataclasses.replace(recipe.train, epochs=steps * recipe.train.batch_size / len(records),
                                 sampling=sampling, warmup_epochs=0.0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(models.tiny_config(recipe, tok))
    start = time.perf_counter()
    finetune(model, tok, records, config, progress=False)
    return time.perf_counter() - start


def throughput(processes: int, threads: int, sampling: str, steps: int) -> float:
    """Optimizer steps per second, summed over `processes` concurrent trainings."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=spawn) as pool:
        start = time.perf_counter()
        list(pool.map(train, [threads] * processes, [sampling] * processes, [steps] * processes))
        return processes * steps / (time.perf_counter() - start)


def main(steps: int = 120) -> None:
    cores = torch.get_num_threads()
    rows = [("1 process x %d threads, random batches" % cores, 1, cores, "random"),
            ("1 process x %d threads, length chunks" % cores, 1, cores, "length_chunks"),
            ("%d processes x 1 thread, random batches" % cores, cores, 1, "random"),
            ("%d processes x 1 thread, length chunks (the build)" % cores, cores, 1, "length_chunks")]
    results = [(name, throughput(p, t, s, steps)) for name, p, t, s in rows]
    base = results[0][1]
    print(f"tiny build throughput, {steps} steps per training, {cores} cores")
    for name, value in results:
        print(f"  {name:<52} {value:6.2f} steps/s   x{value / base:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 120)
