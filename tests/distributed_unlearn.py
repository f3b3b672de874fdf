"""One unlearning run with the live G-effect probe, for tests/test_distributed.py.

    python tests/distributed_unlearn.py OUT_DIR GLOBAL_BATCH
    accelerate launch --cpu --num_processes 2 tests/distributed_unlearn.py OUT_DIR GLOBAL_BATCH

Each process takes GLOBAL_BATCH / world size examples per step, so both commands take the same
optimizer steps. Rank 0 writes OUT_DIR/model.safetensors, OUT_DIR/geffect.csv and OUT_DIR/run/.
"""
import os
import sys
from pathlib import Path

import torch


def main(out: Path, global_batch: int) -> None:
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from kit.data import load_split
    from kit.models import TinyRecipe, tiny_config, train_tiny_tokenizer
    from kit.probes import GEffectCallback
    from kit.unlearning import UnlearnConfig, unlearn

    world = int(os.environ.get("WORLD_SIZE", 1))
    torch.set_num_threads(1)
    tok = train_tiny_tokenizer(TinyRecipe())
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(TinyRecipe(hidden_size=32, layers=2, heads=2, intermediate_size=64), tok))
    forget, retain = list(load_split("forget01"))[:8], list(load_split("retain99"))[:6]
    config = UnlearnConfig.paper("npo+nll", "forget01", "tiny", epochs=2, lr=1e-3, batch_size=global_batch // world,
                                 save_every=2)
    probe = GEffectCallback(tok, forget, retain, config, every=2, batch_size=4)
    run = unlearn(model, tok, forget, retain, config, run_dir=out / "run", callbacks=[probe])
    if int(os.environ.get("RANK", 0)) == 0:
        save_file({k: v.detach().clone() for k, v in run.model.state_dict().items()}, str(out / "model.safetensors"))
        probe.frame().to_csv(out / "geffect.csv", index=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
