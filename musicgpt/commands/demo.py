"""`musicgpt demo`: the whole path on the bundled piano corpus, on a CPU, in about 15 minutes.

1. build token shards from the bundled piano corpus (musicgpt/assets/piano: real performances)
2. train the CPU-sized piano model (the bundled config piano_cpu)
3. report the held-out loss beside unigram and bigram baselines on the same split
4. continue the opening of a held-out piece and write it as MIDI
"""

from __future__ import annotations

from pathlib import Path

from musicgpt import argtypes


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="build data, train, evaluate and generate on the bundled piano corpus"
    )
    p.add_argument(
        "--src",
        type=argtypes.input_path,
        default=None,
        help="MIDI folder (default: the bundled piano corpus)",
    )
    p.add_argument("--config", default="piano_cpu", help="training config: a bundled name or a YAML file")
    p.add_argument(
        "--run-dir",
        type=argtypes.output_dir,
        default="runs/piano",
        help="where data, checkpoints, model and outputs go",
    )
    p.add_argument(
        "--minutes", type=argtypes.minutes, default=None, help="training time limit (default: the config's)"
    )
    p.add_argument(
        "--max-steps", type=argtypes.positive_int, default=None, help="training steps (default: the config's)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")
    p.add_argument("--seconds", type=argtypes.seconds, default=20.0, help="seconds of music to generate")
    p.add_argument("--seed", type=argtypes.seed, default=0)
    p.set_defaults(run=run)


def run(args) -> int:
    import time

    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.data.build import build_dataset, read_manifest
    from musicgpt.errors import MusicGPTError
    from musicgpt.evaluate.nll import loss_table
    from musicgpt.generation.piano import continue_piano, cut_at_seconds
    from musicgpt.resources import config_path, piano_corpus
    from musicgpt.tokenizers.midi_io import write_midi
    from musicgpt.training.cli import existing_run, last_checkpoint, train_cli

    started = time.perf_counter()
    run_dir = Path(args.run_dir)
    src = args.src or piano_corpus()
    config = config_path(args.config)
    trainer = _trainer_section(config)  # a config that cannot be read stops the demo before any work
    data_dir = run_dir / "data"
    # what training would refuse after the data build: say it before
    found = existing_run(run_dir)
    if found is not None and not args.resume:
        raise MusicGPTError(
            f"{run_dir} already holds a run ({found}): --resume continues it, --run-dir DIR starts a new one"
        )
    if args.resume and not last_checkpoint(run_dir).exists():
        raise MusicGPTError(f"--resume: {last_checkpoint(run_dir)} does not exist; nothing to continue")

    _banner(f"1/4 building token shards from {src}")
    report = build_dataset(src, data_dir, "performance")
    print(report.summary())

    _banner(f"2/4 training ({config})")
    overrides = [f"--run_dir={run_dir}"]  # its data/ is the data just built
    if args.minutes is not None:
        overrides.append(f"--trainer.max_time={_as_duration(args.minutes)}")
    if args.max_steps is not None:
        overrides.append(f"--trainer.max_steps={args.max_steps}")
    if args.resume:
        overrides.append("--resume")
    if trainer.get("precision") == "bf16-mixed" and not cpu_has_bf16_matmul():
        print("this CPU has no bf16 matrix units (AVX512-BF16 or AMX): training in fp32 instead")
        overrides.append("--trainer.precision=32-true")
    cli = train_cli(["--config", str(config), *overrides])
    trained_minutes = (time.perf_counter() - started) / 60
    print(f"trained to step {cli.trainer.global_step} ({trained_minutes:.1f} min so far)")

    _banner("3/4 held-out loss (validation split) beside n-gram baselines")
    model, tokenizer = load_checkpoint(run_dir / "model")
    for line in loss_table(model, data_dir, "validation"):
        print(line)

    _banner("4/4 continuing the opening of a held-out piece")
    manifest = read_manifest(data_dir)
    held_out = [f["path"] for f in manifest["files"] if f["split"] == "validation"]
    root = src if src.is_dir() else src.parent
    prompt_file = (root / held_out[0]) if held_out else next(iter(sorted(root.rglob("*.mid"))))
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
    from musicgpt.io import read_yaml_mapping

    return read_yaml_mapping(config).get("trainer") or {}


def _as_duration(minutes: float) -> str:
    total = int(round(minutes * 60))
    return f"00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)
