"""`musicgpt demo`: the whole path on the bundled piano corpus, on a CPU, in about 15 minutes.

1. build token shards from data/midi/piano (real performances; see data/README.md)
2. train the CPU-sized piano model (configs/piano_cpu.yaml)
3. report the held-out loss beside unigram and bigram baselines on the same split
4. continue the opening of a held-out piece and write it as MIDI
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="build data, train, evaluate and generate on the bundled piano corpus"
    )
    p.add_argument("--src", default=None, help="MIDI folder (default: the bundled data/midi/piano)")
    p.add_argument("--config", default=None, help="training config (default: configs/piano_cpu.yaml)")
    p.add_argument("--run-dir", default="runs/piano", help="where data, checkpoints, model and outputs go")
    p.add_argument("--minutes", type=float, default=None, help="training time limit (default: the config's)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps (default: the config's)")
    p.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of music to generate")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def _find(relative: str) -> Path:
    """A bundled file, looked up from the current folder first, then from the package's checkout."""
    from musicgpt.errors import MusicGPTError

    for base in (Path.cwd(), REPO):
        if (base / relative).exists():
            return base / relative
    raise MusicGPTError(
        f"cannot find {relative} (looked in {Path.cwd()} and {REPO}); run from the repository"
    )


def run(args) -> int:
    import time

    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.data.build import build_dataset, read_manifest
    from musicgpt.evaluate.nll import loss_table
    from musicgpt.generation.piano import continue_piano, cut_at_seconds
    from musicgpt.tokenizers.midi_io import write_midi
    from musicgpt.training.cli import train_cli

    started = time.perf_counter()
    run_dir = Path(args.run_dir)
    src = Path(args.src) if args.src else _find("data/midi/piano")
    config = Path(args.config) if args.config else _find("configs/piano_cpu.yaml")
    data_dir = run_dir / "data"

    _banner(f"1/4 building token shards from {src}")
    report = build_dataset(src, data_dir, "performance")
    print(report.summary())

    _banner(f"2/4 training ({config})")
    overrides = [
        f"--data.data_dir={data_dir}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
    ]
    if args.minutes is not None:
        overrides.append(f"--trainer.max_time={_as_duration(args.minutes)}")
    if args.max_steps is not None:
        overrides.append(f"--trainer.max_steps={args.max_steps}")
    if args.resume:
        overrides.append("--resume")
    trainer = _trainer_section(config)
    if trainer.get("precision") == "bf16-mixed" and not cpu_has_bf16_matmul():
        print("this CPU has no bf16 matrix units (AVX512-BF16 or AMX): training in fp32 instead")
        overrides.append("--trainer.precision=32-true")
    cli = train_cli(["--config", str(config), *overrides, *_checkpoint_dir_override(trainer, run_dir)])
    trained_minutes = (time.perf_counter() - started) / 60
    print(f"trained to step {cli.trainer.global_step} ({trained_minutes:.1f} min so far)")

    _banner("3/4 held-out loss (validation split) beside n-gram baselines")
    model, tokenizer = load_checkpoint(run_dir / "model")
    for line in loss_table(model, data_dir, "validation"):
        print(line)

    _banner("4/4 continuing the opening of a held-out piece")
    manifest = read_manifest(data_dir)
    held_out = [f["path"] for f in manifest["files"] if f["split"] == "validation"]
    prompt_file = (src / held_out[0]) if held_out else next(iter(sorted(src.rglob("*.mid"))))
    prompt = cut_at_seconds(tokenizer.encode(prompt_file), 10.0)
    result = continue_piano(model, tokenizer, prompt, args.seconds, seed=args.seed)
    out = write_midi(tokenizer.decode(result.sequences()[0]), run_dir / "continuation.mid")
    print(f"prompt: the first 10 s of {prompt_file.name}; {args.seconds:.0f} s continuation written to {out}")
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} minutes")
    return 0


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices natively; elsewhere PyTorch emulates them, slower than fp32."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _trainer_section(config: Path) -> dict:
    import yaml

    return yaml.safe_load(config.read_text()).get("trainer") or {}


def _checkpoint_dir_override(trainer: dict, run_dir: Path) -> list[str]:
    """Point the config's ModelCheckpoints at the run directory (callbacks are a list in the YAML)."""
    import yaml

    callbacks = trainer.get("callbacks") or []
    for callback in callbacks:
        if callback.get("class_path", "").endswith("ModelCheckpoint"):
            # jsonargparse does not index lists from the command line: hand it the whole list.
            callback.setdefault("init_args", {})["dirpath"] = str(run_dir / "checkpoints")
    return (
        [f"--trainer.callbacks={yaml.safe_dump(callbacks, default_flow_style=True).strip()}"]
        if callbacks
        else []
    )


def _as_duration(minutes: float) -> str:
    total = int(round(minutes * 60))
    return f"00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)
