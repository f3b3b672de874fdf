"""The public surface: every name the package exports means one thing, and works however it is reached."""
import importlib
import subprocess
import sys

import pytest
import torch

import kit
from kit import forward
from kit.data import load_split
from kit.evaluation import generate_answers, score_pairs

FORGET = list(load_split("forget01"))[:4]


def test_no_public_name_is_both_a_function_and_a_module():
    for name in kit.__all__:
        obj = getattr(kit, name)
        assert importlib.util.find_spec(f"kit.{name}") is None or obj.__class__.__name__ == "module", name


@pytest.mark.parametrize("first", ["import kit.unlearning", "from kit import UnlearnConfig"])
@pytest.mark.slow
def test_unlearn_is_callable_however_the_package_was_imported(first):
    code = (f"{first}\nimport kit\nimport kit.unlearning\nfrom kit import UnlearnConfig\n"
            "assert callable(kit.unlearn) and kit.unlearn is kit.unlearning.unlearn, kit.unlearn\n"
            "for name in kit.__all__:\n    getattr(kit, name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_unlearn_runs_twice_in_one_process(random_model, tiny_tokenizer):
    importlib.import_module("kit.unlearning")            # binding the module must not shadow the function
    config = kit.UnlearnConfig(objective="ga", epochs=1, lr=1e-3, batch_size=4, save_every=0)
    for _ in range(2):
        run = kit.unlearn(random_model, tiny_tokenizer, FORGET, config=config)
        assert list(run.history["step"]) == [1]


@pytest.mark.slow
def test_every_module_resolves_without_a_prior_import():
    code = "import kit\nfor name in kit._MODULES:\n    assert getattr(kit, name).__name__ == f'kit.{name}', name\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


class _OldCacheName(torch.nn.Module):
    """A model whose forward still takes `past_key_values` (transformers before 5.24, custom code)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                logits_to_keep=0):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         **forward.cached(self.inner, past_key_values), use_cache=use_cache,
                         logits_to_keep=logits_to_keep)
        return {"logits": out.logits, "past_key_values": forward.cache_of(out)} if use_cache else {"logits": out.logits}


def test_cache_keyword_follows_the_models_forward(random_model):
    new = "cache" if "cache" in forward._parameters(random_model) else "past_key_values"
    assert list(forward.cached(random_model, None)) == [new]
    assert list(forward.cached(_OldCacheName(random_model), None)) == ["past_key_values"]


def test_cached_scoring_and_generation_raise_no_deprecation_warning(random_model, tiny_tokenizer, recwarn):
    questions = [r["question"] for r in FORGET] * 2           # repeated prompts take the cached path
    score_pairs(random_model, tiny_tokenizer, questions, [r["answer"] for r in FORGET] * 2, share_prompts=True)
    generate_answers(random_model, tiny_tokenizer, questions, max_new_tokens=4)
    assert not [w for w in recwarn if issubclass(w.category, (DeprecationWarning, FutureWarning))]


def test_library_calls_leave_the_callers_model_and_backend_alone(random_model, tiny_tokenizer, tmp_path):
    import matplotlib
    import pandas as pd

    from kit import attribution, geffect, sweep
    backend = matplotlib.get_backend()
    for p in random_model.parameters():
        p.grad = torch.full_like(p, 7.0)
    random_model.train()
    geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET, FORGET)
    geffect.pg_effect(random_model, tiny_tokenizer, "ga", FORGET[:2], FORGET)
    attribution.scores("wagle", random_model, tiny_tokenizer, FORGET, FORGET)
    assert random_model.training and all(torch.all(p.grad == 7.0) for p in random_model.parameters())
    table = pd.DataFrame({"run": ["a", "b"], "status": ["done", "done"], "X": [1, 2], "y": [0.1, 0.2]})
    sweep._figure(table, ["X"], tmp_path / "summary.png")
    assert matplotlib.get_backend() == backend and (tmp_path / "summary.png").stat().st_size > 1000


LAYERS = [["paths", "authors", "facts", "realworld", "groups", "distributed", "mia", "plots"], ["data", "corpora"], ["forward", "train"],
          ["objectives", "gradstream", "evaluation", "rundir", "report"], ["tofu", "mcq", "geffect", "models"],
          ["unlearning", "attribution", "scenario", "claims", "audit", "firstorder"], ["probes", "explore", "benchmark"], ["cluster", "sweep", "replicate"]]


def _imports():
    """{module: kit modules it imports anywhere in its file (top level or inside functions)}."""
    import ast
    from pathlib import Path
    folder = Path(kit.__file__).parent
    out = {}
    for path in sorted(folder.glob("*.py")):
        if path.stem.startswith("__"):
            continue
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "kit":
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kit."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("kit.")}
        out[path.stem] = deps - {path.stem}
    return out


def test_the_import_graph_follows_the_layers_of_docs_architecture():
    graph = _imports()
    layer = {m: i for i, names in enumerate(LAYERS) for m in names}
    assert set(graph) == set(layer), "a new module needs a layer here and in docs/architecture.md"
    assert set(graph) == set(kit._MODULES), "kit/__init__.py's _MODULES must list every module"
    upward = [(m, d, layer[m], layer[d]) for m, deps in graph.items() for d in deps if layer[d] > layer[m]]
    assert not upward, upward
    for i, names in enumerate(LAYERS):                      # within a layer: no cycles
        seen, order = set(), []

        def visit(m, path=()):
            assert m not in path, f"import cycle {path + (m,)}"
            for d in graph[m]:
                if layer[d] == i:
                    visit(d, path + (m,))
        for m in names:
            visit(m)


def test_outputs_never_go_into_an_installed_package(tmp_path, monkeypatch):
    from kit import paths
    monkeypatch.delenv(paths.OUTPUT_ENV, raising=False)
    assert paths.figures_dir("t").parent.parent == paths.ROOT               # a source checkout
    monkeypatch.setattr(paths, "ROOT", tmp_path / "site-packages")           # an installed package
    monkeypatch.chdir(tmp_path)
    assert paths.runs_dir("t") == tmp_path / "runs" / "t"


def test_the_private_internals_the_kit_relies_on_still_exist():
    """kit.train overrides Trainer._get_train_sampler (written for transformers 5.21-5.24) and
    kit.distributed reads FSDP's _get_fsdp_state() param groups (written for torch 2.13). Neither has
    a public equivalent; if an upgrade removes them, this test names what to port."""
    import inspect as _inspect

    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group
    from transformers import Trainer
    assert "train_dataset" in _inspect.signature(Trainer._get_train_sampler).parameters, \
        "transformers changed Trainer._get_train_sampler: port kit.train._Trainer"
    assert all(hasattr(FSDPModule, n) for n in ("_get_fsdp_state", "set_gradient_divide_factor",
                                                "set_force_sum_reduction_for_comms")), \
        "torch changed FSDPModule: port kit.distributed.summed_shard_gradients"
    source = _inspect.getsource(_fsdp_param_group.FSDPParamGroup)
    assert "gradient_divide_factor" in source and "force_sum_reduction_for_comms" in source, \
        "torch changed FSDPParamGroup: port kit.distributed.summed_shard_gradients"
