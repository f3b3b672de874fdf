"""The benchmarks' own peers and arithmetic: the batched TOFU evaluator that bench/evaluation.py
and bench/scaling.py time the kit against must compute what the kit computes, or the ratio
compares different work."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kit import tofu

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_tofus_batched_evaluator_agrees_with_the_kit(random_model, tiny_tokenizer):
    evaluation = _bench("evaluation")
    splits = {role: recs[:5] for role, recs in tofu.tofu_splits("forget01").items()}
    with torch.no_grad():
        kit_items = tofu.score_items(random_model, tiny_tokenizer, splits, max_new_tokens=6)
    peer = evaluation._batched_items(random_model, tiny_tokenizer, splits, batch_size=3, max_new_tokens=6)
    assert list(peer.split) == list(kit_items.split) and len(peer) == 25
    assert np.allclose(peer.avg_gt_loss, kit_items.avg_gt_loss, rtol=1e-4)
    scored = peer.split != "holdout"
    assert np.allclose(peer.avg_paraphrased_loss[scored], kit_items.avg_paraphrased_loss[scored], rtol=1e-4)
    assert np.allclose(np.stack(peer.average_perturb_loss[scored]),
                       np.stack(kit_items.average_perturb_loss[scored]), rtol=1e-4)
    assert list(peer.generated) == list(kit_items.generated)         # left-padded batches, same greedy answers
    assert evaluation._loss_diff(kit_items, peer) < 1e-4


def test_scaling_summary_reads_ratios_and_memory_in_gradient_copies():
    scaling = _bench("scaling")
    mib = 2 ** 20
    jobs = {"ft": {"seconds": 2.0, "peak_rss": 1000 * mib}, "ga": {"seconds": 2.0, "peak_rss": 1000 * mib},
            "probe": {"seconds": 6.0, "peak_rss": 1100 * mib}, "ref": {"seconds": 12.0, "peak_rss": 1300 * mib},
            "eval": {"seconds": 1.0, "peak_rss": 500 * mib}, "tofu": {"seconds": 2.5, "peak_rss": 500 * mib}}
    row = {"size": "x", "params": 25 * mib, "reps": 3, "jobs": jobs, "skipped": {"npo": "needs more"}}
    out = scaling.summary(row)                      # one gradient copy = 4 bytes × 25 Mi = 100 MiB
    assert out["probe_over_step"] == 3.0 and out["reference_over_probe"] == 2.0
    assert out["probe_extra_memory_in_grad_copies"] == pytest.approx(1.0)
    assert out["reference_extra_memory_in_grad_copies"] == pytest.approx(3.0)
    assert out["tofu_evaluator_over_kit"] == 2.5 and "npo_over_step" not in out
