"""Documents as unlearning data: `text` records are chunked, carry the loss on every token and go
through the same datasets, objectives, G-effect probe and unlearning engine as QA pairs."""
import json

import pytest
import torch

from kit import firstorder, geffect, objectives
from kit.data import Collator, DataError, ForgetRetainDataset, QADataset, encode_text, load_split, validate
from kit.unlearning import UnlearnConfig, unlearn

QA = list(load_split("forget01"))
DOCS = [{"text": " ".join(r["answer"] for r in QA[i:i + 5])} for i in range(0, 20, 5)]   # 4 documents
RETAIN = list(load_split("retain99"))[:6]


def test_documents_become_chunks_with_the_loss_on_every_token(tiny_tokenizer):
    ids = tiny_tokenizer(DOCS[0]["text"])["input_ids"]
    chunks = encode_text(tiny_tokenizer, DOCS[0]["text"], max_length=16)
    assert [c["input_ids"] for c in chunks] == [ids[i:i + 16] for i in range(0, len(ids), 16) if len(ids[i:i + 16]) > 1]
    assert all(c["labels"] == c["input_ids"] for c in chunks)
    data = QADataset(DOCS + QA[:2], tiny_tokenizer, max_length=16)      # documents and pairs side by side
    n_chunks = sum(len(encode_text(tiny_tokenizer, d["text"], 16)) for d in DOCS)
    assert len(data) == n_chunks + 2 and -100 in data[len(data) - 1]["labels"]


def test_an_objective_on_text_is_the_mean_token_nll_of_the_chunks(random_model, tiny_tokenizer):
    data = QADataset(DOCS, tiny_tokenizer, max_length=24)
    batch = {"forget": Collator(tiny_tokenizer)([data[i] for i in range(len(data))])}
    out = objectives.compute("ga", random_model, batch)
    with torch.no_grad():
        per_chunk = []
        for ex in data.examples:
            logits = random_model(torch.tensor([ex["input_ids"]])).logits[0, :-1]
            per_chunk.append(torch.nn.functional.cross_entropy(logits, torch.tensor(ex["labels"][1:])))
    assert out.loss.item() == pytest.approx(-torch.stack(per_chunk).mean().item(), rel=1e-5)   # GA = -NLL


def test_g_effect_on_documents_keeps_its_identities(random_model, tiny_tokenizer):
    df = geffect.g_effect(random_model, tiny_tokenizer, "ga", DOCS, RETAIN, batch_size=3, max_length=24)
    total = df[(df.component == "total") & (df.group == "total")].iloc[0]
    random_model.zero_grad()
    geffect.risk_backward(random_model, QADataset(DOCS, tiny_tokenizer, max_length=24), tiny_tokenizer, 2)
    squared = sum(float((p.grad ** 2).sum()) for p in random_model.parameters() if p.grad is not None)
    random_model.zero_grad(set_to_none=True)
    assert total.e_u == pytest.approx(-squared, rel=1e-4)       # GA: e_u = -|∇R_u|², R_u the texts' token NLL
    groups = df[(df.component == "total") & (df.group != "total")]
    assert groups.e_u.sum() == pytest.approx(total.e_u, rel=1e-6)
    check = firstorder.check_first_order(random_model, tiny_tokenizer, "npo", DOCS, RETAIN, lr=1e-3, batch_size=8)
    assert (check["rel_error"] < 0.05).all(), check


def test_unlearning_runs_on_documents(random_model, tiny_tokenizer, tmp_path):
    config = UnlearnConfig(objective="ga", regularizer="nll", epochs=2, lr=1e-2, batch_size=2, seed=0, max_length=24)
    before = QADataset(DOCS, tiny_tokenizer, max_length=24)
    nll = lambda: -objectives.compute("ga", random_model, {"forget": Collator(tiny_tokenizer)(before.examples)}).loss.item()  # noqa: E731
    start = nll()
    unlearn(random_model, tiny_tokenizer, DOCS, RETAIN, config=config, run_dir=tmp_path / "run")
    assert nll() > start                                        # the texts became less likely


def test_bad_documents_and_refusals_on_documents_are_named(tiny_tokenizer):
    with pytest.raises(DataError, match=r"docs: row 1 key 'text' must be a non-empty string"):
        validate([DOCS[0], {"text": "  "}], "forget", "docs")
    with pytest.raises(DataError, match=r"row 0 has no 'question' key"):
        validate(DOCS, "forget01_perturbed", "docs")              # evaluation splits stay question-answer
    with pytest.raises(DataError, match="Refusal answers .* need forget questions"):
        ForgetRetainDataset(DOCS, RETAIN, tiny_tokenizer, with_idk=True)


def test_corpora_load_local_documents_and_name_what_is_wrong(tmp_path):
    from kit import corpora
    (tmp_path / "a.txt").write_text("A document long enough to keep, about the history of ciphers and codes.")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "Short."}) + "\n\n" +
                                      json.dumps({"text": "Another document, long enough to be kept as well here."}) + "\n")
    docs = corpora.load_texts(str(tmp_path))
    assert [d["source"].split("/")[-1] for d in docs] == ["a.txt", "b.jsonl:3"]     # "Short." is under 50 characters
    assert corpora.load_texts(str(tmp_path), min_chars=1, limit=2)[1]["text"] == "Short."
    (tmp_path / "b.jsonl").write_text('{"txt": "no"}\n')
    with pytest.raises(DataError, match=r"b.jsonl: line 1 needs a 'text' key"):
        corpora.load_texts(str(tmp_path))
    with pytest.raises(DataError, match="shared by its authors on request"):
        corpora.load_texts("cais/wmdp-corpora", "bio-forget-corpus")
    with pytest.raises(DataError, match="Unknown WMDP corpus 'cyber'"):
        corpora.load_texts("cais/wmdp-corpora", "cyber")
    with pytest.raises(DataError, match="Could not load wikitext .* from the hub"):   # the tests run offline
        corpora.load_texts("wikitext")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No .txt or .jsonl documents"):
        corpora.load_texts(str(tmp_path / "empty"))
