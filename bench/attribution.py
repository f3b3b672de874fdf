"""What do weight attribution and selection cost, in time and memory?

Per model, each job in its own process (so peak memory can be compared):
  base       load the model and run the forget-set NLL backward once (what any unlearning step costs)
  <method>   kit.attribution.attribute(method, ratio=0.8): scores over the forget (and retain) set
             and a global selection by kthvalue threshold
Extra memory is the peak RSS above `base`, in units of the model's fp32 parameter memory (the
target: about 3 or less). Then, in one process, the selection alone against a selection by full
sort (what the reference code does), on the same WAGLE scores. One JSON line per model ends it.

Usage: python bench/attribution.py [tiny,smollm2-135m] [items]
"""
from __future__ import annotations

import json
import time

import torch
from _isolated import measure, report, run

METHODS = ("wagle", "magnitude", "wanda", "random")


def _setup(model_name: str, n_items: int):
    import kit
    model, tok = kit.load_model(model_name)
    source, f, r = ("real", "forget", "retain") if model_name == "smollm2-135m" else ("builtin", "forget05", "retain95")
    return model, tok, list(kit.load_split(f, source))[:n_items], list(kit.load_split(r, source))[:n_items]


def worker(model_name: str, job: str, n_items: int) -> None:
    from kit import attribution
    from kit.attribution import _nll_gradient, eligible
    model, tok, forget, retain = _setup(model_name, n_items)
    start = time.perf_counter()
    if job == "base":
        _nll_gradient(model, tok, forget, eligible(model), "sum", 16)
    else:
        attribution.attribute(job, model, tok, forget, retain, ratio=0.8)
    seconds = time.perf_counter() - start
    report(seconds=seconds, param_bytes=sum(p.numel() * 4 for p in model.parameters()))


def selection_vs_sort(model_name: str, n_items: int) -> tuple[float, float]:
    """Seconds to select the top 80% of WAGLE scores: kthvalue threshold (kit) against a full sort."""
    from kit import attribution
    model, tok, forget, retain = _setup(model_name, n_items)
    scores = attribution.scores("wagle", model, tok, forget, retain)
    start = time.perf_counter()
    mask = attribution.select(scores, 0.8)
    t_kit = time.perf_counter() - start
    start = time.perf_counter()
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    order = torch.sort(flat, descending=True).indices[: round(0.8 * flat.numel())]
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order] = True
    t_sort = time.perf_counter() - start
    assert int(keep.sum()) == mask.n_selected
    return t_kit, t_sort


def main(models: list[str], n_items: int) -> None:
    lines = []
    for name in models:
        res = {job: measure(__file__, name, job, n_items) for job in ("base", *METHODS)}
        params = res["base"]["param_bytes"]
        print(f"\n{name}: {n_items} forget + {n_items} retain items, parameters {params / 2**20:.0f} MiB (fp32)")
        print(f"  {'job':<10}{'seconds':>10}{'peak RSS MiB':>15}{'extra / parameter memory':>27}")
        extra = {}
        for job, r in res.items():
            extra[job] = (r["peak_rss"] - res["base"]["peak_rss"]) / params
            print(f"  {job:<10}{r['seconds']:>10.2f}{r['peak_rss'] / 2**20:>15.0f}{extra[job]:>27.2f}")
        t_kit, t_sort = selection_vs_sort(name, n_items)
        print(f"  selection of the top 80%: kthvalue {t_kit:.3f} s, full sort {t_sort:.3f} s ({t_sort / t_kit:.1f}x)")
        lines.append({"model": name, "extra_memory_in_param_copies": {m: round(extra[m], 2) for m in METHODS},
                      "select_seconds": round(t_kit, 3), "sort_over_select": round(t_sort / t_kit, 2)})
    print()
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    run(main, worker, default_arg=16)
