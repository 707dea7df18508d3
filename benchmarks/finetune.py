"""Fine-tuning piano-small on five rags: held-out loss and continuation statistics, before and after.

    python benchmarks/finetune.py [--minutes 10] [--recipes all,top2] [--out runs/finetune-bench]

The folder: the rags of the bundled corpus that piano-small did not train on (maple-leaf-rag and
peacherine-rag; pineapple-rag, the third, is kept for scoring), The Entertainer from data/ragtime
(not in the corpus at all), and two Joplin rags of its training split (elite-syncopations,
the-easy-winners): the corpus holds only three held-out rags, and one is needed for scoring. The
score: the loss on pineapple-rag (in no folder and in no training split) in 512-token windows, and
`musicgpt evaluate --continuations` on it (10 s prompts, 4 samples of 20 s). Prints one table row
per model (the base model first) with the ratio of its loss to the base's.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "musicgpt" / "assets" / "piano"
FOLDER = [
    ASSETS / "maple-leaf-rag.mid",
    ASSETS / "peacherine-rag.mid",
    ROOT / "data" / "ragtime" / "the-entertainer.mid",
    ASSETS / "elite-syncopations.mid",
    ASSETS / "the-easy-winners.mid",
]
SCORED = ASSETS / "pineapple-rag.mid"
RECIPES = {"all": None, "top2": 2, "top1": 1}


@torch.inference_mode()
def piece_loss(model, ids: np.ndarray, block: int) -> float:
    """Mean NLL per token over consecutive windows of `block` tokens (every token after the first)."""
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, block):
        w = torch.as_tensor(ids[start : start + block + 1], dtype=torch.long)[None]
        if w.size(1) < 2:
            break
        logits = model(w[:, :-1]).float()
        total += F.cross_entropy(logits[0], w[0, 1:], reduction="sum").item()
        count += w.size(1) - 1
    return total / count


def main() -> None:
    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.training.finetune import FinetuneConfig, finetune

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--recipes", default="all,top2")
    ap.add_argument("--out", default="runs/finetune-bench")
    ap.add_argument(
        "--reuse", action="store_true", help="score the runs already in --out instead of training"
    )
    args = ap.parse_args()
    out = Path(args.out)
    folder = out / "folder"
    folder.mkdir(parents=True, exist_ok=True)
    for f in FOLDER:
        shutil.copy(f, folder / f.name)
    model, tok = load_checkpoint("piano-small")
    scored = np.asarray(tok.encode(SCORED), np.int64)
    block = model.config.block_size
    rows = [("piano-small", "", 0, 0.0, None, None, piece_loss(model, scored, block))]
    for name in args.recipes.split(","):
        run = out / name
        if not args.reuse:
            shutil.rmtree(run, ignore_errors=True)
            finetune(folder, run, "piano-small", FinetuneConfig(minutes=args.minutes, train_layers=RECIPES[name]),
                     log=lambda m: None, show_progress=False)  # fmt: skip
        f = json.loads((run / "model" / "metrics.json").read_text())["finetune"]
        tuned, _ = load_checkpoint(run / "model")
        rows.append((name, f["stopped"], f["steps"], f["minutes"], f["base_val_loss"], f["best_val_loss"],
                     piece_loss(tuned, scored, block)))  # fmt: skip
    base = rows[0][-1]
    print(
        f"folder: {len(FOLDER)} rags; scored on {SCORED.name} ({scored.size} tokens); torch threads {torch.get_num_threads()}"
    )
    print(f"{'model':<12} {'stopped by':<15} {'steps':>5} {'minutes':>7} {'folder val before':>17} "
          f"{'after':>6} {'pineapple loss':>14} {'ratio':>6}")  # fmt: skip
    for name, stopped, steps, minutes, before, after, loss in rows:
        b = f"{before:.3f}" if before is not None else ""
        a = f"{after:.3f}" if after is not None else ""
        print(
            f"{name:<12} {stopped:<15} {steps:>5} {minutes:>7.1f} {b:>17} {a:>6} {loss:>14.3f} {loss / base:>6.3f}"
        )
    (out / "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
