"""The G-effect along a run: from checkpoints and live, which must agree."""
import numpy as np
import pytest

from kit import probes
from kit.data import load_split
from kit.rundir import RunDirError
from kit.unlearning import UnlearnConfig, unlearn

FORGET = list(load_split("forget01"))[:8]
RETAIN = list(load_split("retain99"))[:8]


def test_live_callback_equals_checkpoint_probe(random_model, tiny_tokenizer, tmp_path):
    config = UnlearnConfig(objective="npo", hparams={"beta": 0.5}, regularizer="nll", epochs=2, lr=1e-2,
                           batch_size=4, save_every=2, seed=0)
    live = probes.GEffectCallback(tiny_tokenizer, FORGET, RETAIN, config, every=2)
    unlearn(random_model, tiny_tokenizer, FORGET, RETAIN, config=config, run_dir=tmp_path / "run", callbacks=[live])
    after = probes.g_effect_over_run(tmp_path / "run", tiny_tokenizer, FORGET, RETAIN)
    now = live.frame()
    assert sorted(now.step.unique()) == sorted(after.step.unique()) == [0, 2, 4]
    key = ["step", "component", "group"]
    merged = now.merge(after, on=key, suffixes=("_live", "_ckpt"))
    assert len(merged) == len(now) == len(after)
    assert np.allclose(merged.e_u_live, merged.e_u_ckpt, rtol=1e-4, atol=1e-7)
    assert np.allclose(merged.e_r_live, merged.e_r_ckpt, rtol=1e-4, atol=1e-7)
    assert set(now.component) == {"npo", "nll x 1", "total"}


def test_ema_mode_reports_every_k_steps(random_model, tiny_tokenizer):
    config = UnlearnConfig(objective="ga", epochs=2, lr=1e-2, batch_size=4, seed=0)
    ema = probes.GEffectCallback(tiny_tokenizer, FORGET, RETAIN, config, every=2, mode="ema", batch_size=4)
    unlearn(random_model, tiny_tokenizer, FORGET, RETAIN, config=config, callbacks=[ema])
    df = ema.frame()
    totals = df[df.group == "total"]
    assert list(totals.step) == [0, 2, 4] and np.isfinite(totals.e_u).all()
    assert (totals.e_u < 0).all()          # GA lowers log-likelihood on the forget batch it sees
    with pytest.raises(probes.geffect.GEffectError, match="Unknown G-effect mode"):
        probes.GEffectCallback(tiny_tokenizer, FORGET, RETAIN, config, mode="smooth")


def test_missing_checkpoint_is_a_clear_error(random_model, tiny_tokenizer, tmp_path):
    config = UnlearnConfig(objective="ga", epochs=1, lr=1e-2, batch_size=4, save_every=1, seed=0)
    unlearn(random_model, tiny_tokenizer, FORGET, config=config, run_dir=tmp_path / "run")
    weights = tmp_path / "run" / "checkpoint-1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])                 # half-written: detected, not loaded
    with pytest.raises(RunDirError, match="checkpoint-1 is corrupt and was not loaded"):
        probes.g_effect_over_run(tmp_path / "run", tiny_tokenizer, FORGET, RETAIN)
    weights.unlink()
    with pytest.raises(RunDirError, match="checkpoint-1 has no model.safetensors"):
        probes.g_effect_over_run(tmp_path / "run", tiny_tokenizer, FORGET, RETAIN)


def test_explorer_views_and_errors(random_model, tiny_tokenizer, tmp_path):
    from kit.explore import ExploreError, Explorer, find_runs
    with pytest.raises(ExploreError, match="No run directories"):
        find_runs(tmp_path)
    config = UnlearnConfig(objective="npo", hparams={"beta": 0.5}, epochs=2, lr=1e-2, batch_size=4, save_every=1, seed=0)
    unlearn(random_model, tiny_tokenizer, FORGET, config=config, run_dir=tmp_path / "npo")
    ex = Explorer(tmp_path, tiny_tokenizer, FORGET, RETAIN)
    assert list(ex.runs) == ["npo"] and ex.steps("npo")[0] == 0
    toks = ex.tokens("npo", ex.steps("npo")[-1], 1)
    assert len(toks) > 3 and toks.weight.nunique() == 1                 # NPO: one weight per sequence
    assert ex.tokens("npo", 0, 1).weight.eq(1.0).all()                   # at the start p = p_ref: weight 1
    with pytest.raises(ExploreError, match="Unknown run 'ga'; the runs here are: npo"):
        ex.steps("ga")
    with pytest.raises(ExploreError, match="no checkpoint at step 99"):
        ex.model("npo", 99)
    with pytest.raises(ExploreError, match=f"example {len(FORGET)} is out of range"):
        ex.tokens("npo", 0, len(FORGET))


def test_instance_effects_over_a_run(random_model, tiny_tokenizer, tmp_path):
    config = UnlearnConfig(objective="npo", hparams={"beta": 0.5}, epochs=2, lr=1e-2, batch_size=4, save_every=2, seed=0)
    unlearn(random_model, tiny_tokenizer, FORGET, config=config, run_dir=tmp_path / "run")
    pg = probes.pg_effect_over_run(tmp_path / "run", tiny_tokenizer, FORGET, RETAIN)
    assert sorted(pg.step.unique()) == [0, 2, 4] and len(pg) == 3 * len(FORGET)
    start = pg[pg.step == 0]
    assert np.allclose(start.weight, 1.0)           # at θ_0, p = p_o: every NPO weight is 1
    assert np.isfinite(pg[["pg_u", "pg_r", "weight"]].values).all()
