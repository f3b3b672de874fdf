"""Answer scores agree with the model's own loss; known-item filtering is cached."""
import numpy as np
import pytest
import torch

from kit import evaluation
from kit.data import QADataset, encode_qa, load_split, pad_batch


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


def test_score_pairs_matches_one_at_a_time_with_full_logits(random_model, tiny_tokenizer):
    records = list(load_split("forget01_perturbed"))[:5]
    questions = [r["question"] for r in records for _ in range(3)]
    answers = [a for r in records for a in (r["answer"], r["paraphrased_answer"], r["perturbed_answer"][0])]
    batched = evaluation.score_pairs(random_model, tiny_tokenizer, questions, answers, batch_size=4, tokens=True,
                                     share_prompts=False)
    shared = evaluation.score_pairs(random_model, tiny_tokenizer, questions, answers, batch_size=2, tokens=True,
                                    share_prompts=True)    # each prompt once, its cache reused for 3 answers
    assert np.allclose(shared["nll_sum"], batched["nll_sum"], rtol=1e-5)
    assert (shared["correct"] == batched["correct"]).all() and (shared["n_tokens"] == batched["n_tokens"]).all()
    for col in ("logp", "mu", "sigma"):
        assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(shared[col], batched[col]))
    for i, (q, a) in enumerate(zip(questions, answers)):   # per pair, no padding, all positions projected
        ex = encode_qa(tiny_tokenizer, q, a, "plain")
        with torch.no_grad():
            logits = random_model(torch.tensor([ex["input_ids"]])).logits[0, :-1]
        labels = torch.tensor(ex["labels"][1:])
        logp = torch.log_softmax(logits, -1)[labels != -100].gather(-1, labels[labels != -100, None])[:, 0]
        assert batched.loc[i, "nll_sum"] == pytest.approx(-logp.sum().item(), rel=1e-5)
        assert batched.loc[i, "n_tokens"] == len(logp)
        assert batched.loc[i, "logp"] == pytest.approx(logp.numpy(), abs=1e-5)
        hits = logits[labels != -100].argmax(-1) == labels[labels != -100]
        assert batched.loc[i, "correct"] == hits.sum().item()
    assert (batched["sigma"].map(lambda s: (s >= 0).all())).all()


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
    assert table.index[0] == pytest.approx(0.15) and table.index[1] == pytest.approx((0.15 * 2.0) ** 0.5, abs=1e-3)
    stuck = pd.DataFrame(rows + [{"run": "c", "step": 0, "split": "forget", "nll": 0.1},
                                 {"run": "c", "step": 0, "split": "retain", "nll": 0.1}])
    assert matched_forgetting(stuck, by="run").empty            # a run that never forgets: no matched level


def test_matched_forgetting_reads_where_a_run_first_reaches_a_level_not_after_a_relapse():
    import pandas as pd

    from kit.evaluation import matched_forgetting
    rows = []
    # run a: forget NLL 0.1, 1.0, 0.6 (a relapse), retain 0.1, 0.5, 0.3; run b goes further
    for run, path in [("a", [(0.1, 0.1), (1.0, 0.5), (0.6, 0.3)]), ("b", [(0.1, 0.1), (2.0, 0.4)])]:
        for step, (f, r) in enumerate(path):
            rows += [{"run": run, "step": step, "split": "forget", "nll": f},
                     {"run": run, "step": step, "split": "retain", "nll": r}]
    table = matched_forgetting(pd.DataFrame(rows), by="run", levels=2)
    assert table.index[-1] == 1.0                                 # the highest level every run reached: a's peak
    assert table.loc[1.0, "a"] == pytest.approx(0.5)              # where a got there, not its state after the relapse


def test_a_head_all_prompts_share_runs_once_and_changes_no_score(random_model, tiny_tokenizer, monkeypatch):
    records = list(load_split("forget01_perturbed"))[:4]
    head = "Answer in one sentence, as the biography of the author states it. "
    questions = [head + r["question"] for r in records for _ in range(2)]
    answers = [a for r in records for a in (r["answer"], r["perturbed_answer"][0])]
    whole = evaluation.score_pairs(random_model, tiny_tokenizer, questions, answers, tokens=True, share_prompts=False)
    prompt_widths = []     # forwards without an attention mask are prompt forwards (answers bring a mask)
    forward = random_model.forward

    def counting(*args, **kwargs):
        if "attention_mask" not in kwargs:
            prompt_widths.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    monkeypatch.setattr(random_model, "forward", counting)
    shared = evaluation.score_pairs(random_model, tiny_tokenizer, questions, answers, batch_size=3, tokens=True,
                                    share_prompts=True)
    prompts = [evaluation.prompt_ids(tiny_tokenizer, q, "plain") for q in questions[::2]]
    common = evaluation._common_length(prompts)
    assert common >= evaluation.MIN_SHARED_HEAD and prompt_widths[0] == common   # the head ran once, first
    assert len(prompt_widths) == 1 + len({len(p) for p in prompts})             # then one forward per prompt length
    assert np.allclose(shared["nll_sum"], whole["nll_sum"], rtol=1e-5)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(shared["logp"], whole["logp"]))
    assert (shared["correct"] == whole["correct"]).all()


def test_greedy_answers_equal_one_generate_per_question(random_model, tiny_tokenizer):
    records = list(load_split("forget01"))[:6]
    head = "Answer in one sentence, as the biography of the author states it. "
    prompts = [evaluation.prompt_ids(tiny_tokenizer, head + r["question"], "plain") for r in records]

    def generate(prompt, eos):
        ids = torch.tensor([prompt])
        out = random_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                    do_sample=False, pad_token_id=0, eos_token_id=eos)
        new = out[0, len(prompt):].tolist()
        return new[:new.index(eos)] if eos in new else new

    free = [generate(p, None) for p in prompts]
    eos = free[0][3]                      # a token the model writes early: some answers end, others go on
    expected = [generate(p, eos) for p in prompts]
    assert len({len(e) for e in expected}) > 1 and min(map(len, expected)) < 12
    shared, shared_cache = evaluation._head_cache(random_model, prompts)
    assert shared >= evaluation.MIN_SHARED_HEAD
    for head, cache in ((0, None), (shared, shared_cache)):   # from scratch, and from the shared head's cache
        with torch.no_grad():
            got = evaluation._greedy(random_model, prompts, 0, eos, 12, head, cache)
        assert got == expected, head
