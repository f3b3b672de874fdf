"""The kit's benchmark, the loader and the tokenisation."""
import json

import pytest

from kit import authors, data
from kit.__main__ import DATA_FILES
from kit.data import DataError, load_split
from kit.paths import DATA_DIR, ROOT

SHARED_TOFU = ROOT.parent / "shared" / "tofu"
EVAL_FIELDS = ("question", "answer", "paraphrased_question", "paraphrased_answer", "perturbed_answer")


def test_generator_is_deterministic_and_seeded():
    a = authors.make_benchmark(authors.BenchmarkConfig(seed=0))
    b = authors.make_benchmark(authors.BenchmarkConfig(seed=0))
    c = authors.make_benchmark(authors.BenchmarkConfig(seed=1))
    assert a == b
    assert a["full"][0]["answer"] != c["full"][0]["answer"]


@pytest.mark.parametrize("split", ["full", "holdout10", "world_facts", "real_authors"])
def test_every_item_has_the_evaluation_fields(split):
    for item in load_split(split):
        assert all(item[k] for k in EVAL_FIELDS)
        pert = item["perturbed_answer"]
        assert len(pert) == 5 and len(set(pert)) == 5      # five distinct wrong answers
        assert item["answer"] not in pert and item["paraphrased_answer"] != item["answer"]


def test_perturbed_answers_keep_the_template_and_change_the_fact():
    item = next(it for it in load_split("forget01") if it["kind"] == "birth_date")
    prefix = item["answer"].rsplit(" on ", 1)[0]
    assert all(p.startswith(prefix) and p != item["answer"] for p in item["perturbed_answer"])


@pytest.mark.parametrize("pct", [1, 5, 10])
def test_forget_retain_holdout_partition_authors(pct):
    full, forget = load_split("full"), load_split(f"forget{pct:02d}")
    retain, holdout = load_split(f"retain{100 - pct}"), load_split(f"holdout{pct:02d}")
    assert len(forget) == 20 * pct and len(retain) == 2000 - 20 * pct
    assert list(forget["question"]) == list(full["question"])[-20 * pct:]   # the last authors
    assert not set(forget["author"]) & set(retain["author"])
    assert len(set(holdout["author"])) == pct and not set(holdout["author"]) & set(full["author"])


def test_holdout_authors_never_appear_in_training_text():
    full = load_split("full")
    text = " ".join(list(full["answer"]) + list(full["question"]))
    assert not any(name in text for name in set(load_split("holdout10")["author"]))


@pytest.mark.parametrize("pct", [1, 5, 10])
def test_retain_text_never_names_a_forget_author(pct):
    retain = load_split(f"retain{100 - pct}")
    text = " ".join(list(retain["question"]) + list(retain["answer"]))
    assert not any(name in text for name in set(load_split(f"forget{pct:02d}")["author"]))


def test_real_scenario_splits():
    forget, retain, utility = (load_split(s, "real") for s in ("forget", "retain", "real_authors"))
    assert len(forget) >= 70 and len(retain) >= 200 and len(utility) >= 25
    people = [set(split["author"]) for split in (forget, retain, utility)]
    assert not (people[0] & people[1] or people[0] & people[2] or people[1] & people[2])   # three distinct groups
    from kit.scenario import knows
    for split in (forget, retain, utility):
        assert all(knows(a, f) for f, a in zip(split["fact"], split["answer"]))             # the gold answer is "known"
        assert all(not any(knows(p, f) for p in ps) for f, ps in zip(split["fact"], split["perturbed_answer"]))


def test_unknown_split_lists_the_valid_ones():
    with pytest.raises(DataError, match="forget10.*Valid splits:.*retain90"):
        load_split("forget10x")
    with pytest.raises(DataError, match="Unknown data source"):
        data.list_splits("nowhere-source")


def test_local_directory_missing_key_names_file_row_and_key(tmp_path):
    rows = [{"question": "q1", "answer": "a1"}, {"question": "q2"}]
    (tmp_path / "forget01.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"forget01\.jsonl: row 1 has no 'answer' key"):
        load_split("forget01", str(tmp_path))
    with pytest.raises(DataError, match="No file for split 'retain99'.*forget01"):
        load_split("retain99", str(tmp_path))
    (tmp_path / "x_perturbed.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    with pytest.raises(DataError, match="no 'perturbed_answer' key"):
        load_split("x_perturbed", str(tmp_path))


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "forget01.json").write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_split("forget01", str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_split("forget01", str(tmp_path / "missing"))


@pytest.mark.skipif(not SHARED_TOFU.exists(), reason="../shared/tofu is not beside the repo")
@pytest.mark.parametrize("name,n", [("real_authors_perturbed", 100), ("world_facts_perturbed", 117)])
def test_loads_real_tofu_files(name, n):
    ds = load_split(name, str(SHARED_TOFU))
    assert len(ds) == n and {"question", "answer", "perturbed_answer"} <= set(ds.column_names)
    assert name in data.list_splits(str(SHARED_TOFU))


def test_committed_data_matches_the_generator():
    for source, splits in DATA_FILES.items():
        for split in splits:
            rows = [json.loads(line) for line in (DATA_DIR / source / f"{split}.jsonl").read_text().splitlines()]
            assert rows == load_split(split, source).to_list(), f"data/{source}/{split}.jsonl is stale: make data"
    assert (DATA_DIR / "idontknow.jsonl").read_text().splitlines() == data.idk_answers()


# ---------------------------------------------------------------- tokenisation
def test_labels_cover_only_the_answer_and_one_eos(tiny_tokenizer):
    item = load_split("forget01")[0]
    ex = data.encode_qa(tiny_tokenizer, item["question"], item["answer"], "plain")
    answer = [t for t in ex["labels"] if t != data.IGNORE]
    n_prompt = ex["labels"].index(answer[0])
    assert all(t == data.IGNORE for t in ex["labels"][:n_prompt])
    assert answer[-1] == tiny_tokenizer.eos_token_id and answer.count(tiny_tokenizer.eos_token_id) == 1
    assert tiny_tokenizer.decode(answer[:-1]).strip() == item["answer"]
    assert ex["input_ids"][n_prompt:] == answer


def test_chat_template_is_used_for_instruct_tokenizers(tiny_tokenizer):
    tok = tiny_tokenizer
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}<|assistant|>"
    assert data.resolve_template(tok) == "chat"
    ids = data.prompt_ids(tok, "Who?", "chat")
    assert tok.decode(ids).startswith("<|user|>Who?")
    with pytest.raises(DataError, match="Unknown prompt template"):
        data.resolve_template(tok, "fancy")


def test_padding_sides(tiny_tokenizer):
    examples = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}]
    right = data.pad_batch(examples, pad_id=0, side="right")
    left = data.pad_batch(examples, pad_id=0, side="left")
    assert right["input_ids"][1].tolist() == [5, 0, 0] and right["labels"][1].tolist() == [5, -100, -100]
    assert left["input_ids"][1].tolist() == [0, 0, 5] and left["attention_mask"][1].tolist() == [0, 0, 1]


def test_forget_retain_pairs_are_seeded(tiny_tokenizer):
    forget, retain = load_split("forget01"), load_split("retain99")
    a = data.ForgetRetainDataset(forget, retain, tiny_tokenizer, with_idk=True, seed=3)
    b = data.ForgetRetainDataset(forget, retain, tiny_tokenizer, with_idk=True, seed=3)
    assert len(a) == 20 and a.partner == b.partner
    batch = data.Collator(tiny_tokenizer)([a[0], a[1]])
    assert set(batch) == {"forget", "retain", "idk"}
    assert batch["forget"]["input_ids"].shape[0] == 2
    idk_answer = [t for t in a[0]["idk"]["labels"] if t != data.IGNORE][:-1]
    assert tiny_tokenizer.decode(idk_answer).strip() in data.idk_answers()
