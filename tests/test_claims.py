"""Claims as data: intervals, verdicts, family-level pooling, and text printed from the numbers."""
import math

import pandas as pd
import pytest
from scipy import stats

from kit import claims
from kit.claims import ClaimError, Ledger, Replicate


def test_t_interval_matches_the_textbook_formula():
    x = [0.1, 0.3, 0.2, 0.4]
    mean, low, high = claims.t_interval(x)
    half = stats.t.ppf(0.975, 3) * pd.Series(x).std() / 2
    assert math.isclose(mean, 0.25) and math.isclose(low, 0.25 - half) and math.isclose(high, 0.25 + half)
    assert math.isnan(claims.t_interval([1.0])[1])                    # one value: no interval


def test_verdicts_follow_the_interval():
    assert claims.verdict(0.1, 0.5) == "holds"
    assert claims.verdict(-0.5, -0.1) == "reversed"
    assert claims.verdict(-0.1, 0.5) == "inconclusive"
    assert claims.verdict(math.nan, math.nan) == "inconclusive"


def _ledger(values_by_family):
    ledger = Ledger("tiny")
    for family, values in values_by_family.items():
        for seed, v in enumerate(values):
            ledger.add("wga.matched", v, Replicate("tiny", family, seed))
    return ledger


def test_one_family_gives_an_interval_over_run_seeds_for_that_family():
    table = _ledger({0: [0.02, 0.03, 0.025]}).table()
    row = table.iloc[0]
    assert row.verdict == "holds" and row.n == 3 and row.k_of_n == "3/3"
    assert row.basis == "t over run seeds of family 0"


def test_several_families_are_the_units_of_the_interval():
    # within-family noise is tiny, but the families disagree: the verdict must not be "holds"
    table = _ledger({0: [0.05, 0.051, 0.049], 1: [-0.04, -0.041, -0.039], 2: [0.01, 0.011, 0.009]}).table()
    row = table.iloc[0]
    assert row.families == 3 and row.basis == "t over 3 family means" and row.verdict == "inconclusive"
    mean, low, high = claims.t_interval([0.05, -0.04, 0.01])
    assert math.isclose(row["mean"], mean) and math.isclose(row.low, low)


def test_reversed_claims_and_pretrained_models():
    ledger = Ledger("smollm2-135m")
    for seed, v in enumerate([-0.2, -0.25, -0.22]):
        ledger.add("reg.kl_vs_nll", v, Replicate("smollm2-135m", None, seed))
    row = ledger.table().iloc[0]
    assert row.verdict == "reversed" and row.basis == "t over run seeds" and row.k_of_n == "0/3"


def test_conclusions_are_printed_from_the_numbers():
    table = _ledger({0: [0.02, 0.03, 0.025]}).table()
    text = claims.conclusions(table)
    assert "wga.matched" in text and "holds on tiny" in text and f"{table['mean'].iloc[0]:.3g}" in text
    assert "3/3" in text
    single = _ledger({0: [0.02]}).table()
    assert "no interval with one replicate" in claims.conclusions(single) and single.verdict.iloc[0] == "inconclusive"


def test_unknown_claims_and_empty_seeds_are_clear_errors():
    with pytest.raises(ClaimError, match="Unknown claim 'wga.matchd'.*kit.claims.CLAIMS"):
        Ledger("tiny").add("wga.matchd", 0.1, Replicate("tiny", 0, 0))
    with pytest.raises(ClaimError, match="SEEDS is empty"):
        claims.replicates("tiny", [], [])


def test_replicates_cross_families_and_seeds(monkeypatch):
    monkeypatch.setenv("KIT_TINY_SEED", "2")
    assert claims.replicates("tiny", [], [0, 1]) == [Replicate("tiny", 2, 0), Replicate("tiny", 2, 1)]
    assert [(r.family, r.seed) for r in claims.replicates("tiny", [0, 1], [5])] == [(0, 5), (1, 5)]
    assert claims.replicates("smollm2-135m", [0, 1], [0]) == [Replicate("smollm2-135m", None, 0)]


def test_every_claim_is_signed_and_named_once():
    assert len(claims.CLAIMS) == len({c.id for c in claims.CLAIMS.values()})
    for c in claims.CLAIMS.values():
        assert c.statement and c.statistic and c.notebook[:2].isdigit()


def test_each_replicate_loads_a_model_once_and_restores_its_weights(random_model, tiny_tokenizer, tmp_path, monkeypatch):
    import torch

    import kit
    from kit import models
    random_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    loads = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    reps = claims.replicates(str(tmp_path / "m"), [], [0, 1, 2])
    first = None
    for rep, model, tok, restore in kit.each_replicate(reps):
        weights = model.model.embed_tokens.weight
        first = weights.detach().clone() if first is None else first
        assert torch.equal(weights, first)                    # every replicate starts from the original weights
        with torch.no_grad():
            weights.add_(1.0)                                 # a run changes them ...
        restore()
        assert torch.equal(weights, first)                    # ... and restore() puts them back
        weights.data.add_(1.0)
    assert len(loads) == 1 and [r.seed for r in reps] == [0, 1, 2]


def test_correlation_claims_are_pooled_on_fisher_z_and_stay_inside_minus_one_one():
    ledger = Ledger("tiny")
    by_family = {0: [0.95, 0.99, 0.97], 1: [0.3, 0.5, 0.4], 2: [0.9, 0.98, 0.85]}
    for family, values in by_family.items():
        for seed, v in enumerate(values):
            ledger.add("ga.mirror", v, Replicate("tiny", family, seed))
    row = ledger.table().iloc[0]
    z_means = [sum(math.atanh(v) for v in vs) / 3 for vs in by_family.values()]
    mean, low, high = claims.t_interval(z_means)
    assert math.isclose(row["mean"], math.tanh(mean)) and math.isclose(row.high, math.tanh(high))
    assert -1 < row.low < row.high < 1 and row.basis == "t over 3 family means (on Fisher z)"
    assert claims.t_interval([sum(vs) / 3 for vs in by_family.values()])[2] > 1     # the plain t interval leaves [-1, 1]


def test_seeds_given_as_text_name_the_papermill_fix():
    with pytest.raises(ClaimError, match=r"SEEDS is the text '\[0, 1\]', not a list.*-y 'SEEDS"):
        claims.replicates("tiny", [], "[0, 1]")


def test_means_gives_each_groups_mean_and_t_interval():
    frame = pd.DataFrame({"method": ["a", "a", "a", "b"], "acc": [0.9, 1.0, 0.95, 0.5]})
    table = claims.means(frame, ["method"], ["acc"], bounds=(0, 1)).set_index("method")
    mean, low, high = claims.t_interval([0.9, 1.0, 0.95])
    assert table.loc["a", "n"] == 3 and table.loc["a", "acc"] == pytest.approx(mean)
    assert table.loc["a", "acc 95%"] == f"[{low:.3f}, {min(high, 1):.3f}]" and high > 1     # clipped to the bound
    assert table.loc["b", "acc 95%"] == "-"                                                 # one replicate: no interval
