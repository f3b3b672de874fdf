"""TOFU's benchmark table as one object: the reference rows of a model family (its retain model,
where the kit has one, and the target before unlearning) and every unlearned run, all evaluated
on the same items, each stored the moment it finishes, so a long benchmark resumes where it
stopped (`kit.tofu.stored_evaluation`).

    bench = TofuBenchmark(runs_dir("default") / "08_tofu_benchmark", source="builtin")
    ev = bench.unlearned(model, tok, "tiny", "forget01", UnlearnConfig.paper("npo", "forget01", "tiny"), restore, family=0)
    bench.references[(0, "forget01")].target      # the target's Evaluation (retain model: .retain)

Used in: notebooks/08_tofu_benchmark.ipynb
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from kit.data import load_split
from kit.models import fingerprint, load_model
from kit.scenario import keep_known
from kit.tofu import ANSWER_TOKENS, Evaluation, evaluate, stored_evaluation, summarise, tofu_splits


class BenchmarkError(ValueError):
    """A benchmark asked to mix models under one family."""


class Reference(NamedTuple):
    """A family's evaluation items and reference rows for one forget split."""
    splits: dict            # {role: records} every model of the family is evaluated on
    retain: Evaluation | None   # the retain model (forget quality 1: compared with itself); None without one
    target: Evaluation      # the model before unlearning
    weights: str            # the target's fingerprint (kit.models.fingerprint, weights only)


@dataclass
class TofuBenchmark:
    """Evaluations of one benchmark, stored under `store`.

    Args:
        source: "builtin" (fictitious authors; tiny has a retain model per split) or "real".
        max_new_tokens: greedy answer length for ROUGE-L.
        max_items: items per retain / utility / holdout split (0: all; the forget split is whole).
        n_boot: bootstrap resamples of the 95% intervals.
        resume: reuse a stored evaluation with the same key (model weights, split, settings).
    """
    store: Path
    source: str = "builtin"
    max_new_tokens: int = ANSWER_TOKENS
    max_items: int = 0
    n_boot: int = 1000
    resume: bool = True
    references: dict = field(default_factory=dict)   # {(family, split): Reference}

    def _stored(self, model_key: str, split: str, name: str, settings: dict, make) -> Evaluation:
        key = {"model": model_key, "split": split, "name": name, "source": self.source, "tokens": self.max_new_tokens,
               "items": self.max_items, "n_boot": self.n_boot, **settings}
        return stored_evaluation(self.store, key, make, resume=self.resume)

    def _evaluate(self, model, tok, splits, reference=None) -> Evaluation:
        return evaluate(model, tok, splits, reference=reference, max_new_tokens=self.max_new_tokens, n_boot=self.n_boot)

    def records(self, model, tok, model_id: str, split: str) -> tuple[list, list]:
        """The forget and retain records unlearning trains on (on real knowledge: what the model knew)."""
        forget = list(load_split(split, self.source))
        retain = list(load_split(f"retain{100 - int(split[6:])}" if split[6:].isdigit() else "retain", self.source))
        if self.source == "real":
            forget = keep_known(model, tok, forget, cache_key=model_id)
        return forget, retain

    def reference(self, model, tok, model_id: str, split: str, family: int | None = None) -> Reference:
        """The family's evaluation items, retain model and target, evaluated once (`model` must hold
        the target's weights on the first call for a family and split)."""
        weights = fingerprint(model, config=False)
        if (family, split) in self.references:
            known = self.references[(family, split)]
            if known.weights != weights:
                raise BenchmarkError(f"family={family!r} already holds another model's references for {split!r}; "
                                     "pass each model family its own family= (and restore the target's weights first).")
            return known
        splits = tofu_splits(split, self.source)
        splits = {role: recs if role == "forget" or not self.max_items else recs[:self.max_items] for role, recs in splits.items()}
        if self.source == "real":    # only the facts the model really knew count as forget / retain knowledge
            for role in ("forget", "retain"):
                splits[role] = keep_known(model, tok, splits[role], cache_key=model_id)
        retain = None
        if model_id == "tiny" and self.source == "builtin" and split[6:].isdigit():
            variant = f"retain{100 - int(split[6:])}"
            retain_model, _ = load_model("tiny", variant=variant, seed=family)
            retain = self._stored(f"{model_id}/{variant} @ {fingerprint(retain_model, config=False)}", split, variant, {"variant": variant},
                                  lambda: self._evaluate(retain_model, tok, splits))
            retain = summarise(retain.items, reference=retain.items, n_boot=self.n_boot)   # its forget quality: 1
            del retain_model
        target = self._stored(f"{model_id} @ {weights}", split, "target", {"reference": retain is not None},
                              lambda: self._evaluate(model, tok, splits, retain))
        self.references[(family, split)] = Reference(splits, retain, target, weights)
        return self.references[(family, split)]

    def unlearned(self, model, tok, model_id: str, split: str, config, restore: Callable[[], None],
                  family: int | None = None) -> Evaluation:
        """`restore()` the target's weights, unlearn `split` with `config` (kit.UnlearnConfig) and
        evaluate; a stored evaluation of the same target, split and config is read back instead
        (then `model` keeps the target's weights)."""
        from kit.unlearning import unlearn
        restore()
        ref = self.reference(model, tok, model_id, split, family)
        forget, retain = self.records(model, tok, model_id, split)

        def run():
            unlearn(model, tok, forget, retain, config=config, model_id=model_id, data_id=split)
            return self._evaluate(model, tok, ref.splits, ref.retain)
        return self._stored(f"{model_id} @ {ref.weights}", split, config.objective if config.regularizer == "none"
                            else f"{config.objective}+{config.regularizer}", asdict(config), run)
