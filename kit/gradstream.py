"""Gradients dotted as backward produces them, and stored gradients kept small.

The G-effect probe (kit.geffect) holds a few reference gradients (∇L, a regulariser's gradient)
and needs inner products of other gradients with them. `Streamer` registers a post-accumulate
hook on every parameter that dots its fresh gradient with the stored ones, per group (or split
by a weight mask), then frees it, so no second full gradient ever exists. `compact` stores a
matrix gradient as its nonzero rows when most rows are zero, as for an input embedding.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from contextlib import contextmanager
from typing import NamedTuple

import torch

from kit.forward import fp32


@contextmanager
def untouched(model):
    """Gradient work on a caller's model that leaves it as it came: its `.grad` tensors (set aside,
    then put back) and its train/eval mode."""
    grads = [(p, p.grad) for p in model.parameters()]
    was_training = model.training
    for p, _ in grads:
        p.grad = None
    try:
        yield model
    finally:
        for p, g in grads:
            p.grad = g
        model.train(was_training)


def leaves_model_untouched(fn):
    """Decorator: `fn(model, ...)` runs inside `untouched(model)`."""
    @functools.wraps(fn)
    def inner(model, *args, **kwargs):
        with untouched(model):
            return fn(model, *args, **kwargs)
    return inner


class Streamer:
    """While active, every parameter gradient produced by backward is dotted with stored
    reference gradients (per group) and freed at once."""

    def __init__(self, pairs: dict[torch.nn.Parameter, list[tuple]], streaming: bool = True):
        self.pairs = pairs                    # param -> [(slot, group, reference grad, element mask or None)]
        self.sums: dict[tuple[str, str], float] = defaultdict(float)
        self.handles, self.streaming = [], streaming

    def _hook(self, param):
        full = flat(param.grad)
        for slot, group, ref, sel in self.pairs.get(param, ()):
            g, ref, sel = gather(full, ref, sel)
            dot = float(torch.dot(g, ref))
            if sel is None:
                self.sums[(slot, group)] += dot
            else:                             # a weight mask splits the parameter into selected / rest
                inside = float(torch.dot(g[sel], ref[sel]))
                self.sums[(slot, "selected")] += inside
                self.sums[(slot, "rest")] += dot - inside
        param.grad = None

    def __enter__(self):
        if self.streaming:
            self.handles = [p.register_post_accumulate_grad_hook(self._hook) for p in self.pairs]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        if not self.streaming and exc[0] is None:   # FSDP sets sharded gradients itself: dot them at the end
            for p in self.pairs:
                if p.grad is not None:
                    self._hook(p)


def flat(grad: torch.Tensor) -> torch.Tensor:
    """Flattened, in fp32 at least (fp64 stays fp64: the finite-difference checks use it); of a
    sharded (FSDP) gradient, this process's shard."""
    return fp32((grad.to_local() if hasattr(grad, "to_local") else grad).flatten())


def take_grads(model) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Move every .grad out of the model (flattened fp32), leaving .grad = None."""
    out = {}
    for p in model.parameters():
        if p.grad is not None:
            out[p] = flat(p.grad)
            p.grad = None
    return out


class Rows(NamedTuple):
    """A stored gradient of a matrix kept as its nonzero rows only: an input embedding's gradient
    touches just the rows of tokens in the batch (a tied matrix's input side, a few hundred of
    ~50k rows), so keeping it whole would cost a second gradient-sized copy of the matrix."""
    index: torch.Tensor
    values: torch.Tensor                      # flat, len(index) × width
    width: int
    numel: int


def compact(grads: dict) -> dict:
    """Stored gradients with their all-zero rows dropped where that halves them or better (a
    process's shard of an FSDP-sharded matrix is not the whole matrix and stays as it is)."""
    out = {}
    for p, g in grads.items():
        shape = p.shape
        if len(shape) == 2 and shape[0] > 1 and g.numel() == shape.numel():
            rows = g.view(shape).ne(0).any(1).nonzero().flatten()
            if 2 * len(rows) <= shape[0]:
                g = Rows(rows, g.view(shape)[rows].flatten(), shape[1], g.numel())
        out[p] = g
    return out


def gather(g: torch.Tensor, ref, sel):
    """(risk gradient, stored gradient, element mask) restricted to the stored gradient's rows."""
    if not isinstance(ref, Rows):
        return g, ref, sel
    pick = lambda t: t.view(-1, ref.width)[ref.index].flatten()  # noqa: E731
    return pick(g), ref.values, None if sel is None else pick(sel)


def dense(g) -> torch.Tensor:
    if not isinstance(g, Rows):
        return g
    return g.values.new_zeros(g.numel).view(-1, g.width).index_copy_(0, g.index, g.values.view(-1, g.width)).flatten()
