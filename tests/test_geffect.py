"""The G-effect: groups, exactness against dense gradients, and the first-order risk change."""
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kit import firstorder, geffect, gradstream
from kit.data import load_split

FORGET = list(load_split("forget01"))[:6]
RETAIN = list(load_split("retain99"))[:6]


def _dense_grad(model, fn):
    model.zero_grad()
    fn()
    g = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return g


def test_groups_follow_the_model(random_model):
    paper = geffect.param_groups(random_model, "paper")
    assert paper["model.embed_tokens.weight"] == "embed" and paper["lm_head.weight"] == "lm"
    assert paper["model.layers.0.self_attn.q_proj.weight"] == "shallow"   # 2 blocks: thirds [0], [1], []
    assert paper["model.layers.1.mlp.up_proj.weight"] == "middle"
    assert paper["model.norm.weight"] == "deep"
    layer = geffect.param_groups(random_model, "layer")
    assert layer["model.layers.1.input_layernorm.weight"] == "block.1"
    module = geffect.param_groups(random_model, "module")
    assert module["model.layers.0.self_attn.k_proj.weight"] == "attn.k"
    assert module["model.layers.0.mlp.down_proj.weight"] == "mlp.down"
    assert module["model.layers.0.post_attention_layernorm.weight"] == "norm"
    with pytest.raises(geffect.GroupError, match="Unknown group scheme 'thirds'"):
        geffect.param_groups(random_model, "thirds")


def test_group_sizes_count_every_parameter_once_and_the_tied_matrix_at_both_ends(random_model, tiny_tokenizer):
    from kit import groups
    sizes = groups.group_sizes(random_model).set_index("group")
    assert list(sizes.index) == ["embed", "shallow", "middle", "deep", "lm"]
    assert sizes.parameters.sum() == sum(p.numel() for p in random_model.parameters())
    assert sizes.loc["shallow", "blocks"] == "0" and sizes.loc["deep", "parameters"] > 0   # the final norm is deep
    tied = groups.group_sizes(_tied_model(tiny_tokenizer)).set_index("group")
    assert tied["tied embeddings"].all() and tied.loc["lm", "parameters"] == tied.loc["embed", "parameters"]


def test_g_effect_equals_dense_gradient_products(random_model, tiny_tokenizer):
    df = geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET, RETAIN, groups="layer", batch_size=4)
    g_l = _dense_grad(random_model, lambda: geffect._objective_backward(
        random_model, "ga", FORGET, None, tiny_tokenizer, None, {}, 4, "auto", 512))
    from kit.data import QADataset
    g_u = _dense_grad(random_model, lambda: geffect.risk_backward(
        random_model, QADataset(FORGET, tiny_tokenizer), tiny_tokenizer, 3))
    g_r = _dense_grad(random_model, lambda: geffect.risk_backward(
        random_model, QADataset(RETAIN, tiny_tokenizer), tiny_tokenizer, 5))
    e_u = sum(float((g_u[n] * g_l[n]).sum()) for n in g_l)
    e_r = sum(float((g_r[n] * g_l[n]).sum()) for n in g_l)
    total = df[(df.component == "total") & (df.group == "total")].iloc[0]
    assert total.e_u == pytest.approx(e_u, rel=1e-4) and total.e_r == pytest.approx(e_r, rel=1e-4)
    assert total.e_u < 0      # GA: L = -R_u, so e_u = -|∇R_u|²
    assert total.e_u == pytest.approx(-sum(float((g ** 2).sum()) for g in g_u.values()), rel=1e-4)
    groups = df[(df.component == "total") & (df.group != "total")]
    assert groups.e_u.sum() == pytest.approx(total.e_u, rel=1e-6)
    assert all(p.grad is None for p in random_model.parameters())   # nothing left behind


@pytest.mark.parametrize("objective,hparams,lr", [("ga", {}, 1e-3), ("npo", {"beta": 0.5}, 1e-3),
                                                  ("wga", {"alpha": 0.5}, 1e-3), ("rmu", {"layer": 1, "coeff": 2.0}, 1e-4)])
def test_g_effect_predicts_the_risk_change_of_one_sgd_step(random_model, tiny_tokenizer, objective, hparams, lr):
    # each objective's step is sized so its risk changes are resolved in fp64 and its curvature is still small
    check = firstorder.check_first_order(random_model, tiny_tokenizer, objective, FORGET, RETAIN, lr=lr,
                                      hparams=hparams, per_group=True, batch_size=6)
    assert (check["rel_error"] < 0.05).all(), check
    whole = check[check.scope == "all"].set_index("data")
    parts = check[check.scope != "all"].groupby("data")["e"].sum()
    assert parts["forget"] == pytest.approx(whole.loc["forget", "e"], rel=1e-6)


def test_regulariser_is_probed_as_its_own_component(random_model, tiny_tokenizer):
    df = geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET, RETAIN, regularizer="nll", reg_weight=0.5)
    tot = df[df.group == "total"].set_index("component")
    assert set(tot.index) == {"ga", "nll x 0.5", "total"}
    assert tot.loc["total", "e_r"] == pytest.approx(tot.loc["ga", "e_r"] + tot.loc["nll x 0.5", "e_r"], rel=1e-6)
    assert tot.loc["nll x 0.5", "e_r"] > 0   # descending the retain NLL lowers the retain risk


def _tied_model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def test_tied_embeddings_are_split_into_embed_lm_and_cross_terms(tiny_tokenizer):
    model = _tied_model(tiny_tokenizer)
    df = geffect.g_effect(model, tiny_tokenizer, "ga", FORGET, RETAIN)
    assert {"embed", "lm", "tied_cross"} <= set(df.group)
    assert model.lm_head.weight is model.model.embed_tokens.weight            # tie restored
    g_u = _dense_grad(model, lambda: geffect.risk_backward(
        model, geffect.QADataset(FORGET, tiny_tokenizer), tiny_tokenizer, 6))
    total = df[(df.component == "total") & (df.group == "total")].iloc[0]
    assert total.e_u == pytest.approx(-sum(float((g ** 2).sum()) for g in g_u.values()), rel=1e-4)
    with geffect.untied(model):                          # GA: embed = -|a|², lm = -|b|², cross = -2 a·b
        g = _dense_grad(model, lambda: geffect.risk_backward(
            model, geffect.QADataset(FORGET, tiny_tokenizer), tiny_tokenizer, 6))
        a, b = g["model.embed_tokens.weight"], g["lm_head.weight"]
    by = df[df.component == "total"].set_index("group").e_u
    assert by["embed"] == pytest.approx(-float((a ** 2).sum()), rel=1e-4)
    assert by["lm"] == pytest.approx(-float((b ** 2).sum()), rel=1e-4)
    assert by["tied_cross"] == pytest.approx(-2 * float((a * b).sum()), rel=1e-4, abs=1e-9)


def test_a_tied_model_steps_its_shared_matrix_by_both_gradients(tiny_tokenizer):
    model = _tied_model(tiny_tokenizer)
    check = firstorder.check_first_order(model, tiny_tokenizer, "npo", FORGET, RETAIN, lr=1e-3, regularizer="nll",
                                      per_group=True, batch_size=6)
    assert "embed+lm" in set(check.scope) and not {"embed", "lm", "tied_cross"} & set(check.scope)
    assert (check["rel_error"] < 0.05).all(), check      # the tied matrix's prediction sums embed, lm, cross
    whole = check[check.scope == "all"].set_index("data")
    parts = check[check.scope != "all"].groupby("data")["e"].sum()
    assert parts["retain"] == pytest.approx(whole.loc["retain", "e"], rel=1e-6)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_stored_gradients_keep_only_nonzero_rows_of_an_embedding():
    torch.manual_seed(0)
    embed, weight = torch.nn.Parameter(torch.zeros(10, 3)), torch.nn.Parameter(torch.zeros(4, 3))
    g_embed = torch.zeros(10, 3)
    g_embed[[2, 7]] = torch.randn(2, 3)
    g_weight = torch.randn(4, 3)
    stored = gradstream.compact({embed: g_embed.flatten(), weight: g_weight.flatten()})
    assert isinstance(stored[embed], gradstream.Rows) and stored[embed].index.tolist() == [2, 7]
    assert stored[weight] is not None and not isinstance(stored[weight], gradstream.Rows)   # dense rows stay dense
    assert torch.equal(gradstream.dense(stored[embed]), g_embed.flatten())
    risk = torch.randn(30)
    sel = torch.rand(30) > 0.5
    g, ref, s = gradstream.gather(risk, stored[embed], sel)
    assert float(torch.dot(g, ref)) == pytest.approx(float(torch.dot(risk, g_embed.flatten())), rel=1e-6)
    assert float(torch.dot(g[s], ref[s])) == pytest.approx(float(torch.dot(risk[sel], g_embed.flatten()[sel])), rel=1e-6)


def test_sgd_trajectory_tracks_proposition_1(random_model, tiny_tokenizer):
    traj = firstorder.sgd_trajectory(random_model, tiny_tokenizer, "ga", FORGET, RETAIN, lr=1e-3, steps=3)
    tot = traj[(traj.component == "total") & (traj.group == "total")].set_index("step")
    assert list(tot.index) == [0, 1, 2, 3]
    assert tot.risk_u.iloc[-1] > tot.risk_u.iloc[0]                         # GA raises the forget risk
    assert (abs(tot.risk_u - tot.pred_risk_u) / abs(tot.risk_u - tot.risk_u.iloc[0]).clip(lower=1e-12)).iloc[1:].max() < 0.1


def test_instance_effects_add_up_to_the_g_effect(random_model, tiny_tokenizer):
    n = len(FORGET)
    ref = geffect.objectives.make_reference(random_model)
    with torch.no_grad():    # a reference that differs, so the NPO weights are not all 1
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pg = geffect.pg_effect(random_model, tiny_tokenizer, "npo", FORGET, RETAIN, hparams={"beta": 0.5}, ref=ref)
    e = geffect.g_effect(random_model, tiny_tokenizer, "npo", FORGET, RETAIN, hparams={"beta": 0.5}, ref=ref)
    total = e[(e.component == "total") & (e.group == "total")].iloc[0]
    assert (pg.weight * pg.pg_u).sum() / n == pytest.approx(total.e_u, rel=1e-4)
    assert (pg.weight * pg.pg_r).sum() / n == pytest.approx(total.e_r, rel=1e-4)
    assert pg.weight.std() > 0
    ga = geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET, RETAIN)
    ga_total = ga[(ga.component == "total") & (ga.group == "total")].iloc[0]
    pg_ga = geffect.pg_effect(random_model, tiny_tokenizer, "ga", FORGET, RETAIN)
    assert (pg_ga.pg_u / pg_ga.n_tokens).sum() / n == pytest.approx(ga_total.e_u, rel=1e-4)
    assert (pg_ga.weight == 1).all()


def test_instance_effects_of_a_tied_model_add_up_to_its_g_effect(tiny_tokenizer):
    model, n = _tied_model(tiny_tokenizer), len(FORGET)
    pg = geffect.pg_effect(model, tiny_tokenizer, "ga", FORGET, RETAIN)
    e = geffect.g_effect(model, tiny_tokenizer, "ga", FORGET, RETAIN)        # split into embed / lm / cross
    total = e[(e.component == "total") & (e.group == "total")].iloc[0]
    assert (pg.pg_u / pg.n_tokens).sum() / n == pytest.approx(total.e_u, rel=1e-4)
    assert (pg.pg_r / pg.n_tokens).sum() / n == pytest.approx(total.e_r, rel=1e-4)


@pytest.mark.parametrize("objective,hparams", [("ga", {}), ("npo", {"beta": 0.5}), ("rmu", {"layer": 0, "coeff": 2.0}),
                                               ("po", {})])
def test_shared_forward_pass_gives_the_same_numbers(random_model, tiny_tokenizer, objective, hparams):
    one = geffect.g_effect(random_model, tiny_tokenizer, objective, FORGET, RETAIN, hparams=hparams, batch_size=16,
                           reuse_forward=True)
    same = geffect.g_effect(random_model, tiny_tokenizer, objective, FORGET, RETAIN, hparams=hparams, batch_size=16)
    two = geffect.g_effect(random_model, tiny_tokenizer, objective, FORGET, RETAIN, hparams=hparams, batch_size=4)
    assert np.allclose(one[["e_u", "e_r"]].values, two[["e_u", "e_r"]].values, rtol=1e-4, atol=1e-9)
    assert np.allclose(one[["e_u", "e_r"]].values, same[["e_u", "e_r"]].values, rtol=1e-5, atol=1e-9)


def test_kl_regulariser_has_no_g_effect_at_the_reference_and_reg_retain_is_used(random_model, tiny_tokenizer):
    df = geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET, RETAIN, regularizer="kl")
    tot = df[df.group == "total"].set_index("component")
    assert abs(tot.loc["kl x 1", "e_r"]) < 1e-9 * abs(tot.loc["ga", "e_r"]) + 1e-12   # ∇KL = 0 at θ = θ_o
    other = list(load_split("retain99"))[20:26]
    a = geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET, RETAIN, regularizer="nll")
    b = geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET, RETAIN, regularizer="nll", reg_retain=other)
    ea = a[(a.component == "nll x 1") & (a.group == "total")].e_r.iloc[0]
    eb = b[(b.component == "nll x 1") & (b.group == "total")].e_r.iloc[0]
    assert ea > 0 and not np.isclose(ea, eb)


def test_every_group_gets_a_row_zero_where_the_objective_has_no_gradient(random_model, tiny_tokenizer):
    table = geffect.g_effect(random_model, tiny_tokenizer, "rmu", FORGET, RETAIN, hparams={"layer": 0, "coeff": 5.0})
    rows = table[table.group != "total"].set_index("group")
    assert list(rows.index) == ["embed", "shallow", "middle", "deep", "lm"]       # RMU steers block 0 (shallow) ...
    assert (rows.loc[["middle", "deep", "lm"], ["e_u", "e_r"]] == 0).all().all()   # ... nothing above it moves
    assert rows.loc["shallow", "e_u"] != 0
