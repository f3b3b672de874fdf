"""The kit on a GPU: each step a GPU user takes, run on CUDA and on the CPU in one run, compared.

Loads tiny (family 0, from the cache; the tiny build is CPU work) on both devices with the same
weights, then for each step prints the largest difference between the two devices' numbers and
the time ratio CPU / GPU:
  answer NLLs (kit.answer_scores), the G-effect of NPO+KL by layer group (kit.geffect.g_effect),
  WAGLE's scores and mask (kit.attribution), multiple-choice log-likelihoods (kit.mcq.score),
  a short masked NPO run (kit.unlearn: weights outside the mask must stay bitwise fixed on either
  device), the same with LoRA, WMDP's RMU steering block 2 through blocks 0-2's down-projections (kit.attribution.block_mask), relearning
  (kit.audit.relearner, the Trainer on the GPU) and 4-bit rounding (kit.audit.quantize: torchao on
  either device; the rounded weights' distinct values per group of 32 are printed).
Differences come from floating point (other kernels, other summation orders); a training step
amplifies them, so the runs are compared by their end metrics, not bit for bit. One JSON line
ends the output.

Usage: python bench/gpu.py [--device cuda] [--out FILE]   (--device cpu checks the script itself)
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

import kit
from kit import attribution, audit, mcq, scenario


def timed(fn):
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def both(name, fn, models, rows, compare):
    """Run fn(model) on each device's model, record the largest difference and the time ratio."""
    (cpu, t_cpu), (gpu, t_gpu) = timed(lambda: fn(models["cpu"])), timed(lambda: fn(models["dev"]))
    diff = compare(cpu, gpu)
    rows.append({"step": name, "max_diff": diff, "cpu_s": t_cpu, "dev_s": t_gpu, "cpu/dev": t_cpu / t_gpu})
    print(f"{name:<34} max |cpu - dev| {diff:10.3g}   cpu {t_cpu:7.2f} s   dev {t_gpu:7.2f} s   ratio {t_cpu / t_gpu:6.2f}",
          flush=True)
    return cpu, gpu


def frame_diff(columns):
    def compare(a, b):
        return float(max(np.max(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float))) for c in columns))
    return compare


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here, nothing to compare (run it on a GPU machine, or --device cpu "
              "to check the script itself).")
        return
    torch.manual_seed(0)
    models, tok = {}, None
    for key, device in (("cpu", "cpu"), ("dev", args.device)):
        models[key], tok = kit.load_model("tiny", device=device, seed=0)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, device {device_name}")
    forget, retain = kit.load_split("forget01"), list(kit.load_split("retain99"))[:40]
    rows = []

    both("answer NLL (20 items)", lambda m: kit.answer_scores(m, tok, forget), models, rows, frame_diff(["nll"]))
    both("G-effect NPO+KL by group", lambda m: kit.geffect.g_effect(m, tok, "npo", forget, retain, regularizer="kl"),
         models, rows, frame_diff(["e_u", "e_r"]))
    both("WAGLE mask (80%)", lambda m: attribution.attribute("wagle", m, tok, forget, retain, ratio=0.8),
         models, rows, lambda a, b: 1.0 - float(np.mean([(a.masks[n].cpu() == b.masks[n].cpu()).float().mean()
                                                          for n in a.masks])))
    choice = scenario.load_choice_scenario(models["cpu"], tok, "tiny", "forget05", utility_items=10)
    both("cloze log-likelihoods", lambda m: mcq.score(m, tok, choice.forget_mc, formulation="cloze"), models, rows,
         lambda a, b: float(max(np.max(np.abs(np.array(x) - np.array(y))) for x, y in zip(a.loglik, b.loglik))))

    def moved_outside(m, before, mask) -> int:
        """Weights that changed where the mask keeps them fixed (a parameter it does not cover, whole)."""
        total = 0
        for n, p in m.named_parameters():
            free = (mask.masks[n].to(p.device).reshape(p.shape).bool() if n in mask.masks
                    else torch.zeros_like(p, dtype=torch.bool))
            total += int(((p.detach() != before[n]) & ~free).sum())
        return total

    def run_npo(mask_of, **extra):
        def fn(m):
            m = copy.deepcopy(m)
            before = {n: p.detach().clone() for n, p in m.named_parameters()}
            mask = mask_of(m)
            kit.unlearn(m, tok, forget, retain, kit.UnlearnConfig.paper("npo", "forget01", "tiny", epochs=2, **extra), mask=mask)
            return kit.answer_scores(m, tok, forget), 0 if mask is None else moved_outside(m, before, mask)
        return fn

    def runs(a, b):
        if a[1] or b[1]:
            raise AssertionError(f"weights outside the mask moved: cpu {a[1]}, dev {b[1]}")
        return float(abs(a[0]["nll"].mean() - b[0]["nll"].mean()))

    both("NPO, WAGLE mask: mean forget NLL",
         run_npo(lambda m: attribution.attribute("wagle", m, tok, forget, retain, ratio=0.8)), models, rows, runs)
    both("NPO, LoRA rank 8: mean forget NLL", run_npo(lambda m: None, lora_rank=8), models, rows, runs)
    rmu = kit.UnlearnConfig(objective="rmu_wmdp", hparams={"layer": 2, "coeff": 4.0, "alpha": 100.0}, epochs=2, lr=1e-3)

    def run_rmu(m):
        m = copy.deepcopy(m)
        kit.unlearn(m, tok, forget, retain, rmu, mask=attribution.block_mask(m, [0, 1, 2]))
        return kit.answer_scores(m, tok, forget)

    both("RMU, blocks 0-2: forget NLL", run_rmu, models, rows, lambda a, b: float(abs(a["nll"].mean() - b["nll"].mean())))
    keep, held = audit.halves(forget)
    relearn = audit.relearner(tok, keep, steps=5, lr=1e-3)
    both("relearn 5 steps: held-out NLL", lambda m: kit.answer_scores(relearn(m), tok, held), models, rows,
         lambda a, b: float(abs(a["nll"].mean() - b["nll"].mean())))

    def rounded(m):
        q = audit.quantize(m, bits=4)
        return kit.answer_scores(q, tok, held), q

    _, (_, q_dev) = both("4-bit rounding: held-out NLL", rounded, models, rows,
                         lambda a, b: float(abs(a[0]["nll"].mean() - b[0]["nll"].mean())))
    name = next(n for n, _ in audit._targets(q_dev))
    weight = dict(q_dev.named_modules())[name].weight
    dense = weight.dequantize() if hasattr(weight, "dequantize") else weight.detach()
    levels = int(max(len(torch.unique(g)) for g in dense.float().reshape(-1, 32)))
    print(f"4-bit weights of {name} on {args.device}: at most {levels} distinct values per group of 32 (a 4-bit grid has 16)")
    result = {"device": device_name, "torch": torch.__version__, "rows": rows, "levels_per_group": levels}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
