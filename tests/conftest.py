"""Fixtures: the kit's tokenizer and small random Llama models (fast, no training)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never wait on the hub (set before imports)

import copy  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import kit  # noqa: E402,F401 (first: its filter of the known import-time log noise applies to transformers' import)
from transformers import LlamaForCausalLM  # noqa: E402

from kit.models import TinyRecipe, tiny_config, train_tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def _tokenizer():
    return train_tiny_tokenizer(TinyRecipe())


@pytest.fixture
def tiny_tokenizer(_tokenizer):
    return copy.deepcopy(_tokenizer)


def make_random_model(tokenizer, seed: int = 0):
    """A randomly initialised 2-layer Llama on the kit's tokenizer (about 0.2M parameters)."""
    torch.manual_seed(seed)
    recipe = TinyRecipe(hidden_size=32, layers=2, heads=2, intermediate_size=64)
    return LlamaForCausalLM(tiny_config(recipe, tokenizer)).eval()


@pytest.fixture
def random_model(_tokenizer):
    return make_random_model(_tokenizer)


@pytest.fixture
def new_random_model():
    """make_random_model itself, for a test that needs several fresh models (import it through
    this fixture: two conftest.py files, tests/ and notebooks/, make `from conftest import` ambiguous)."""
    return make_random_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty kit cache for this test."""
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_notebook(path, parameters: str, *cells: str):
    """A small notebook for the sweep and study tests: a `parameters` cell, then code cells."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path
