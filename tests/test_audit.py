"""Relearning and quantization audits (kit.audit) on tiny random models."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from kit import audit
from kit.audit import AuditError
from kit.data import load_split

FORGET = list(load_split("forget01_perturbed"))[:12]


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_weights_lie_on_the_grid(random_model, bits):
    before = copy.deepcopy(random_model.state_dict())
    q = audit.quantize(random_model, bits=bits, group_size=32)
    for name, module in q.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        w = module.weight
        w = w.dequantize() if hasattr(w, "dequantize") else w.detach()
        original = before[f"{name}.weight"]
        if ".self_attn." not in name and ".mlp." not in name:          # the head stays in full precision
            assert torch.equal(w, original), name
            continue
        scale = module.weight.scale.reshape(-1, 1)                       # one per group of 32 inputs
        groups, error = w.reshape(-1, 32), (w - original).reshape(-1, 32)
        ticks = groups / scale
        assert torch.allclose(ticks, ticks.round(), atol=1e-3), name            # on the group's grid
        assert ticks.round().min() >= -2 ** (bits - 1) and ticks.round().max() <= 2 ** (bits - 1) - 1
        assert (error.abs() <= 0.5 * scale * (1 + 1e-4)).all(), name            # round to nearest: half a step at most
        big = original.reshape(-1, 32).abs().amax(1, keepdim=True)
        assert (big <= 2 ** (bits - 1) * scale * (1 + 1e-4)).all()             # the grid spans the group's weights
    assert all(torch.equal(v, before[k]) for k, v in random_model.state_dict().items())   # the original is untouched
    assert torch.equal(q.model.embed_tokens.weight, before["model.embed_tokens.weight"])


def test_quantization_errors_name_the_value(random_model):
    with pytest.raises(AuditError, match="bits=3: the quantization audit rounds to 8 or 4 bits"):
        audit.quantize(random_model, bits=3)
    with pytest.raises(AuditError, match=r"model.layers.0.self_attn.q_proj has \d+ inputs, not a multiple of group_size=48"):
        audit.quantize(random_model, bits=4, group_size=48)


def test_relearning_is_finetune_for_a_fixed_number_of_steps(random_model, tiny_tokenizer):
    from kit.train import FinetuneConfig, finetune
    attacked = audit.relearner(tiny_tokenizer, FORGET, steps=3, lr=1e-3, batch_size=4, seed=1)(random_model)
    # the same engine: 12 records in batches of 4 for one epoch are the same 3 steps and schedule
    config = FinetuneConfig(epochs=1, lr=1e-3, batch_size=4, warmup_epochs=0.0, max_length=512, seed=1)
    twin = finetune(copy.deepcopy(random_model), tiny_tokenizer, FORGET, config, progress=False)
    for (name, a), b in zip(attacked.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(attacked.lm_head.weight, random_model.lm_head.weight)   # a copy moved, not the model
    with pytest.raises(AuditError, match="steps=0: relearning needs at least one optimizer step"):
        audit.relearner(tiny_tokenizer, FORGET, steps=0)


def test_halves_split_each_author():
    train, held = audit.halves(FORGET, seed=0)
    assert len(train) + len(held) == len(FORGET) and not {r["question"] for r in train} & {r["question"] for r in held}
    for author in {r["author"] for r in FORGET}:
        n = sum(r["author"] == author for r in FORGET)
        assert sum(r["author"] == author for r in train) == n // 2
    assert [r["question"] for r in audit.halves(FORGET, seed=1)[0]] != [r["question"] for r in train]
    with pytest.raises(AuditError, match="1 record"):
        audit.halves(FORGET[:1])


def test_recovery_is_zero_for_the_retain_model_and_one_for_the_target(random_model, tiny_tokenizer, tmp_path):
    from tests.conftest import make_random_model
    from kit.unlearning import UnlearnConfig, unlearn
    target, retain = random_model, make_random_model(tiny_tokenizer, seed=1)
    unlearned = copy.deepcopy(target)
    unlearn(unlearned, tiny_tokenizer, FORGET, config=UnlearnConfig(objective="ga", epochs=1, lr=1e-3, batch_size=4),
            run_dir=tmp_path / "run")
    table = audit.audit({"unlearned": tmp_path / "run", "retain": retain, "target": target}, tiny_tokenizer, FORGET[6:],
                        {"none": None, "8-bit": audit.quantizer(8)})
    assert set(table.metric) == set(audit.METRICS) and np.isfinite(table.value).all()
    scores = audit.recovery(table)
    by = scores.set_index(["model", "attack", "metric"]).recovery
    wide = table.pivot_table(index=["attack", "metric"], columns="model", values="value")
    gap = wide.target - wide.retain       # two random models: either may know more, metric by metric
    for attack in ("none", "8-bit"):
        for metric in ("nll", "truth"):
            if gap[attack, metric] >= 1e-6:
                assert by["retain", attack, metric] == 0 and by["target", attack, metric] == pytest.approx(1)
            else:                         # no scale from the retain model up to the target
                assert np.isnan(by["retain", attack, metric]) and np.isnan(by["target", attack, metric])
    expected = (wide.unlearned - wide.retain) / gap.where(gap >= 1e-6)
    assert by["unlearned", "none", "nll"] == pytest.approx(expected["none", "nll"], nan_ok=True)
    assert (table[(table.model == "retain") & (table.metric == "fq")].value == 1).all()   # fq is measured against it
    assert set(scores.metric) == set(audit.ORIENTED)                                    # fq has no direction: no score
    with pytest.raises(AuditError, match="needs the target model"):
        audit.audit({"unlearned": unlearned, "retain": retain}, tiny_tokenizer, FORGET, {"none": None})
    # without a retain model: the share of what unlearning removed that comes back
    removed = audit.recovery(table[table.model != "retain"], baseline="unlearned").set_index(["model", "attack", "metric"]).recovery
    assert "target" not in removed.index.get_level_values("model")
    lone = wide.xs("none")
    for attack in ("none", "8-bit"):      # the share of the removed NLL that returns, where the target is above the base
        removed_gap = wide.loc[(attack, "nll"), "target"] - lone.loc["nll", "unlearned"]
        share = (wide.loc[(attack, "nll"), "unlearned"] - lone.loc["nll", "unlearned"]) / removed_gap if removed_gap >= 1e-6 else np.nan
        assert removed["unlearned", attack, "nll"] == pytest.approx(share, nan_ok=True)
    with pytest.raises(AuditError, match="pass baseline='unlearned'"):
        audit.recovery(table[table.model != "retain"])
    # one model at a time (what a long audit stores as it goes): the same rows as the joint audit
    attacks = {"none": None, "8-bit": audit.quantizer(8)}
    references, items = audit.audit_references({"retain": retain, "target": random_model}, tiny_tokenizer, FORGET[6:], attacks)
    alone = audit.audit_model("unlearned", tmp_path / "run", tiny_tokenizer, FORGET[6:], attacks, retain=items)
    pd.testing.assert_frame_equal(alone, table[table.model == "unlearned"].reset_index(drop=True))
    joint = table[table.model.isin(["target", "retain"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(references, joint)
    assert set(items) == set(attacks) and audit.audit_references({"target": random_model}, tiny_tokenizer, FORGET[6:], attacks)[1] is None
    with pytest.raises(AuditError, match="takes the target"):
        audit.audit_references({"retain": retain}, tiny_tokenizer, FORGET[6:], attacks)
    assert audit.audit_model("unlearned", unlearned, tiny_tokenizer, FORGET[6:], {"none": None}).query("metric == 'fq'").value.isna().all()


def test_relearn_effect_is_the_nll_gradient_dotted_with_the_held_out_risk_gradient(random_model, tiny_tokenizer):
    from kit import geffect
    relearn, held = audit.halves(FORGET, seed=0)
    e = audit.relearn_effect(random_model, tiny_tokenizer, relearn, held)
    g = geffect.g_effect(random_model, tiny_tokenizer, "ga", relearn, held, regularizer="nll", reg_retain=relearn)
    nll = g[g.component.str.startswith("nll") & (g.group == "total")].e_r.item()   # the NLL loss's own component
    assert e == pytest.approx(nll, rel=1e-5)


def test_recovery_is_undefined_where_the_target_does_not_exceed_the_base():
    """The score's scale runs from the base to the target: where the base knows as much (unlearning
    removed nothing) or more (an attack damaged the target below it), the score is NaN, not a ratio
    with a negative denominator."""
    rows = [("none", "target", -1.0), ("none", "removed", -3.0), ("none", "kept", -0.8),
            ("4-bit", "target", -4.0), ("4-bit", "removed", -3.5), ("4-bit", "kept", -0.9)]
    table = pd.DataFrame([{"attack": a, "model": m, "metric": "nll", "value": v} for a, m, v in rows])
    by = audit.recovery(table, baseline="unlearned").set_index(["model", "attack"]).recovery
    assert by["removed", "none"] == 0 and np.isnan(by["kept", "none"])   # "kept": unlearning made the answers likelier
    assert np.isnan(by["removed", "4-bit"]) and np.isnan(by["kept", "4-bit"])   # the rounded target fell below both
    table.loc[(table.attack == "4-bit") & (table.model == "target"), "value"] = -2.0
    assert audit.recovery(table, baseline="unlearned").set_index(["model", "attack"]).recovery["removed", "4-bit"] == pytest.approx(-0.5)
    table = pd.concat([table, pd.DataFrame([{"attack": a, "model": "retain", "metric": "nll", "value": -3.0} for a in ("none", "4-bit")])])
    by = audit.recovery(table).set_index(["model", "attack"]).recovery
    assert (by["retain", "none"], by["target", "none"], by["removed", "none"]) == (0, 1, 0)
    assert (by["retain", "4-bit"], by["target", "4-bit"]) == (0, 1) and by["kept", "none"] == pytest.approx(1.1)
