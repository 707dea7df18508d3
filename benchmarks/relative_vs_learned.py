"""Learned positions vs relative attention at an equal budget on the bundled piano corpus.

    python benchmarks/relative_vs_learned.py [--out runs/compare] [--steps 600] [--seeds 0 1]

Both encodings train the same model (the bundled piano_cpu config's recipe at --n-layer x --n-embd,
a --block-size window) for the same steps on the same data, for each seed. Printed: each run's
held-out loss on the validation split (the training window), then, on the test split, the loss
of the same target tokens seen through windows of 1x, 2x, 4x and 8x the training window (the
relative model only: learned positions stop at 1x). A table a reader compares by eye; nothing
is asserted.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import yaml

from musicgpt.resources import configs, piano_corpus


def train_one(run_dir: Path, data_dir: Path, encoding: str, seed: int, args) -> Path:
    from musicgpt.training.cli import train_cli

    config = yaml.safe_load(configs()["piano_cpu"].read_text())
    model = config["model"]["config"]
    model.update(
        n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size,
        position_encoding=encoding,
    )  # fmt: skip
    config["seed_everything"] = seed
    config["run_dir"] = str(run_dir)  # checkpoints, logs and the model go there
    config["data"]["data_dir"] = str(data_dir)
    config["trainer"].update(max_steps=args.steps, max_time=None, val_check_interval=args.steps)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if not (run_dir / "model" / "config.yaml").exists():
        train_cli(["--config", str(run_dir / "config.yaml"), "--trainer.enable_progress_bar", "false"])
    return run_dir / "model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=96)
    ap.add_argument("--block-size", type=int, default=128)
    args = ap.parse_args()

    from musicgpt.data.build import build_dataset
    from musicgpt.data.dataset import FixedWindows, TokenShard
    from musicgpt.evaluate.nll import context_loss, model_loss
    from musicgpt.model.gpt import GPT

    out = Path(args.out)
    data_dir = out / "data"
    build_dataset(piano_corpus(), data_dir, "performance")
    validation = TokenShard(data_dir, "validation")
    test = TokenShard(data_dir, "test").tokens
    multiples = (1, 2, 4, 8)
    longest = args.block_size * multiples[-1]

    rows = []
    for encoding in ("learned", "relative"):
        for seed in args.seeds:
            model = GPT.from_pretrained(train_one(out / f"{encoding}-{seed}", data_dir, encoding, seed, args))
            val = model_loss(model, FixedWindows(validation, args.block_size), batch_size=8).nats
            contexts = {}
            for m in multiples if encoding == "relative" else (1,):
                ctx = args.block_size * m
                contexts[m] = context_loss(
                    model, test, ctx, scored=args.block_size // 2, first_target=longest
                ).nats
            rows.append((encoding, seed, model.num_params(), val, contexts))
            print(rows[-1], flush=True)

    print(f"\n{args.steps} steps of 16 x {args.block_size} tokens, {args.n_layer} layers x {args.n_embd}")
    header = "| positions | seed | parameters | validation nats/token | " + " | ".join(
        f"test, {m}x window" for m in multiples
    )
    print(header + " |")
    print("|" + " --- |" * (4 + len(multiples)))
    for encoding, seed, params, val, contexts in rows:
        cells = " | ".join(f"{contexts[m]:.3f}" if m in contexts else "" for m in multiples)
        print(f"| {encoding} | {seed} | {params:,} | {val:.3f} | {cells} |")
    for encoding in ("learned", "relative"):
        vals = [r[3] for r in rows if r[0] == encoding]
        print(f"{encoding}: mean validation {statistics.mean(vals):.3f} over {len(vals)} seeds")


if __name__ == "__main__":
    main()
