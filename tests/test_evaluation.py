"""Answer scores agree with the model's own loss; known-item filtering is cached."""
import pytest
import torch

from kit import evaluation
from kit.data import QADataset, load_split, pad_batch


def test_answer_nll_matches_the_models_own_loss(random_model, tiny_tokenizer):
    records = list(load_split("forget01"))[:6]
    scores = evaluation.answer_scores(random_model, tiny_tokenizer, records, batch_size=4)
    data = QADataset(records, tiny_tokenizer)
    for i, row in scores.iterrows():     # one at a time, no padding: HF's mean label loss
        batch = pad_batch([data[i]], pad_id=0)
        with torch.no_grad():
            loss = random_model(**batch).loss.item()
        assert row["nll"] == pytest.approx(loss, rel=1e-5)
        assert row["n_tokens"] == sum(t != -100 for t in data[i]["labels"])   # every answer token is scored


def test_token_stats_ignore_prompt_and_padding():
    logits = torch.zeros(1, 4, 3)
    logits[0, 0, 2] = 5.0                      # predicts token 2 at position 1
    labels = torch.tensor([[-100, 2, 1, -100]])
    stats = evaluation.token_stats(logits, labels)
    assert stats["n_tokens"].item() == 2 and stats["correct"].item() == 1


def test_keep_known_caches_its_verdicts(monkeypatch, cache, random_model, tiny_tokenizer):
    records = [{"question": "q1", "fact": "Paris"}, {"question": "q2", "fact": "Rome"}]
    calls = []

    def fake_generate(model, tok, questions, **kw):
        calls.append(questions)
        return ["It is Paris.", "No idea."]

    monkeypatch.setattr(evaluation, "generate_answers", fake_generate)
    kept = evaluation.keep_known(random_model, tiny_tokenizer, records, cache_key="m")
    again = evaluation.keep_known(random_model, tiny_tokenizer, records, cache_key="m")
    assert kept == again == [records[0]] and len(calls) == 1


def test_matched_forgetting_compares_runs_at_equal_forget_nll():
    import pandas as pd

    from kit.evaluation import matched_forgetting
    rows = []
    for run, slope in [("a", 1.0), ("b", 0.5)]:        # retain rises 1.0 (a) or 0.5 (b) per unit of forgetting
        for step, f in enumerate([0.1, 0.5, 1.0, 2.0]):
            rows += [{"run": run, "step": step, "split": "forget", "nll": f},
                     {"run": run, "step": step, "split": "retain", "nll": 0.1 + slope * (f - 0.1)}]
    table = matched_forgetting(pd.DataFrame(rows), by="run", levels=3)
    assert list(table.columns) == ["a", "b"] and table.index[-1] == 2.0
    assert (table["b"] < table["a"]).all()
    assert table.loc[2.0, "a"] == pytest.approx(2.0) and table.loc[2.0, "b"] == pytest.approx(1.05)
