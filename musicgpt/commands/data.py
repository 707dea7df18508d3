"""`musicgpt data build SRC --out DIR`: tokenize a folder of MIDI (or text) files into shards."""

from __future__ import annotations

from musicgpt import argtypes


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="build token shards from a folder of MIDI or text files")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    b = sub.add_parser(
        "build",
        help="tokenize every .mid/.midi (or .txt) under SRC into shards with a manifest",
        description="Tokenize in parallel, skip (and report) unreadable files, write shards atomically. "
        "Run again after an interruption: files already tokenized are reused.",
    )
    b.add_argument("src", type=argtypes.input_path, help="a folder (searched recursively) or a single file")
    b.add_argument(
        "--out", type=argtypes.output_dir, required=True, help="output folder for shards and manifest.json"
    )
    b.add_argument(
        "--tokenizer",
        default="performance",
        help="performance (MIDI, default), bytes or gpt2-bpe (text), or a saved tokenizer .json",
    )
    b.add_argument(
        "--config",
        help="a training config (file or bundled name): take the tokenizer from its data.tokenizer",
    )
    b.add_argument(
        "--workers",
        type=argtypes.int_range(1, 1024),
        default=None,
        help="worker processes (default: all cores)",
    )
    b.add_argument("--val-fraction", type=argtypes.fraction, default=0.1)
    b.add_argument("--test-fraction", type=argtypes.fraction, default=0.1)
    b.add_argument(
        "--include-drums", action="store_true", help="music: keep drum tracks (left out by default)"
    )
    b.set_defaults(run=run)


def run(args) -> int:
    from musicgpt.data.build import build_dataset

    tokenizer = args.tokenizer
    if args.config:
        tokenizer = _tokenizer_from_config(args.config) or tokenizer
    if args.include_drums:
        if tokenizer != "performance":
            from musicgpt.errors import ConfigError

            raise ConfigError("--include-drums applies to the performance tokenizer only")
        tokenizer = {"name": "performance", "include_drums": True}
    report = build_dataset(
        args.src,
        args.out,
        tokenizer,
        workers=args.workers,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
    )
    print(report.summary())
    return 0


def _tokenizer_from_config(spec: str):
    """A training config may name its tokenizer (`data: {tokenizer: bytes}`), text configs do."""
    from musicgpt.errors import ConfigError
    from musicgpt.io import read_yaml_mapping
    from musicgpt.resources import config_path

    path = config_path(spec)
    data = read_yaml_mapping(path).get("data") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: its data section must be a mapping, not {data!r}")
    return data.get("tokenizer")
