"""TOFU metrics: the golden check against TOFU's published Phi-1.5 logs, the kit's own evaluation
path, and the errors a user can cause."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp

from kit import mia, tofu
from kit.data import load_split
from kit.evaluation import answer_scores

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "tofu"
FULL = SHARED / "phi_full_wd0.01" / "eval_log_aggregated.json"
RETAIN = SHARED / "phi_retain90_wd0.01" / "eval_log_aggregated.json"
needs_logs = pytest.mark.skipif(not FULL.exists() or not RETAIN.exists(), reason="../shared/tofu logs absent")


def _by_hand(model_log: dict, retain_log: dict) -> dict:
    """TOFU's aggregation written out item by item from the definitions, independently of kit.tofu."""
    files = {"retain": "eval_log.json", "real_authors": "eval_real_author_wo_options.json",
             "world_facts": "eval_real_world_wo_options.json", "forget": "eval_log_forget.json"}
    out = {}
    for role, key in files.items():
        log = model_log[key]
        probs, ratios, rouges = [], [], []
        for i in log["avg_gt_loss"]:
            gt, para, pert = log["avg_gt_loss"][i], log["avg_paraphrased_loss"][i], log["average_perturb_loss"][i]
            if role in ("real_authors", "world_facts"):
                probs.append(math.exp(-gt) / (math.exp(-gt) + sum(math.exp(-x) for x in pert)))
            else:
                probs.append(math.exp(-gt))
            r = math.exp(-sum(pert) / len(pert)) / math.exp(-para)   # geometric mean over perturbed answers
            ratios.append(min(r, 1 / r) if role == "forget" else max(0.0, 1 - r))
            rouges.append(log["rougeL_recall"][i])
        out[f"{role}_prob"] = sum(probs) / len(probs)
        out[f"{role}_truth_ratio"] = sum(ratios) / len(ratios)
        out[f"{role}_rouge"] = sum(rouges) / len(rouges)
    nine = [out[f"{r}_{m}"] for r in ("retain", "real_authors", "world_facts") for m in ("rouge", "prob", "truth_ratio")]
    out["model_utility"] = len(nine) / sum(1 / v for v in nine)

    def forget_r(log):
        f = log["eval_log_forget.json"]
        return [math.exp(f["avg_paraphrased_loss"][i] - sum(p) / len(p)) for i, p in f["average_perturb_loss"].items()]
    test = ks_2samp(forget_r(model_log), forget_r(retain_log))
    out["forget_quality"], out["ks_statistic"] = test.pvalue, test.statistic
    return out


@needs_logs
def test_tofu_score_reproduces_tofus_aggregation_of_the_phi_logs():
    expected = _by_hand(json.loads(FULL.read_text()), json.loads(RETAIN.read_text()))
    got = tofu.tofu_score(FULL, RETAIN)
    assert set(got) == {"model_utility", "forget_truth_ratio", "forget_quality", "ks_statistic",
                        *(f"{r}_{m}" for r in tofu.UTILITY for m in tofu.METRICS)}
    for key, value in got.items():
        assert value == pytest.approx(expected[key], rel=1e-6, abs=1e-12), key
    assert 0.5 < got["model_utility"] < 0.55            # Phi-1.5 fine-tuned on TOFU: about 0.52
    assert got["forget_quality"] < 1e-10                # it still knows the forget authors


@needs_logs
def test_per_item_numbers_match_the_fields_tofu_stored():
    items = tofu.item_metrics(tofu.read_log(FULL))
    log = json.loads(FULL.read_text())
    for role, key in [("retain", "eval_log.json"), ("forget", "eval_log_forget.json"),
                      ("real_authors", "eval_real_author_wo_options.json")]:
        part = items[items["split"] == role]
        stored_r = np.array(list(log[key]["truth_ratio"].values()))
        assert np.allclose(part["R"], stored_r, rtol=1e-5)       # TOFU stored R per item (float32)
    part = items[items["split"] == "real_authors"]
    stored = np.exp(-np.array(list(log["eval_real_author_wo_options.json"]["normalized_gt_loss"].values())))
    assert np.allclose(part["prob"], stored, rtol=1e-6)


@needs_logs
def test_cli_prints_one_json_object(tmp_path):
    out = subprocess.run([sys.executable, "-m", "kit", "tofu-score", str(FULL), "--retain", str(RETAIN)],
                         capture_output=True, text=True, check=True).stdout
    numbers = json.loads(out)
    assert numbers == pytest.approx(tofu.tofu_score(FULL, RETAIN))


def _write(path, log):
    path.write_text(json.dumps(log))
    return path


def _toy_log(n=4, seed=0):
    rng = np.random.default_rng(seed)
    log = {}
    for key in ("eval_log.json", "eval_real_author_wo_options.json", "eval_real_world_wo_options.json",
                "eval_log_forget.json"):
        idx = [str(i) for i in range(n)]
        log[key] = {"avg_gt_loss": dict(zip(idx, rng.uniform(0.1, 2, n).tolist())),
                    "avg_paraphrased_loss": dict(zip(idx, rng.uniform(0.5, 2, n).tolist())),
                    "average_perturb_loss": {i: rng.uniform(1, 3, 5).tolist() for i in idx},
                    "rougeL_recall": dict(zip(idx, rng.uniform(0, 1, n).tolist()))}
    return log


def test_aggregation_equals_the_by_hand_definitions_on_synthetic_logs(tmp_path):
    """The golden check that runs in every clone (the Phi-1.5 one above needs ../shared): TOFU-format
    logs with random per-item numbers, aggregated by the kit and by the independent definitions."""
    model_log, retain_log = _toy_log(n=40, seed=1), _toy_log(n=40, seed=2)
    expected = _by_hand(model_log, retain_log)
    got = tofu.tofu_score(_write(tmp_path / "m.json", model_log), _write(tmp_path / "r.json", retain_log))
    for key, value in got.items():
        assert value == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


def test_bad_logs_name_the_file_and_key(tmp_path):
    log = _toy_log()
    del log["eval_log.json"]["avg_paraphrased_loss"]
    with pytest.raises(tofu.EvaluationError, match=r"bad\.json.*'avg_paraphrased_loss'.*'eval_log\.json'"):
        tofu.tofu_score(_write(tmp_path / "bad.json", log))
    log = _toy_log()
    del log["eval_log_forget.json"]
    with pytest.raises(tofu.EvaluationError, match="'eval_log_forget.json'"):
        tofu.read_log(_write(tmp_path / "bad.json", log))
    with pytest.raises(tofu.EvaluationError, match="does not exist"):
        tofu.read_log(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(tofu.EvaluationError, match="not valid JSON"):
        tofu.read_log(tmp_path / "broken.json")


def test_mismatched_item_counts_are_an_error(tmp_path):
    model = _write(tmp_path / "model.json", _toy_log(n=4))
    retain = _write(tmp_path / "retain.json", _toy_log(n=5))
    with pytest.raises(tofu.EvaluationError, match="4 forget items and the retain reference 5"):
        tofu.tofu_score(model, retain)
    result = subprocess.run([sys.executable, "-m", "kit", "tofu-score", str(model), "--retain", str(retain)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "4 forget items" in result.stderr


def test_truth_ratio_variants_and_bad_option(tmp_path):
    items = tofu.read_log(_write(tmp_path / "m.json", _toy_log()))
    geo, ari = tofu.item_metrics(items, "geometric"), tofu.item_metrics(items, "arithmetic")
    assert (ari["R"] >= geo["R"] - 1e-12).all()           # arithmetic mean >= geometric mean
    with pytest.raises(tofu.EvaluationError, match="'harmonic'"):
        tofu.item_metrics(items, "harmonic")


def test_forget_quality_of_a_model_against_itself_is_one(tmp_path):
    items = tofu.read_log(_write(tmp_path / "m.json", _toy_log(n=30)))
    fq = tofu.forget_quality(items, items)
    assert fq["forget_quality"] == pytest.approx(1.0) and fq["ks_statistic"] == 0


def test_membership_scores_and_extraction():
    assert mia.auc([3, 4], [1, 2]) == 1.0 and mia.auc([1, 2], [3, 4]) == 0.0 and mia.auc([1], [1]) == 0.5
    assert mia.extraction_strength([True, True, True, True]) == 1.0
    assert mia.extraction_strength([False, True, True, True]) == 0.75      # one teacher-forced token needed
    assert mia.extraction_strength([True, True, True, False]) == 0.0       # the last token is never reproduced
    assert mia.exact_memorization([True, False, True, True]) == 0.75
    import pandas as pd
    rows = pd.DataFrame({"logp": [np.log([0.9, 0.1, 0.5, 0.2, 0.8])], "mu": [np.full(5, -1.0)],
                         "sigma": [np.full(5, 2.0)]})
    s = mia.membership_scores(rows, ["abc"], k=0.4).iloc[0]
    assert s["min_k"] == pytest.approx(np.log([0.1, 0.2]).mean())            # the 2 lowest of 5 tokens
    assert s["min_k_pp"] == pytest.approx(((np.log([0.1, 0.2]) + 1) / 2).mean())
    assert s["loss"] == pytest.approx(np.log([0.9, 0.1, 0.5, 0.2, 0.8]).mean())
    with pytest.raises(ValueError, match="k=0"):
        mia.membership_scores(rows, ["abc"], k=0)


def _small_splits(n=3):
    splits = tofu.tofu_splits("forget01")
    return {role: records[:n] for role, records in splits.items()}


def test_evaluate_scores_every_answer_and_round_trips_through_tofus_format(random_model, tiny_tokenizer, tmp_path):
    splits = _small_splits()
    ev = tofu.evaluate(random_model, tiny_tokenizer, splits, reference=None, max_new_tokens=8, batch_size=5,
                       n_boot=200, out_dir=tmp_path)
    items = ev.items
    assert list(items.groupby("split", sort=False).size()) == [3] * 5
    forget = items[items.split == "forget"]
    direct = answer_scores(random_model, tiny_tokenizer, splits["forget"])
    assert np.allclose(forget["avg_gt_loss"], direct["nll"], rtol=1e-5)
    para = answer_scores(random_model, tiny_tokenizer, splits["forget"], answer_key="paraphrased_answer")
    assert np.allclose(forget["avg_paraphrased_loss"], para["nll"], rtol=1e-5)
    real = items[items.split == "real_authors"]      # the true side is the original answer there
    assert np.allclose(real["avg_paraphrased_loss"], real["avg_gt_loss"])
    assert (items.loc[items.split != "holdout", "average_perturb_loss"].map(len) == 5).all()
    assert ev["model_utility"] == pytest.approx(tofu.aggregate(items)["model_utility"])
    assert ev.summary.loc["model_utility", "ci_low"] <= ev["model_utility"] <= ev.summary.loc["model_utility", "ci_high"]
    assert set(ev.mia["score"]) == set(mia.SCORES) and "No retain-model reference" in ev.notes[0]
    again = tofu.aggregate(tofu.read_log(tmp_path / "eval_log_aggregated.json"))
    for key, value in tofu.aggregate(items).items():
        assert again[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
    with_ref = tofu.summarise(items, reference=tmp_path / "eval_log_aggregated.json", n_boot=0)
    assert with_ref["forget_quality"] == pytest.approx(1.0)
    assert any("3 items" in note for note in with_ref.notes)          # a tiny forget split says so


def test_evaluate_rejects_bad_splits(random_model, tiny_tokenizer):
    with pytest.raises(tofu.EvaluationError, match="'forgets'"):
        tofu.evaluate(random_model, tiny_tokenizer, {"forgets": list(load_split("forget01_perturbed"))})
    with pytest.raises(tofu.EvaluationError, match="'forget' split is empty"):
        tofu.evaluate(random_model, tiny_tokenizer, {"forget": []})
    plain = [{"question": "q", "answer": "a"}]
    with pytest.raises(tofu.EvaluationError, match="no 'perturbed_answer' key"):
        tofu.evaluate(random_model, tiny_tokenizer, {"retain": plain})
    with pytest.raises(tofu.EvaluationError, match="'harmonic'"):
        tofu.evaluate(random_model, tiny_tokenizer, _small_splits(1), truth_ratio="harmonic")


def test_a_stored_evaluation_is_made_once_per_key(random_model, tiny_tokenizer, tmp_path):
    calls = []

    def make():
        calls.append(1)
        return tofu.evaluate(random_model, tiny_tokenizer, _small_splits(), max_new_tokens=4, n_boot=0)
    first = tofu.stored_evaluation(tmp_path, {"split": "forget01", "name": "ga", "lr": 1e-3}, make)
    again = tofu.stored_evaluation(tmp_path, {"lr": 1e-3, "name": "ga", "split": "forget01"}, make)    # same key, any order
    assert len(calls) == 1 and again["model_utility"] == pytest.approx(first["model_utility"])
    tofu.stored_evaluation(tmp_path, {"split": "forget01", "name": "ga", "lr": 2e-3}, make)            # another setting
    tofu.stored_evaluation(tmp_path, {"split": "forget01", "name": "ga", "lr": 1e-3}, make, resume=False)
    assert len(calls) == 3 and sorted(p.name[:12] for p in tmp_path.iterdir()) == ["forget01-ga-"] * 2
