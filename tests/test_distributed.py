"""Two CPU processes (gloo) give the same G-effects as one: with replicated parameters the
gradients of L are summed over the data shards and the risk gradients' partial dot products are
summed after streaming; with FSDP-sharded parameters each process dots its own parameter shards."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kit.data import load_split

pytestmark = pytest.mark.slow      # make test-fast skips it

FORGET = list(load_split("forget01"))[:6]
RETAIN = list(load_split("retain99"))[:7]      # uneven shards on purpose (4 + 3)


def _model():
    from transformers import LlamaForCausalLM

    from kit.models import TinyRecipe, tiny_config, train_tiny_tokenizer
    tok = train_tiny_tokenizer(TinyRecipe())
    torch.manual_seed(0)
    recipe = TinyRecipe(hidden_size=32, layers=2, heads=2, intermediate_size=64)
    return LlamaForCausalLM(tiny_config(recipe, tok)).eval(), tok


def _effects(objective, hparams, regularizer, fsdp=False):
    from kit import distributed, geffect, objectives
    model, tok = _model()
    ref = objectives.make_reference(model)      # unsharded: forward only, on this process's items
    if fsdp:
        from torch.distributed.fsdp import fully_shard
        for block in model.model.layers:
            fully_shard(block)
        fully_shard(model)
        assert distributed.sharded(model)            # each process holds a slice of every parameter
    df = geffect.g_effect(model, tok, objective, FORGET, RETAIN, hparams=hparams, regularizer=regularizer, ref=ref,
                          batch_size=2)
    return df.to_dict("records")


def _worker(rank, init, out, cases, fsdp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        results = [_effects(*case, fsdp=fsdp) for case in cases]
        if rank == 0:
            out.write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp-sharded"])
def test_two_processes_give_the_same_g_effects(tmp_path, fsdp):
    """Replicated (DDP-style): gradients of L all-reduced, partial dots of the risk gradients summed.
    FSDP (fully_shard per block): each process dots its parameter shards, the partial dots are summed."""
    cases = [("npo", {"beta": 0.5}, "nll"), ("ga", {}, "kl")]
    out = tmp_path / "rank0.json"
    mp.spawn(_worker, args=(f"file://{tmp_path / 'init'}", out, cases, fsdp), nprocs=2, join=True)
    for case, two in zip(cases, json.loads(out.read_text())):
        one = _effects(*case)
        assert len(one) == len(two)
        for a, b in zip(one, two):
            assert (a["component"], a["group"]) == (b["component"], b["group"])
            for col in ("e_u", "e_r"):
                assert b[col] == pytest.approx(a[col], rel=1e-5, abs=1e-9), (case, a, b)


def test_unlearn_and_live_probe_under_accelerate_launch_match_one_process(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): DDP with half the batch per
    process takes the same steps as one process, and the live G-effect probe agrees."""
    import subprocess
    import sys

    import pandas as pd
    from safetensors.torch import load_file

    from kit.paths import ROOT
    script = ROOT / "tests" / "distributed_unlearn.py"
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    subprocess.run([sys.executable, str(script), str(one), "4"], check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(two), "4"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    x, y = pd.read_csv(one / "geffect.csv"), pd.read_csv(two / "geffect.csv")
    assert len(x) == len(y) and list(x.step.unique()) == [0, 2, 4]
    scale = x[["e_u", "e_r"]].abs().max().max()
    assert ((x[["e_u", "e_r"]] - y[["e_u", "e_r"]]).abs().max().max()) < 1e-5 * scale
    assert sorted(p.name for p in (two / "run").iterdir()) == ["checkpoint-0", "checkpoint-2", "checkpoint-4", "manifest.json"]
