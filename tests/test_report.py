"""Notebook helpers: recorded numbers round-trip through JSON; trade-off axes pick their scale."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import kit  # noqa: E402


def test_record_writes_json_that_reads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_OUTPUT_DIR", str(tmp_path))
    import numpy as np
    out = kit.record("nb", "tag", lr=np.float32(0.5), steps=3, name="ga", table={"a": [1, 2]})
    saved = json.loads(next(tmp_path.rglob("nb.json")).read_text())
    assert saved == out == {"lr": 0.5, "steps": 3, "name": "ga", "table": {"a": [1, 2]}}


def test_nll_axes_use_a_log_scale_only_over_a_wide_range():
    fig, ax = plt.subplots()
    kit.nll_axes(ax, [0.1, 0.5, 2.0], [2.3, 2.4, 2.6])     # forget spans 20x, retain 1.1x
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    plt.close(fig)
