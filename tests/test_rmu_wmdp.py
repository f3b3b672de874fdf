"""RMU as WMDP trains it: the loss from its definition, the MLP down-projections of blocks ℓ−2..ℓ
as a mask, the G-effect of its retain term, and the published recipe by name."""
import pytest
import torch

from kit import attribution, firstorder, geffect, objectives
from kit.data import Collator, ForgetRetainDataset, load_split
from kit.unlearning import UnlearnConfig, UnlearnError, unlearn

QA = list(load_split("forget01"))
DOCS = [{"text": " ".join(r["answer"] for r in QA[i:i + 4])} for i in range(0, 16, 4)]
RETAIN = list(load_split("retain99"))[:8]


def _batch(tok, forget, retain):
    data = ForgetRetainDataset(forget, retain, tok, max_length=32)
    return Collator(tok)([data[i] for i in range(len(data))])


def test_loss_is_wmdps_definition(random_model, tiny_tokenizer):
    batch = _batch(tiny_tokenizer, DOCS, RETAIN)
    ref = objectives.make_reference(random_model)
    out = objectives.compute("rmu_wmdp", random_model, batch, ref=ref, layer=1, coeff=3.0, alpha=50.0)
    with torch.no_grad():
        f = batch["forget"]
        seen = []                                                   # block 1's output: the residual stream, before the final norm
        hook = random_model.model.layers[1].register_forward_hook(lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out))
        random_model(input_ids=f["input_ids"], attention_mask=f["attention_mask"])
        hook.remove()
        h = seen[0]
        u = 3.0 * objectives.rmu_direction(h.shape[-1], 0)
        keep = f["attention_mask"].bool()
        per = torch.stack([((h[i][keep[i]] - u) ** 2).mean() for i in range(len(h))])
    assert out.loss.item() == pytest.approx(per.mean().item(), rel=1e-5)    # at θ_0 the retain term is 0
    with torch.no_grad():                                                     # move the model: the retain term counts
        for p in random_model.model.layers[0].mlp.down_proj.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = objectives.compute("rmu_wmdp", random_model, batch, ref=ref, layer=1, coeff=3.0, alpha=50.0)
    just_forget = objectives.compute("rmu_wmdp", random_model, batch, ref=ref, layer=1, coeff=3.0, alpha=0.0)
    assert moved.loss.item() > just_forget.loss.item()
    assert objectives.paper_hparams("rmu_wmdp", model="zephyr-7b") == {"layer": 7, "coeff": 6.5, "alpha": 1200.0}
    with pytest.raises(objectives.ObjectiveError, match="needs a retain batch"):
        objectives.compute("rmu_wmdp", random_model, {"forget": batch["forget"]}, ref=ref, layer=1)


def test_unlearning_moves_only_the_down_projections_and_steers_the_forget_states(random_model, tiny_tokenizer, tmp_path):
    mask = attribution.block_mask(random_model, [0, 1])
    assert sorted(mask.masks) == [f"model.layers.{b}.mlp.down_proj.weight" for b in (0, 1)]
    before = {n: p.detach().clone() for n, p in random_model.named_parameters()}
    batch = _batch(tiny_tokenizer, DOCS, RETAIN)
    hp = {"layer": 1, "coeff": 3.0, "alpha": 10.0}
    ref = objectives.make_reference(random_model)
    start = objectives.compute("rmu_wmdp", random_model, batch, ref=ref, alpha=0.0, layer=1, coeff=3.0).loss.item()
    config = UnlearnConfig(objective="rmu_wmdp", hparams=hp, epochs=3, lr=1e-2, batch_size=4, seed=0, max_length=32)
    unlearn(random_model, tiny_tokenizer, DOCS, RETAIN, config=config, mask=mask, run_dir=tmp_path / "run")
    changed = {n for n, p in random_model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(mask.masks)
    after = objectives.compute("rmu_wmdp", random_model, batch, ref=ref, alpha=0.0, layer=1, coeff=3.0).loss.item()
    assert after < start                                            # the forget states moved toward c·u
    with pytest.raises(UnlearnError, match="needs retain records"):
        unlearn(random_model, tiny_tokenizer, DOCS, None, config=config)
    with pytest.raises(attribution.AttributionError, match=r"not all in 0..1"):
        attribution.block_mask(random_model, [5, 6, 7])


def test_g_effect_includes_the_retain_term_and_predicts_a_step(random_model, tiny_tokenizer):
    hp = {"layer": 1, "coeff": 3.0, "alpha": 10.0}
    with torch.no_grad():                 # away from θ_0, where the retain term's gradient is 0
        for p in random_model.model.layers[1].mlp.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref = objectives.make_reference(random_model)
    with torch.no_grad():
        for p in random_model.model.layers[0].mlp.parameters():
            p.add_(0.02 * torch.randn_like(p))
    check = firstorder.check_first_order(random_model, tiny_tokenizer, "rmu_wmdp", DOCS, RETAIN, lr=1e-3, hparams=hp,
                                      ref=ref, batch_size=8, max_length=32)
    assert (check["rel_error"] < 0.05).all() and check.resolved.sum() >= 6, check   # the groups RMU reaches are resolved
    with_retain = geffect.g_effect(random_model, tiny_tokenizer, "rmu_wmdp", DOCS, RETAIN, hparams=hp, ref=ref,
                                   max_length=32)
    without = geffect.g_effect(random_model, tiny_tokenizer, "rmu_wmdp", DOCS, RETAIN, hparams={**hp, "alpha": 0.0},
                               ref=ref, max_length=32)
    total = lambda df: df[(df.component == "total") & (df.group == "total")].iloc[0]  # noqa: E731
    assert total(with_retain).e_r != pytest.approx(total(without).e_r, rel=1e-3)


def test_the_published_recipe_by_name():
    config = UnlearnConfig.paper("rmu_wmdp", model="zephyr-7b")
    assert config.hparams == {"layer": 7, "coeff": 6.5, "alpha": 1200.0}
    assert (config.lr, config.batch_size, config.max_length, config.epochs) == (5e-5, 4, 512, 1.0)
    with pytest.raises(objectives.ObjectiveError, match="No paper rmu_wmdp setting for model 'tiny'"):
        UnlearnConfig.paper("rmu_wmdp", model="tiny")


def test_the_hidden_state_is_the_blocks_output_also_for_the_last_block(random_model, tiny_tokenizer):
    batch = _batch(tiny_tokenizer, DOCS, RETAIN)["forget"]
    with torch.no_grad():
        states = random_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True).hidden_states
        assert torch.equal(objectives.hidden_state(random_model, batch, 0), states[1])          # an inner block: the same
        last = objectives.hidden_state(random_model, batch, 1)
        assert not torch.allclose(last, states[2])                                       # transformers' last entry is normed ...
        assert torch.allclose(random_model.model.norm(last), states[2], atol=1e-5)       # ... from this state
