"""What does a G-effect probe cost, against a training step and against the reference protocol?

Per model, on the same 16 forget and 16 retain items, three jobs:
  (a) plain   one unlearning step as kit.unlearn takes it: GA forward + backward + AdamW update,
              logits at answer positions only as in kit.objectives (and `sgd`: the same with
              plain SGD, which keeps no optimizer state: the leanest baseline);
  (b) probe   kit.geffect.g_effect: ∇L kept where training keeps its gradient, the two risk
              gradients streamed through it parameter by parameter (3 forward + 3 backward);
              `reuse`: the same with reuse_forward=True (the forget risk reuses the objective's
              forward pass: 2 forward + 3 backward, that pass's activations kept longer);
  (c) ref     a straightforward re-implementation of the published protocol: four forward and
              four backward passes per micro-batch, three full gradient copies (kept in fp32),
              smoothed by an EMA (0.6 old, 0.4 new, updated in place), dot products at the end; full logits,
              as the published code computes them.
Each job runs in its own process (so peak memory can be compared), timed as the median of
several repetitions after a warm-up. Extra memory is the peak RSS above the AdamW step and above
the SGD step, in units of one fp32 gradient copy. One JSON line per model ends the output.

Usage: python bench/geffect.py [tiny,smollm2-135m] [repetitions]
"""
from __future__ import annotations

import json
import statistics
import time

import torch
from _isolated import measure, report, run

N_ITEMS = 16


def _setup(model_name: str):
    import kit
    model, tok = kit.load_model(model_name)
    source, f, r = ("real", "forget", "retain") if model_name == "smollm2-135m" else ("builtin", "forget05", "retain95")
    forget = list(kit.load_split(f, source))[:N_ITEMS]
    retain = list(kit.load_split(r, source))[:N_ITEMS]
    return model, tok, forget, retain


def _batch(tok, records, device):
    from kit.data import Collator, QADataset
    data = QADataset(records, tok)
    return {k: v.to(device) for k, v in Collator(tok)([data[i] for i in range(len(data))]).items()}


def _nll(model, batch, full_logits: bool = False):
    """Mean answer NLL: the kit's way (vocabulary projection at answer positions), or with the
    full [B, T, V] logits as the published code computes them."""
    from kit.objectives import logprobs
    if full_logits:              # log-softmax at every position, as a cross-entropy over the sequence does
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), labels, reduction="none")
        return (nll.sum(1) / (labels != -100).sum(1)).mean()
    logp, mask = logprobs(model, batch)
    return -(logp.sum(1) / mask.sum(1)).mean()


def job_plain(model, tok, forget, retain, optimizer=torch.optim.AdamW):
    opt = optimizer(model.parameters(), lr=1e-6)
    batch = _batch(tok, forget, "cpu")

    def run():
        (-_nll(model, batch)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return run


def job_probe(model, tok, forget, retain, reuse_forward=False):
    from kit import geffect
    return lambda: geffect.g_effect(model, tok, "ga", forget, retain, batch_size=N_ITEMS, reuse_forward=reuse_forward)


def job_ref(model, tok, forget, retain, copies=torch.float32):
    """Four passes per micro-batch (training loss, then objective, forget risk and retain risk
    again for the probe), three gradient copies (fp32 as published; `copies=torch.bfloat16` where
    three fp32 copies do not fit) with an EMA updated in place, dot products at the end."""
    fb, rb = _batch(tok, forget, "cpu"), _batch(tok, retain, "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    ema = {}

    def into(key, loss):
        loss.backward()
        if key is not None:
            if key not in ema:
                ema[key] = [p.grad.detach().to(copies, copy=True) for p in params]
            else:
                for e, p in zip(ema[key], params):
                    e.mul_(0.6).add_(p.grad.detach().to(copies), alpha=0.4)
        model.zero_grad(set_to_none=True)

    def run():
        into(None, -_nll(model, fb, True))                          # the training step's own pass
        into("L", -_nll(model, fb, True))
        into("u", _nll(model, fb, True))
        into("r", _nll(model, rb, True))
        e_u = sum(float((a.float() * b.float()).sum()) for a, b in zip(ema["u"], ema["L"]))
        e_r = sum(float((a.float() * b.float()).sum()) for a, b in zip(ema["r"], ema["L"]))
        return e_u, e_r
    return run


def worker(model_name: str, job: str, reps: int) -> None:
    model, tok, forget, retain = _setup(model_name)
    jobs = {"plain": job_plain, "sgd": lambda *a: job_plain(*a, optimizer=torch.optim.SGD), "probe": job_probe,
            "reuse": lambda *a: job_probe(*a, reuse_forward=True), "ref": job_ref}
    run = jobs[job](model, tok, forget, retain)
    run()                                                           # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    report(seconds=statistics.median(times), grad_bytes=4 * sum(p.numel() for p in model.parameters() if p.requires_grad))


def main(models: list[str], reps: int) -> None:
    lines = []
    for name in models:
        res = {job: measure(__file__, name, job, reps) for job in ("plain", "sgd", "probe", "reuse", "ref")}
        grad = res["plain"]["grad_bytes"]
        extra = {job: (res[job]["peak_rss"] - res["plain"]["peak_rss"]) / grad for job in res}
        extra_sgd = {job: (res[job]["peak_rss"] - res["sgd"]["peak_rss"]) / grad for job in res}
        print(f"\n{name}: {N_ITEMS} forget + {N_ITEMS} retain items, median of {reps}, one gradient copy = {grad / 2**20:.1f} MiB")
        print(f"  {'job':<8}{'seconds':>10}{'x plain':>10}{'peak RSS MiB':>15}{'extra vs AdamW step':>21}{'extra vs SGD step':>19}")
        for job, r in res.items():
            print(f"  {job:<8}{r['seconds']:>10.3f}{r['seconds'] / res['plain']['seconds']:>10.2f}"
                  f"{r['peak_rss'] / 2**20:>15.0f}{extra[job]:>21.2f}{extra_sgd[job]:>19.2f}")
        lines.append({"model": name, "probe_over_step": round(res["probe"]["seconds"] / res["plain"]["seconds"], 3),
                      "reference_over_probe": round(res["ref"]["seconds"] / res["probe"]["seconds"], 3),
                      "probe_extra_memory_in_grad_copies": round(extra["probe"], 3),
                      "probe_extra_memory_vs_sgd_step": round(extra_sgd["probe"], 3),
                      "reuse_over_step": round(res["reuse"]["seconds"] / res["plain"]["seconds"], 3),
                      "reuse_extra_memory_vs_sgd_step": round(extra_sgd["reuse"], 3),
                      "reference_extra_memory_in_grad_copies": round(extra["ref"], 3)})
    print()
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    run(main, worker, default_arg=5)
