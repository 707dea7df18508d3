"""Put a trained model into the package: `python -m musicgpt.ship MODEL_DIR NAME --data DATA_DIR`.

(It lives beside checkpoints.py, not in musicgpt/models/: it loads checkpoints, and the models
package, which checkpoints.py reads, imports nothing above it.) Writes `musicgpt/models/NAME/`: config.yaml, model.safetensors (bf16 unless that costs more than
`--max-bf16-loss` nats/token on the validation split), tokenizer.json and metrics.json (the
held-out losses, with the quick check that tests/test_shipped_model.py repeats) and corpus_index.npz
(the copy report's index of the training split: `python -m musicgpt.evaluate.copying` rebuilds it
alone). MODEL_CARD.md is
written by hand beside them. The continuation table is added by `--continuations REPORT.json`
(from `musicgpt evaluate --continuations --report`).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

QUICK_CHECK_WINDOWS = 4  # validation windows a test re-scores in a second or two


def validation_losses(model, data_dir: Path, max_windows: int | None = None) -> dict:
    from musicgpt.data.dataset import FixedWindows, TokenShard
    from musicgpt.evaluate.nll import model_loss

    windows = FixedWindows(TokenShard(data_dir, "validation"), model.config.block_size, max_windows)
    loss = model_loss(model, windows, batch_size=4)
    return {
        "split": "validation",
        "windows": len(windows),
        "tokens": loss.tokens,
        "nats_per_token": loss.nats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", help="a trained model: runs/NAME/model, or a checkpoint .ckpt")
    ap.add_argument("name", help="the shipped model's name, e.g. piano-small")
    ap.add_argument("--data", required=True, help="the data dir the model trained on (its validation split)")
    ap.add_argument(
        "--max-bf16-loss", type=float, default=0.002, help="largest loss increase bf16 weights may cost"
    )
    ap.add_argument("--continuations", help="a report from `musicgpt evaluate --continuations --report`")
    args = ap.parse_args()

    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.io import atomic_write_text, read_json_mapping

    # read before the long work: a bad file is refused at once
    continuations = (
        read_json_mapping(args.continuations, "continuation table") if args.continuations else None
    )
    model, tokenizer = load_checkpoint(args.model)
    data = Path(args.data)
    fp32 = validation_losses(model, data)
    bf16_model = copy.deepcopy(model).to(torch.bfloat16).float()  # the weights rounded to bf16
    bf16 = validation_losses(bf16_model, data)
    use_bf16 = bf16["nats_per_token"] - fp32["nats_per_token"] <= args.max_bf16_loss
    shipped = bf16_model if use_bf16 else model
    out = Path(__file__).parent / "models" / args.name  # the source checkout's musicgpt/models/
    (shipped.to(torch.bfloat16) if use_bf16 else shipped).save_pretrained(out)
    tokenizer.save(out / "tokenizer.json")
    metrics = {
        "parameters": model.num_params(),
        "weights": "bf16" if use_bf16 else "fp32",
        "validation": {
            **validation_losses(shipped.float(), data),
            "fp32_weights_nats_per_token": fp32["nats_per_token"],
        },
        "quick_check": validation_losses(shipped.float(), data, QUICK_CHECK_WINDOWS),
    }
    if continuations is not None:
        metrics["continuations"] = continuations
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    from musicgpt.evaluate.copying import write_index

    print(f"corpus index: {write_index(out, data)}")
    print(json.dumps({k: v for k, v in metrics.items() if k != "continuations"}, indent=2))


if __name__ == "__main__":
    main()
