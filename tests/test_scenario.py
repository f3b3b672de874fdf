"""kit.load_scenario: the one path from a model and a forget split to the records of a run."""
import pytest

import kit
from kit import scenario
from kit.data import DataError


def test_builtin_scenario_pairs_forget_with_its_retain_split_and_reference(random_model, tiny_tokenizer):
    sc = kit.load_scenario(random_model, tiny_tokenizer, "tiny", "forget05", retain_items=10, max_items=7)
    assert len(sc.forget) == 100 and len(sc.retain) == 10 and sc.reference == "retain95"
    assert {"forget", "retain", "real_authors", "world_facts", "holdout"} <= set(sc.splits)
    assert len(sc.splits["forget"]) == 100 and all(len(sc.splits[r]) == 7 for r in ("retain", "world_facts"))
    assert (sc.counts.kept == sc.counts.candidates).all()                              # no filter on builtin
    assert "100 forget" in sc.describe() and "retain95" in sc.describe()
    assert kit.load_scenario(random_model, tiny_tokenizer, "other-model", "forget01").reference is None


def test_real_scenario_keeps_only_known_items_everywhere(random_model, tiny_tokenizer, cache, monkeypatch):
    def knows_every_other(model, tok, records, **kw):
        return list(records)[::2]
    monkeypatch.setattr(scenario, "keep_known", knows_every_other)
    sc = kit.load_scenario(random_model, tiny_tokenizer, "m", "forget", "real")
    forget_q = {r["question"] for r in sc.forget}
    n_forget = len(kit.load_split("forget", "real"))
    assert forget_q == {r["question"] for r in sc.splits["forget"]} and len(sc.forget) < n_forget
    assert {r["question"] for r in sc.retain} == {r["question"] for r in sc.splits["retain"]}
    counts = sc.counts.set_index("role")
    assert counts.loc["forget", "kept"] == len(sc.forget) and counts.loc["forget", "candidates"] == n_forget
    assert counts.loc["world_facts", "kept"] == counts.loc["world_facts", "candidates"]    # utility: not filtered
    assert sc.reference is None
    assert not {r["question"] for r in sc.splits["real_authors"]} & {r["question"] for r in sc.retain}   # distinct


def test_a_model_that_knows_nothing_is_told_so(random_model, tiny_tokenizer, cache, monkeypatch):
    monkeypatch.setattr(scenario, "keep_known", lambda model, tok, records, **kw: [])
    with pytest.raises(DataError, match="answers none of the 'forget' questions"):
        kit.load_scenario(random_model, tiny_tokenizer, "m", "forget", "real")


def test_unknown_forget_split_names_the_fix(random_model, tiny_tokenizer):
    with pytest.raises(DataError, match="forget01 / retain99"):
        kit.load_scenario(random_model, tiny_tokenizer, "tiny", "forget07")


def test_keep_known_keeps_the_items_whose_greedy_answer_contains_the_fact(random_model, tiny_tokenizer, cache, monkeypatch):
    records = [{"question": f"q{i}", "fact": fact} for i, fact in enumerate(["Paris", "Au", "Austen", "English|British"])]
    answers = {"q0": "The capital is paris.", "q1": "It is silver.", "q2": "Jane Austen wrote it.",
               "q3": "She was a British novelist."}
    calls = []

    def fake_generate(model, tok, questions, max_new_tokens, batch_size):
        calls.append(max_new_tokens)
        return [answers[q] for q in questions]
    monkeypatch.setattr(scenario, "generate_answers", fake_generate)
    kept = kit.keep_known(random_model, tiny_tokenizer, records, cache_key="m")
    assert [r["question"] for r in kept] == ["q0", "q2", "q3"]                # case-insensitive, alternatives
    assert calls == [kit.tofu.ANSWER_TOKENS]                                  # the evaluation's token budget
    assert kit.keep_known(random_model, tiny_tokenizer, records, cache_key="m") == kept and len(calls) == 1   # cached


def test_forget_items_draws_by_seed_and_evaluates_the_same_draw(random_model, tiny_tokenizer):
    draws = [kit.load_scenario(random_model, tiny_tokenizer, "tiny", "forget05", forget_items=12, seed=s) for s in (0, 0, 1)]
    questions = [[r["question"] for r in sc.forget] for sc in draws]
    assert len(questions[0]) == 12 and questions[0] == questions[1] != questions[2]   # the seed decides the draw
    every = [r["question"] for r in kit.load_split("forget05")]
    assert questions[0] == [q for q in every if q in set(questions[0])]             # kept in the split's order
    assert [r["question"] for r in draws[0].splits["forget"]] == questions[0]       # evaluated on what was forgotten
    with pytest.raises(DataError, match="Cannot draw 500 of 100 'forget05' forget records of tiny: use 1 to 100"):
        kit.load_scenario(random_model, tiny_tokenizer, "tiny", "forget05", forget_items=500)


def test_an_explicit_retain_split_replaces_the_default_one(random_model, tiny_tokenizer):
    sc = kit.load_scenario(random_model, tiny_tokenizer, "tiny", "forget05", retain="retain90", retain_items=5)
    assert [r["question"] for r in sc.retain] == [r["question"] for r in kit.load_split("retain90")][:5]
