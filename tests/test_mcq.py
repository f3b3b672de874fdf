"""Multiple-choice scoring (kit.mcq): against an independent per-item computation of the same
log-likelihoods, against lm-evaluation-harness itself, and the errors bad files cause."""
import json

import numpy as np
import pytest
import torch

from kit import mcq
from kit.mcq import MCQError

ITEMS = [
    {"question": "What colour is the sky on a clear day?", "choices": ["Blue", "Green", "Red", "Black"], "answer": 0},
    {"question": "How many legs has a spider?", "choices": ["Six", "Eight", "Ten", "Four"], "answer": 1,
     "subject": "biology"},
    {"question": "Which is a prime number? ", "choices": ["9", "15", "7", "21"], "answer": 2},
    {"question": "Water boils at sea level at", "choices": ["50 degrees", "100 degrees"], "answer": 1},
    # longer than the random model's 128-token context: both keep the sequence's end
    {"question": "Read this carefully. " * 12 + "Which word ends this question?",
     "choices": ["question", "answer", "word", "this"], "answer": 0},
]


def _by_hand(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context): the whole sequence in one unbatched pass with full logits."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    head = tok(context)["input_ids"]
    tail = tok(context + continuation)["input_ids"][len(head):]
    seq = (head + tail)[-(model.config.max_position_embeddings + 1):]
    with torch.no_grad():
        logits = model(torch.tensor([seq[:-1]])).logits[0].double()
    logp = torch.log_softmax(logits, -1)[-len(tail):]
    return float(logp.gather(-1, torch.tensor(tail)[:, None]).sum())


@pytest.mark.parametrize("formulation", mcq.FORMULATIONS)
def test_scores_equal_an_independent_per_item_computation(random_model, tiny_tokenizer, formulation):
    table = mcq.score(random_model, tiny_tokenizer, ITEMS, formulation=formulation, batch_size=3)
    assert len(table) == len(ITEMS) and list(table.n_choices) == [4, 4, 4, 2, 4]
    for item, row in zip(ITEMS, table.itertuples()):
        context, conts = mcq.requests(item, formulation, mcq.describe(item.get("subject", ""), formulation))
        expected = [_by_hand(random_model, tiny_tokenizer, context, c) for c in conts]
        assert np.allclose(row.loglik, expected, rtol=1e-5, atol=1e-4), (row.Index, row.loglik, expected)
        assert row.pred == int(np.argmax(expected)) and row.correct == int(row.pred == item["answer"])
        shown = mcq.LETTERS[:len(conts)] if formulation == "letters" else item["choices"]
        assert row.pred_norm == int(np.argmax(np.array(expected) / [len(s) for s in shown]))
    acc = mcq.accuracy(table, n_boot=500)
    assert acc["low"] <= acc["accuracy"] <= acc["high"] and acc["chance"] == pytest.approx(np.mean([.25] * 4 + [.5]))


def test_prompts_are_lm_evals():
    context, conts = mcq.requests(ITEMS[0], "letters", mcq.describe("biology"))
    assert context == ("The following are multiple choice questions (with answers) about biology.\n\n"
                       "What colour is the sky on a clear day?\nA. Blue\nB. Green\nC. Red\nD. Black\nAnswer:")
    assert conts == [" A", " B", " C", " D"]
    context, conts = mcq.requests(ITEMS[0], "cloze", mcq.describe("high_school_biology", "cloze"))
    assert context == ("The following are questions (with answers) about high school biology.\n\n"
                       "Question: What colour is the sky on a clear day?\nAnswer:")
    assert conts == [" Blue", " Green", " Red", " Black"]


@pytest.mark.parametrize("formulation", mcq.FORMULATIONS)
def test_matches_lm_evaluation_harness(random_model, tiny_tokenizer, tmp_path, formulation):
    lm_eval = pytest.importorskip("lm_eval")          # a dev dependency: installed by `make test`
    from lm_eval.models.huggingface import HFLM
    items = [i for i in ITEMS if len(i["choices"]) == 4]
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps({k: i[k] for k in ("question", "choices", "answer")}) + "\n" for i in items))
    text = ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
            if formulation == "letters" else "Question: {{question.strip()}}\nAnswer:")
    task = {"task": f"kit_{formulation}", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(path)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": text,
            "doc_to_choice": ["A", "B", "C", "D"] if formulation == "letters" else "{{choices}}",
            "doc_to_target": "answer", "description": mcq.describe("biology", formulation),
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}
    lm = HFLM(pretrained=random_model, tokenizer=tiny_tokenizer, batch_size=2)
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], log_samples=True, num_fewshot=0)
    samples = sorted(out["samples"][f"kit_{formulation}"], key=lambda s: s["doc_id"])
    assert len(samples) == len(items) == 4
    choices = mcq.ChoiceSet("set", mcq.validate(items, "test"), str(path), subject="biology")
    table = mcq.score(random_model, tiny_tokenizer, choices, formulation=formulation)
    for sample, row in zip(samples, table.itertuples()):
        theirs = [float(r[0][0]) for r in sample["resps"]]
        assert np.allclose(row.loglik, theirs, rtol=1e-5, atol=1e-5), (row.loglik, theirs)
        assert row.correct == sample["acc"] and row.correct_norm == sample["acc_norm"]


def test_bad_files_name_the_file_row_and_key(tmp_path):
    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    good = {"question": "q?", "choices": ["a", "b"], "answer": 1}
    write("ok.jsonl", [good, {**good, "answer": "0"}])
    loaded = mcq.load(str(tmp_path), subset="ok")
    assert len(loaded) == 2 and loaded.items[1]["answer"] == 0 and loaded.name == "ok"
    write("range.jsonl", [good, {**good, "answer": 2}])
    with pytest.raises(MCQError, match=r"range.jsonl: row 1 key 'answer' must be the index .* 0 to 1 \(got 2\)"):
        mcq.load(str(tmp_path / "range.jsonl"))
    write("empty.jsonl", [{**good, "choices": []}])
    with pytest.raises(MCQError, match=r"empty.jsonl: row 0 key 'choices' must be a list of at least 2"):
        mcq.load(str(tmp_path / "empty.jsonl"))
    write("missing.jsonl", [{"question": "q?", "choices": ["a", "b"]}])
    with pytest.raises(MCQError, match=r"missing.jsonl: row 0 has no 'answer' key"):
        mcq.load(str(tmp_path / "missing.jsonl"))
    with pytest.raises(MCQError, match="several sets"):
        mcq.load(str(tmp_path))
    with pytest.raises(MCQError, match="Unknown formulation 'mc1'"):
        mcq.requests(good, "mc1")
    with pytest.raises(MCQError, match="needs subset="):
        mcq.load("cais/wmdp")


def test_items_and_documents_from_qa_records():
    from kit import corpora
    from kit.data import load_split
    records = list(load_split("forget05_perturbed"))[:12]
    items = mcq.from_qa(records, n_choices=4, seed=3)
    for rec, item in zip(records, items):
        assert item["choices"][item["answer"]] == rec["answer"]
        assert set(item["choices"]) - {rec["answer"]} <= set(rec["perturbed_answer"]) and len(set(item["choices"])) == 4
    assert [i["answer"] for i in items] != [i["answer"] for i in mcq.from_qa(records, 4, seed=4)]   # the seed draws the order
    assert [i["answer"] for i in items] == [i["answer"] for i in mcq.from_qa(records, 4, seed=3)]
    with pytest.raises(MCQError, match="row 0 has 5 perturbed answers; 7 choices need 6"):
        mcq.from_qa(records, n_choices=7)
    docs = corpora.from_qa(records)
    authors = list(dict.fromkeys(r["author"] for r in records))
    assert [d["source"] for d in docs] == [f"author={a}" for a in authors]
    for rec in records:
        doc = docs[authors.index(rec["author"])]["text"]
        assert rec["answer"] in doc and rec["paraphrased_answer"] in doc


def test_choice_scenario_keeps_what_the_model_answers(random_model, tiny_tokenizer):
    import kit
    sc = kit.load_choice_scenario(random_model, tiny_tokenizer, "random", "forget01", utility_items=8, retain_authors=2)
    counts = sc.counts.set_index("set")
    assert counts.loc["forget", "candidates"] == 20 and counts.loc["utility", "candidates"] == 8 * 3
    assert 0 < len(sc.forget_mc) == counts.loc["forget", "kept"] < 20     # a random model knows some by chance
    again = mcq.score(random_model, tiny_tokenizer, sc.forget_mc, formulation="cloze")
    assert again.correct.all()                                             # kept = answered correctly before
    assert len(sc.forget_docs) == 1 and len(sc.retain_docs) == 2 and "random on builtin/forget01" in sc.describe()
    everything = kit.load_choice_scenario(random_model, tiny_tokenizer, "random", "forget01", utility_items=8,
                                          known_only=False)
    assert len(everything.forget_mc) == 20 and len(everything.utility_mc) == 24
    with pytest.raises(MCQError, match="Unknown formulation 'mc2'"):
        kit.load_choice_scenario(random_model, tiny_tokenizer, "random", "forget01", formulation="mc2")


def test_matched_utility_reads_each_run_where_it_first_reaches_a_level():
    import pandas as pd
    rows = []
    # run a: 1 − FA 0, 0.2, 0.6, 0.4 (a relapse: the running maximum counts), utility 1, 0.9, 0.5, 0.7
    for step, (fa, ua) in enumerate([(1.0, 1.0), (0.8, 0.9), (0.4, 0.5), (0.6, 0.7)]):
        rows += [{"run": "a", "step": step, "split": "forget", "accuracy": fa},
                 {"run": "a", "step": step, "split": "utility", "accuracy": ua}]
    for step, (fa, ua) in enumerate([(1.0, 1.0), (0.5, 0.95)]):       # run b reaches 0.5
        rows += [{"run": "b", "step": step, "split": "forget", "accuracy": fa},
                 {"run": "b", "step": step, "split": "utility", "accuracy": ua}]
    table = mcq.matched_utility(pd.DataFrame(rows), by="run", levels=3, start=0.1)
    assert list(table.index) == [0.1, 0.3, 0.5]                       # up to what every run reached
    np.testing.assert_allclose(table["a"], [0.95, 0.8, 0.6])           # 0.3: between 0.2 (0.9) and 0.6 (0.5)
    np.testing.assert_allclose(table["b"], [0.99, 0.97, 0.95])
    stuck = pd.DataFrame([r for r in rows if r["run"] == "b" and r["step"] == 0] +
                         [{**r, "run": "c"} for r in rows if r["run"] == "a"])
    assert mcq.matched_utility(stuck, by="run").empty                  # b never forgot: no matched level


def test_track_choices_scores_the_sets_along_a_run(random_model, tiny_tokenizer):
    from kit.data import load_split
    from kit.unlearning import TrackChoices, UnlearnConfig, unlearn
    forget = list(load_split("forget01"))[:8]
    items = mcq.from_qa(list(load_split("forget01_perturbed"))[:6])
    track = TrackChoices(tiny_tokenizer, {"forget": items, "utility": ITEMS[:3]}, every=2, formulation="cloze")
    config = UnlearnConfig(objective="ga", epochs=2, lr=1e-3, batch_size=4, grad_accum=1, save_every=0)
    unlearn(random_model, tiny_tokenizer, forget, config=config, callbacks=[track])
    df = track.frame()
    assert sorted(df.step.unique()) == [0, 2, 4] and set(df.split) == {"forget", "utility"}
    last = df[(df.step == 4) & (df.split == "forget")].accuracy.item()
    assert last == mcq.score(random_model, tiny_tokenizer, items, formulation="cloze").correct.mean()
    probed = TrackChoices(tiny_tokenizer, {"forget": items, "utility": ITEMS[:3]}, formulation="cloze", probes=4)
    unlearn(random_model, tiny_tokenizer, forget, config=config, callbacks=[probed])
    assert sorted(probed.frame().step.unique()) == [0, 1, 2, 3, 4]
