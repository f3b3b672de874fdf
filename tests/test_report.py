"""Notebook helpers: recorded numbers round-trip through JSON."""
import json

import kit


def test_record_writes_json_that_reads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_OUTPUT_DIR", str(tmp_path))
    import numpy as np
    out = kit.record("nb", "tag", lr=np.float32(0.5), steps=3, name="ga", table={"a": [1, 2]})
    saved = json.loads(next(tmp_path.rglob("nb.json")).read_text())
    assert saved == out == {"lr": 0.5, "steps": 3, "name": "ga", "table": {"a": [1, 2]}}

