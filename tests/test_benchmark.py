"""kit.benchmark: the TOFU table's references and unlearned rows, stored and resumed."""
from unittest import mock

import pytest
import torch

from kit.benchmark import BenchmarkError, TofuBenchmark
from kit.unlearning import UnlearnConfig


def test_each_evaluation_is_stored_and_a_new_benchmark_resumes_it(random_model, tiny_tokenizer, tmp_path):
    original = {k: v.detach().clone() for k, v in random_model.state_dict().items()}
    restore = lambda: random_model.load_state_dict(original)       # noqa: E731
    config = UnlearnConfig(objective="ga", lr=1e-2, epochs=1, batch_size=8)
    settings = dict(max_new_tokens=4, max_items=3, n_boot=0)
    bench = TofuBenchmark(tmp_path, **settings)
    ev = bench.unlearned(random_model, tiny_tokenizer, "random", "forget01", config, restore)
    ref = bench.references[(None, "forget01")]                     # made on the way, from the target's weights
    assert ref.retain is None                                      # no retain model for this model id
    assert len(ref.splits["forget"]) == 20 and all(len(v) == 3 for k, v in ref.splits.items() if k != "forget")
    assert ev["forget_prob"] < ref.target["forget_prob"]           # gradient ascent lowered the forget answers' probability
    assert len(list(tmp_path.iterdir())) == 2                      # target and the run, each in its own folder

    restore()
    again = TofuBenchmark(tmp_path, **settings)
    with mock.patch("kit.unlearning.unlearn", side_effect=AssertionError("unlearned again")), \
            mock.patch("kit.benchmark.evaluate", side_effect=AssertionError("evaluated again")):
        back = again.unlearned(random_model, tiny_tokenizer, "random", "forget01", config, restore)
    assert back["forget_prob"] == pytest.approx(ev["forget_prob"])
    assert again.references[(None, "forget01")].target["forget_prob"] == pytest.approx(ref.target["forget_prob"])

    with torch.no_grad():                                          # another model under the same family: refused
        next(random_model.parameters()).add_(1.0)
    with pytest.raises(BenchmarkError, match="family="):
        again.reference(random_model, tiny_tokenizer, "random", "forget01")
