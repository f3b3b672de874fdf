"""kit.paths.stored_frame: a finished table is read back, an unfinished one is made again."""
import json

import pandas as pd
import pytest

from kit.paths import stored_frame


def test_a_stored_frame_is_made_once_per_key_and_read_back_equal(tmp_path):
    calls = []

    def make(n):
        def inner():
            calls.append(n)
            return pd.DataFrame({"step": [0, 5], "split": ["forget", "utility"], "accuracy 1 − FA": [0.9, 0.25 * n]})
        return inner

    first = stored_frame(tmp_path, {"run": "gd", "n": 1, "items": [1, 2]}, make(1))
    again = stored_frame(tmp_path, {"items": [1, 2], "n": 1, "run": "gd"}, make(1))     # key order does not matter
    other = stored_frame(tmp_path, {"run": "gd", "n": 2, "items": [1, 2]}, make(2))
    assert calls == [1, 2]
    pd.testing.assert_frame_equal(first, again)
    assert other["accuracy 1 − FA"].tolist() == [0.9, 0.5]
    assert len(list(tmp_path.glob("*.parquet"))) == 2 and len(list(tmp_path.glob("*.json"))) == 2


def test_the_key_beside_a_stored_frame_shortens_long_data_but_the_digest_sees_all_of_it(tmp_path):
    docs = [{"text": f"document {i}"} for i in range(50)]
    stored_frame(tmp_path, {"data": docs, "lr": 1e-5}, lambda: pd.DataFrame({"a": [1]}))
    changed = docs[:-1] + [{"text": "document 49, edited"}]
    stored_frame(tmp_path, {"data": changed, "lr": 1e-5}, lambda: pd.DataFrame({"a": [2]}))
    keys = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert len(keys) == 2 and all(k["data"].startswith("50 entries, sha256 ") and k["lr"] == 1e-5 for k in keys)


def test_a_run_that_fails_leaves_nothing_to_read_back(tmp_path):
    def broken():
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError):
        stored_frame(tmp_path, {"run": "x"}, broken)
    assert not list(tmp_path.glob("*.parquet"))
    assert stored_frame(tmp_path, {"run": "x"}, lambda: pd.DataFrame({"a": [1]})).a.tolist() == [1]
