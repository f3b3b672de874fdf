"""The unlearning engine: checkpoints, manifest, NaN stop, determinism."""
import json

import pytest
import torch

from kit import objectives
from kit.data import load_split
from kit.evaluation import answer_scores
from kit.rundir import RunDirError, read_manifest
from kit.unlearning import UnlearnConfig, UnlearnError, unlearn

FORGET = list(load_split("forget01"))[:8]
RETAIN = list(load_split("retain99"))[:8]


def _config(**kw):
    base = dict(objective="ga", epochs=2, lr=1e-2, batch_size=4, save_every=2, seed=0)
    return UnlearnConfig(**{**base, **kw})


def test_ga_run_raises_forget_nll_and_writes_checkpoints(random_model, tiny_tokenizer, tmp_path):
    before = answer_scores(random_model, tiny_tokenizer, FORGET)["nll"].mean()
    run = unlearn(random_model, tiny_tokenizer, FORGET, config=_config(), run_dir=tmp_path / "run",
                  model_id="random", data_id="forget01[:8]")
    assert answer_scores(random_model, tiny_tokenizer, FORGET)["nll"].mean() > before
    manifest = read_manifest(tmp_path / "run")
    assert manifest["steps"] == [0, 2, 4] and manifest["finished"] and manifest["model"] == "random"
    assert manifest["format"] == 1
    assert all((tmp_path / "run" / f"checkpoint-{s}" / "model.safetensors").exists() for s in manifest["steps"])
    assert list(run.history["step"]) == [1, 2, 3, 4] and "forget_loss" in run.history


def test_same_seed_same_result(random_model, tiny_tokenizer):
    state = {k: v.clone() for k, v in random_model.state_dict().items()}
    config = _config(objective="npo", regularizer="nll", save_every=0)
    unlearn(random_model, tiny_tokenizer, FORGET, RETAIN, config=config)
    twin = random_model.__class__(random_model.config)
    twin.load_state_dict(state)
    unlearn(twin, tiny_tokenizer, FORGET, RETAIN, config=config)
    for (name, p), q in zip(random_model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), name


def test_reference_is_made_only_when_needed(random_model, tiny_tokenizer, monkeypatch):
    made = []
    original = objectives.make_reference
    monkeypatch.setattr(objectives, "make_reference", lambda m: made.append(1) or original(m))
    unlearn(random_model, tiny_tokenizer, FORGET, RETAIN, config=_config(regularizer="nll", epochs=1, save_every=0))
    assert made == []
    unlearn(random_model, tiny_tokenizer, FORGET, RETAIN, config=_config(regularizer="kl", epochs=1, save_every=0))
    assert made == [1]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(random_model, tiny_tokenizer,
                                                                           tmp_path, monkeypatch):
    calls = []

    def explodes(model, batch, ref=None):
        out = objectives.ga(model, batch)
        calls.append(1)
        if len(calls) >= 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setitem(objectives.OBJECTIVES, "explodes", explodes)
    with pytest.raises(UnlearnError, match="stopped at optimizer step 3.*checkpoint-2"):
        unlearn(random_model, tiny_tokenizer, FORGET, config=_config(objective="explodes", save_every=2),
                run_dir=tmp_path / "run")
    manifest = read_manifest(tmp_path / "run")
    assert manifest["steps"] == [0, 2] and not manifest["finished"]


def test_bad_inputs(random_model, tiny_tokenizer, tmp_path):
    with pytest.raises(objectives.ObjectiveError, match="Unknown objective"):
        unlearn(random_model, tiny_tokenizer, FORGET, config=_config(objective="nope"))
    with pytest.raises(RunDirError, match="not a run directory"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{half")
    with pytest.raises(RunDirError, match="corrupt"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 99, "objective": "ga"}))
    with pytest.raises(RunDirError, match="has format 99; this kit reads format 1"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"objective": "ga"}))
    with pytest.raises(RunDirError, match="lacks config, steps, finished"):
        read_manifest(tmp_path)
    json.dumps(_config().train_config().as_dict())


def test_track_splits_scores_every_step(random_model, tiny_tokenizer):
    from kit.unlearning import TrackSplits
    track = TrackSplits(tiny_tokenizer, {"forget": FORGET, "retain": RETAIN}, every=1)
    unlearn(random_model, tiny_tokenizer, FORGET, config=_config(save_every=0), callbacks=[track])
    df = track.frame()
    assert sorted(df["step"].unique()) == [0, 1, 2, 3, 4] and set(df["split"]) == {"forget", "retain"}
    forget = df[df.split == "forget"].set_index("step")["nll"]
    assert forget[4] > forget[0]    # GA at a high rate: the forget NLL rises


def test_paper_configs_by_name():
    c = UnlearnConfig.paper("gd", "forget01", "tiny")
    assert (c.objective, c.regularizer, c.lr, c.hparams) == ("ga", "nll", 1e-3, {})
    c = UnlearnConfig.paper("WTNPO", "forget10", hparams={"alpha": 2.0}, epochs=1)
    assert c.hparams == {"alpha": 2.0, "beta": 7.0} and c.epochs == 1 and c.lr == 2e-5
    assert UnlearnConfig.paper("rmu", model="tiny").hparams == {"layer": 2, "coeff": 20.0}
    with pytest.raises(objectives.ObjectiveError, match="Unknown objective 'nop'"):
        UnlearnConfig.paper("nop")
    c = UnlearnConfig.paper("npo+kl", "forget01", "tiny")
    assert (c.objective, c.regularizer, c.hparams) == ("npo", "kl", {"beta": 0.5})
    with pytest.raises(objectives.ObjectiveError, match="'npo\\+l2'.*'npo\\+nll' or 'npo\\+kl'"):
        UnlearnConfig.paper("npo+l2")


def test_paper_config_without_a_published_setting_takes_the_callers():
    """RMU has no published block and coefficient for SmolLM2: the error says how to give them, and given in full they are used."""
    with pytest.raises(objectives.ObjectiveError, match="No paper rmu setting for model 'smollm2-135m'.*hparams="):
        UnlearnConfig.paper("rmu", "forget", "smollm2-135m")
    with pytest.raises(objectives.ObjectiveError, match="No paper rmu setting"):        # a coefficient alone is not enough
        UnlearnConfig.paper("rmu", "forget", "smollm2-135m", hparams={"coeff": 100.0})
    c = UnlearnConfig.paper("rmu", "forget", "smollm2-135m", hparams={"layer": 20, "coeff": 100.0})
    assert (c.objective, c.hparams, c.lr) == ("rmu", {"layer": 20, "coeff": 100.0}, 1e-5)
    assert objectives.paper_keys("rmu") == {"layer", "coeff"} and objectives.paper_keys("wtnpo") == {"alpha", "beta"}


def test_same_seed_gives_the_same_run_g_effects_and_metrics(tiny_tokenizer, tmp_path, new_random_model):
    """Determinism: two runs from the same seed agree bit for bit (weights, G-effects, scores)."""
    from kit import geffect
    from kit.evaluation import answer_scores
    results = []
    for attempt in range(2):
        model = new_random_model(tiny_tokenizer)
        config = UnlearnConfig(objective="npo", hparams={"beta": 0.5}, regularizer="nll", epochs=2, lr=1e-2,
                               batch_size=4, seed=3)
        run = unlearn(model, tiny_tokenizer, FORGET, RETAIN, config)
        effects = geffect.g_effect(run.model, tiny_tokenizer, "npo", FORGET, RETAIN, hparams={"beta": 0.5},
                                   ref=new_random_model(tiny_tokenizer))
        results.append((torch.cat([p.detach().flatten() for p in run.model.parameters()]),
                        effects[["e_u", "e_r"]].to_numpy(), answer_scores(run.model, tiny_tokenizer, FORGET)["nll"].to_numpy()))
    assert torch.equal(results[0][0], results[1][0])
    assert (results[0][1] == results[1][1]).all() and (results[0][2] == results[1][2]).all()


def test_explorer_runs_are_reused_only_for_the_same_weights(tiny_tokenizer, new_random_model, tmp_path):
    from kit.explore import make_runs
    from kit.rundir import read_manifest
    a, b = new_random_model(tiny_tokenizer, seed=0), new_random_model(tiny_tokenizer, seed=1)
    make_runs(tmp_path, a, tiny_tokenizer, FORGET, RETAIN, ["ga"], "forget01", "tiny", epochs=1, save_every=0)
    first, saved = read_manifest(tmp_path / "ga"), tmp_path / "ga" / "checkpoint-0" / "model.safetensors"
    stamp = saved.stat().st_mtime_ns
    make_runs(tmp_path, a, tiny_tokenizer, FORGET, RETAIN, ["ga"], "forget01", "tiny", epochs=1, save_every=0)
    assert saved.stat().st_mtime_ns == stamp                                       # same weights: kept
    make_runs(tmp_path, b, tiny_tokenizer, FORGET, RETAIN, ["ga"], "forget01", "tiny", epochs=1, save_every=0)
    assert read_manifest(tmp_path / "ga")["model"] != first["model"]             # another family: redone
    assert a.config.use_cache and b.config.use_cache                            # Trainer's use_cache=False was given back


def test_training_stays_on_the_models_device(random_model, monkeypatch):
    """On a GPU machine a model the user keeps on the CPU trains on the CPU: the Trainer would move it
    to the GPU and leave its frozen reference behind (seen on an H200 by bench/gpu.py)."""
    from kit.train import FinetuneConfig, training_args
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_args("unused", FinetuneConfig(), 8, False, random_model).use_cpu
