"""`musicgpt serve`: a local web app to continue a piece, listen, and look at attention."""

from __future__ import annotations

from musicgpt import argtypes
from musicgpt.models import DEFAULT_MODEL


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a local web app: continue a bundled piece or an upload, play the samples, see attention",
        description=(
            "Serves one page on HOST:PORT (127.0.0.1 and a free port by default). Pick a bundled piece or "
            "upload a MIDI file (5 MB at most), set the prompt and continuation seconds, temperature, "
            "top-p and the number of samples; each sample is drawn, plays in the page, downloads as "
            "MIDI and opens in the attention view. Generations run one at a time."
        ),
    )
    p.add_argument(
        "--checkpoint",
        type=argtypes.checkpoint,
        default=DEFAULT_MODEL,  # the piano model shipped in the package
        help="a trained piano model: model dir, run dir or .ckpt (`musicgpt demo` writes runs/piano/model)",
    )
    p.add_argument(
        "--host",
        type=listen_address,
        default="127.0.0.1",
        help="the address to listen on (default: this machine only; 0.0.0.0 for every interface)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a further name the page may be opened by (e.g. this machine's address on the LAN); "
        "requests for any other name are refused, against DNS rebinding",
    )
    p.add_argument(
        "--port",
        type=argtypes.int_range(0, 65535),
        default=0,
        help="the port (default 0: a free one, printed)",
    )
    p.add_argument(
        "--pieces",
        type=argtypes.input_path,
        default=None,
        help="folder of MIDI files offered as prompts (default: the bundled piano corpus)",
    )
    p.add_argument(
        "--finetune-dir",
        type=argtypes.output_dir,
        default="runs",
        help="where the page's fine-tunes write their runs (default: runs/, made when one starts)",
    )
    p.add_argument("--device", type=argtypes.device, default="cpu", help="cpu, cuda, ...")
    p.set_defaults(run=run)


def listen_address(text: str) -> str:
    """An address to listen on; the empty string (which would mean every interface) is refused."""
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError(
            "an empty address would listen on every interface: give 0.0.0.0 to mean that, "
            "or 127.0.0.1 (the default) for this machine only"
        )
    return text.strip()


def run(args) -> int:
    import socket
    from pathlib import Path

    from musicgpt.errors import MusicGPTError
    from musicgpt.resources import piano_corpus

    pieces = Path(args.pieces) if args.pieces else piano_corpus()
    if not pieces.is_dir():
        raise MusicGPTError(f"--pieces {pieces}: a file, not a folder of MIDI files")

    import uvicorn

    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.serve.app import create_app

    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    c = model.config
    about = f"{Path(args.checkpoint).name}: {n_params:.1f}M parameters, {c.n_layer} layers, {c.block_size} tokens of context"
    app = create_app(
        model,
        tokenizer,
        pieces_dir=pieces,
        about=about,
        host=args.host,
        allow_hosts=args.allow_host,
        checkpoint=args.checkpoint,
        finetune_dir=args.finetune_dir,
    )

    # Bind here rather than in uvicorn: port 0 becomes a real port that we can print, and a port
    # in use is a one-line error.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        sock.close()
        raise MusicGPTError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"musicgpt serve: http://{shown}:{port}/  ({about}; Ctrl+C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly on Ctrl+C, then raises it again
        pass
    print("musicgpt serve: stopped", flush=True)
    return 0
