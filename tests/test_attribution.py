"""Weight attribution: scores equal their formulas, selection is exact, masked unlearning leaves
unselected weights bitwise unchanged, and bad requests fail clearly."""
import pytest
import torch

from kit import attribution, geffect, groups
from kit.attribution import AttributionError
from kit.data import Collator, QADataset, load_split
from kit.unlearning import UnlearnConfig, UnlearnError, unlearn

FORGET = list(load_split("forget01"))[:6]
RETAIN = list(load_split("retain99"))[:6]


def _summed_nll_grad(model, tok, records):
    model.zero_grad()
    data = QADataset(records, tok)
    batch = Collator(tok)([data[i] for i in range(len(data))])
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1], -1)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    tok_logp = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask
    (-(tok_logp.sum(1) / mask.sum(1)).sum()).backward()            # Σ over items of the mean token NLL
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return grads


def test_wagle_score_equals_its_formula(random_model, tiny_tokenizer):
    gamma = 0.5   # large enough for both terms to matter
    got = attribution.scores("wagle", random_model, tiny_tokenizer, FORGET, RETAIN, gamma=gamma)
    g_f = _summed_nll_grad(random_model, tiny_tokenizer, FORGET)
    g_r = _summed_nll_grad(random_model, tiny_tokenizer, RETAIN)
    params = dict(random_model.named_parameters())
    assert set(got) == set(attribution.eligible(random_model)) and all("mlp" in n or "attn" in n for n in got)
    for n, s in got.items():
        expected = (params[n].detach() * g_f[n] - g_r[n] * g_f[n] / gamma).abs()
        assert torch.allclose(s, expected, rtol=1e-4, atol=1e-7), n
    mean = attribution.scores("wagle", random_model, tiny_tokenizer, FORGET, RETAIN, gamma=gamma, reduce="mean")
    n_items = len(FORGET)
    name = next(iter(got))
    expected = (params[name].detach() * g_f[name] / n_items - g_r[name] * g_f[name] / n_items ** 2 / gamma).abs()
    assert torch.allclose(mean[name], expected, rtol=1e-4, atol=1e-9)
    grad = attribution.scores("gradient", random_model, tiny_tokenizer, FORGET)
    assert torch.allclose(grad[name], g_f[name].abs(), rtol=1e-4, atol=1e-8)


def test_exact_fraction_with_ties_global_and_per_layer(random_model):
    ones = {n: torch.ones_like(p) for n, p in attribution.eligible(random_model).items()}   # all tied
    total = sum(s.numel() for s in ones.values())
    for ratio in (0.3, 0.8, 1.0):
        mask = attribution.select(ones, ratio)
        assert mask.n_selected == round(ratio * total) and mask.n_eligible == total
    scores = attribution.scores("magnitude", random_model)
    mask = attribution.select(scores, 0.25, scope="layer", model=random_model)
    density = mask.density(random_model, "layer")
    for _, row in density.iterrows():      # each block keeps its own quarter
        assert row["selected"] == round(0.25 * row["total"])
    flat = torch.cat([scores[n].flatten() for n in scores])
    glob = attribution.select(scores, 0.25)
    gsel = torch.cat([glob.masks[n].flatten() for n in scores])
    assert flat[gsel].min() >= flat[~gsel].max()                   # global: the top quarter overall
    assert glob.jaccard(glob) == 1.0 and 0 < glob.jaccard(mask) <= 1


def test_wanda_is_per_output_row_and_uses_input_norms(random_model, tiny_tokenizer):
    mask = attribution.attribute("wanda", random_model, tiny_tokenizer, FORGET, ratio=0.5)
    assert mask.scope == "row"
    for n, m in mask.masks.items():
        assert (m.sum(1) == round(0.5 * m.shape[1])).all(), n     # every output row keeps half its inputs
    # one layer by hand: |W| * ||X_j|| over non-padding tokens
    layer = random_model.model.layers[0].mlp.down_proj
    seen = []
    h = layer.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    data = QADataset(FORGET, tiny_tokenizer)
    batch = Collator(tiny_tokenizer)([data[i] for i in range(len(data))])
    with torch.no_grad():
        random_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    h.remove()
    x = seen[0][batch["attention_mask"].bool()]
    expected = layer.weight.detach().abs() * x.norm(dim=0)[None, :]
    got = attribution.scores("wanda", random_model, tiny_tokenizer, FORGET)["model.layers.0.mlp.down_proj.weight"]
    assert torch.allclose(got, expected, rtol=1e-4)
    emb = attribution.scores("wanda", random_model, tiny_tokenizer, FORGET, include=("embed",))
    (name, s), = emb.items()
    counts = torch.bincount(batch["input_ids"][batch["attention_mask"].bool()], minlength=s.shape[0]).float()
    assert torch.allclose(s, random_model.get_input_embeddings().weight.detach().abs() * counts.sqrt()[:, None])


def test_masked_unlearning_leaves_unselected_weights_bitwise_unchanged(random_model, tiny_tokenizer):
    mask = attribution.attribute("wagle", random_model, tiny_tokenizer, FORGET, RETAIN, ratio=0.3)
    before = {n: p.detach().clone() for n, p in random_model.named_parameters()}
    config = UnlearnConfig(objective="ga", lr=1e-2, epochs=2, batch_size=4, weight_decay=0.1, warmup_epochs=0)
    run = unlearn(random_model, tiny_tokenizer, FORGET, config=config, mask=mask)
    changed = 0
    for n, p in random_model.named_parameters():
        if n in mask.masks:
            off = ~mask.masks[n]
            assert torch.equal(p.detach()[off], before[n][off]), n     # bitwise, despite weight decay
            changed += int((p.detach()[mask.masks[n]] != before[n][mask.masks[n]]).sum())
        else:
            assert torch.equal(p.detach(), before[n]), n                # not eligible: frozen
        assert p.requires_grad                                           # unfrozen afterwards
    assert changed > 0.9 * mask.n_selected
    assert run.manifest["mask"]["selected"] == mask.n_selected


def test_g_effect_split_by_a_mask_sums_to_the_dense_total(random_model, tiny_tokenizer):
    mask = attribution.attribute("magnitude", random_model, ratio=0.5)
    dense = geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET[:3], RETAIN[:3])
    split = geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET[:3], RETAIN[:3], groups=mask)
    assert list(split.group) == ["selected", "rest", "fixed", "total"]
    total = dense.set_index("group").loc["total"]
    assert split.set_index("group").loc["total", "e_u"] == pytest.approx(total["e_u"], rel=1e-5)
    assert split.set_index("group").loc["total", "e_r"] == pytest.approx(total["e_r"], rel=1e-5)


def test_a_mask_split_by_group_adds_up_to_the_mask(random_model, tiny_tokenizer):
    mask = attribution.attribute("magnitude", random_model, ratio=0.5)
    full = attribution.everything(random_model)
    assert full.n_selected == full.n_eligible == mask.n_eligible
    names = sorted({g for n, g in groups.param_groups(random_model, "paper").items() if n in mask.masks})
    parts = [mask.within(random_model, g) for g in names]
    assert sum(p.n_selected for p in parts) == mask.n_selected and sum(p.n_eligible for p in parts) == mask.n_eligible
    dots = [geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET[:3], RETAIN[:3], groups=p)
            .set_index("group").loc["selected", "e_u"] for p in parts]
    whole = geffect.g_effect(random_model, tiny_tokenizer, "ga", FORGET[:3], RETAIN[:3], groups=mask)
    assert sum(dots) == pytest.approx(whole.set_index("group").loc["selected", "e_u"], rel=1e-5)
    with pytest.raises(attribution.AttributionError, match="'lm'"):
        mask.within(random_model, "lm")                          # the head is not eligible: named in the message


def test_bad_requests_say_what_to_do(random_model, tiny_tokenizer):
    scores = attribution.scores("magnitude", random_model)
    for bad in (0, -0.5, 1.5, True):
        with pytest.raises(AttributionError, match="must be in \\(0, 1\\]"):
            attribution.select(scores, bad)
    with pytest.raises(AttributionError, match="Unknown attribution method 'salun'"):
        attribution.attribute("salun", random_model, ratio=0.5)
    with pytest.raises(AttributionError, match="No parameter of this model is eligible"):
        attribution.scores("magnitude", random_model, include=())
    with pytest.raises(AttributionError, match="Unknown parameter kind 'bias'"):
        attribution.scores("magnitude", random_model, include=("bias",))
    with pytest.raises(AttributionError, match="needs the retain set"):
        attribution.scores("wagle", random_model, tiny_tokenizer, FORGET)
    with pytest.raises(AttributionError, match="Unknown selection scope 'block'"):
        attribution.select(scores, 0.5, scope="block")
    with pytest.raises(AttributionError, match="Wanda scores linear layers and embeddings only"):
        attribution.scores("wanda", random_model, tiny_tokenizer, FORGET, include=("norm",))
    with pytest.raises(AttributionError, match="ratio=2"):
        attribution.attribute("wagle", random_model, tiny_tokenizer, FORGET, RETAIN, ratio=2)


def test_lora_trains_only_adapters(random_model, tiny_tokenizer):
    pytest.importorskip("peft")
    model = attribution.lora(random_model, rank=2, alpha=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    unlearn(model, tiny_tokenizer, FORGET, config=UnlearnConfig(objective="ga", lr=1e-2, epochs=1, batch_size=4))
    assert all(torch.equal(p.detach(), base[n]) for n, p in model.named_parameters() if n in base)
    merged = model.merge_and_unload()
    assert not any("lora_" in n for n, _ in merged.named_parameters())


def test_unlearn_with_lora_rank_merges_the_adapters_into_the_model(new_random_model, tiny_tokenizer, tmp_path):
    pytest.importorskip("peft")
    from kit import rundir
    config = UnlearnConfig(objective="ga", lr=1e-2, epochs=1, batch_size=4, lora_rank=2, seed=3)
    models = [new_random_model(tiny_tokenizer) for _ in range(2)]
    before = {n: p.detach().clone() for n, p in models[0].named_parameters()}
    run = unlearn(models[0], tiny_tokenizer, FORGET, config=config, run_dir=tmp_path / "run")
    unlearn(models[1], tiny_tokenizer, FORGET, config=config)
    assert run.model is models[0] and not any("lora_" in n for n, _ in models[0].named_parameters())
    assert all(p.requires_grad for p in models[0].parameters())       # peft froze them; given back
    eligible = set(attribution.eligible(models[0]))
    for n, p in models[0].named_parameters():
        moved = not torch.equal(p.detach(), before[n])
        assert moved == (n in eligible), n                            # only the adapted projections change
        assert torch.equal(p.detach(), dict(models[1].named_parameters())[n].detach()), n   # the seed fixes the adapters
    saved = rundir.load_checkpoint(run.run_dir, run.manifest["steps"][-1])   # a merged, plain checkpoint
    assert all(torch.equal(p, models[0].state_dict()[n]) for n, p in saved.state_dict().items())
    with pytest.raises(UnlearnError, match="not both"):
        unlearn(models[1], tiny_tokenizer, FORGET, config=config, mask=attribution.everything(models[1]))
    with pytest.raises(UnlearnError, match="lora_rank=-1"):
        unlearn(models[1], tiny_tokenizer, FORGET, config=UnlearnConfig(lora_rank=-1))
    frozen = new_random_model(tiny_tokenizer)
    frozen.get_input_embeddings().weight.requires_grad_(False)       # the caller's choice survives the run
    unlearn(frozen, tiny_tokenizer, FORGET, config=config)
    assert not frozen.get_input_embeddings().weight.requires_grad and not hasattr(frozen, "peft_config")
    assert all(p.requires_grad for n, p in frozen.named_parameters() if "embed" not in n)
