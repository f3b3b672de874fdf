"""Several processes (torch.distributed) for the G-effect probe: who am I, and how partial
results are summed.

The probe splits the forget and retain sets over the processes. With replicated parameters
(DDP-style) each process's gradient of L is all-reduced into the full one; with FSDP-sharded
parameters (DTensors) FSDP's reduce-scatter already leaves each process the full-data gradient of
its own parameter shard. Either way each process ends with partial dot products over its items or
its shards, and their sum over processes is the exact G-effect.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


def world() -> tuple[int, int]:
    """(rank, world size) under torch.distributed, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def reduce_grads(model, grads: dict, world: int) -> dict:
    """Sum gradients over processes (every trainable parameter, in model order, zeros where absent)."""
    if world == 1:
        return grads
    out = {}
    for p in model.parameters():
        if p.requires_grad:
            g = grads.get(p)
            g = g.clone() if g is not None else torch.zeros(p.numel(), dtype=torch.promote_types(p.dtype, torch.float32),
                                                            device=p.device)
            torch.distributed.all_reduce(g)
            out[p] = g
    return out


def sharded(model) -> bool:
    """Whether the parameters are FSDP shards (DTensors): each process holds a slice of each."""
    return any(hasattr(p, "to_local") for p in model.parameters())


@contextmanager
def summed_shard_gradients(model):
    """Under FSDP, reduce-scatter sums the processes' gradients instead of averaging them (the
    probe scales each item by 1 / the number of items over all processes); restored afterwards."""
    fsdp = [m for m in model.modules() if hasattr(m, "set_gradient_divide_factor")]
    groups = [g for m in fsdp for g in getattr(m._get_fsdp_state(), "_fsdp_param_groups", [])]
    saved = [(g.gradient_divide_factor, g.force_sum_reduction_for_comms) for g in groups]
    for m in fsdp:
        m.set_gradient_divide_factor(1.0)
        m.set_force_sum_reduction_for_comms(True)         # plain sums (gloo has no pre-multiplied sum)
    try:
        yield
    finally:
        for g, (factor, force_sum) in zip(groups, saved):
            g.gradient_divide_factor, g.force_sum_reduction_for_comms = factor, force_sum


def reduce_sums(sums: dict, pairs: dict) -> dict:
    """Sum each process's partial dot products (same keys, same order on every process)."""
    keys = sorted({(slot, g) for items in pairs.values() for slot, group, _, sel in items
                   for g in ((group,) if sel is None else ("selected", "rest"))})
    out = {}
    for risk, part in sums.items():
        vec = torch.tensor([part.get(k, 0.0) for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(vec)
        out[risk] = dict(zip(keys, vec.tolist()))
    return out
