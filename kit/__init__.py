"""unlearning-kit: analyse LLM unlearning (G-effect, WAGLE) on a laptop, evaluate it the TOFU way.

    from kit import load_model, load_split
    model, tok = load_model("tiny")                  # built on first use, then cached
    forget = load_split("forget01")                  # the kit's fictitious authors

Names are imported on first use, so `python -m kit tofu-score` and `import kit.tofu` do not pay
for torch and transformers until a model is touched.
"""
import importlib
import logging

__version__ = "0.1.0"


class _KnownNoise(logging.Filter):
    """Drops two harmless messages that importing transformers prints once torchao (kit.audit's
    quantization library) is installed: its CUDA-only kernels failing to load on a CPU machine, and
    torch's note on its enum registrations. Every other message of those loggers passes."""
    NOISE = ("Failed to load", "is an Enum subclass and is now natively supported")

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith(self.NOISE[0]) and ".so" in record.getMessage()) and self.NOISE[1] not in text


for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).addFilter(_KnownNoise())

_HOME = {  # public name -> module that defines it
    **dict.fromkeys(["DataError", "ForgetRetainDataset", "QADataset", "list_splits", "load_split"], "kit.data"),
    **dict.fromkeys(["answer_scores", "generate_answers", "knowledge_table", "matched_forgetting", "score_pairs"],
                    "kit.evaluation"),
    **dict.fromkeys(["ModelError", "build_tiny", "build_tiny_family", "count_parameters", "each_replicate",
                     "load_model"], "kit.models"),
    **dict.fromkeys(["environment_report", "record"], "kit.report"),
    "nll_axes": "kit.plots",
    **dict.fromkeys(["FinetuneConfig", "finetune"], "kit.train"),
    **dict.fromkeys(["TrackChoices", "TrackSplits", "UnlearnConfig", "UnlearnError", "unlearn"], "kit.unlearning"),
    **dict.fromkeys(["Evaluation", "evaluate", "tofu_splits"], "kit.tofu"),
    **dict.fromkeys(["ChoiceScenario", "Scenario", "keep_known", "load_choice_scenario", "load_scenario"], "kit.scenario"),
}
_MODULES = ("attribution", "audit", "authors", "benchmark", "claims", "cluster", "corpora", "data", "distributed", "evaluation", "explore", "facts", "firstorder",
            "forward", "geffect", "gradstream", "groups", "mcq", "mia", "models", "objectives", "paths", "plots", "probes",
            "realworld", "replicate", "report", "rundir", "scenario", "sweep", "tofu", "train", "unlearning")
__all__ = sorted(_HOME) + list(_MODULES)
assert not set(_HOME) & set(_MODULES), "a public name must mean one thing: a function or a module, not both"


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"kit.{name}")
    raise AttributeError(f"module 'kit' has no attribute {name!r}")


def __dir__():
    return __all__
