"""unlearning-kit: analyse LLM unlearning (G-effect, WAGLE) on a laptop, evaluate it the TOFU way.

    from kit import load_model, load_split
    model, tok = load_model("tiny")                  # built on first use, then cached
    forget = load_split("forget01")                  # the kit's fictitious authors
"""
from kit import geffect, objectives
from kit.data import DataError, ForgetRetainDataset, QADataset, list_splits, load_split
from kit.evaluation import answer_scores, generate_answers, keep_known, knowledge_table, matched_forgetting
from kit.models import ModelError, build_tiny, build_tiny_family, count_parameters, load_model
from kit.report import environment_report, record
from kit.train import FinetuneConfig, finetune
from kit.unlearn import TrackSplits, UnlearnConfig, UnlearnError, unlearn

__version__ = "0.1.0"
__all__ = [
    "geffect", "objectives", "DataError", "ModelError", "FinetuneConfig", "ForgetRetainDataset", "QADataset",
    "TrackSplits", "UnlearnConfig", "UnlearnError", "unlearn",
    "answer_scores", "build_tiny", "build_tiny_family", "count_parameters", "environment_report", "finetune",
    "generate_answers", "keep_known", "knowledge_table", "list_splits", "matched_forgetting", "load_model", "load_split", "record",
]
