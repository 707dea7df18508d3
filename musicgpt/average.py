"""Average the weights of models of one shape: `python -m musicgpt.average A B --out DIR`.

A "model soup" (Wortsman et al., 2022): models fine-tuned from the same weights often lie in one
basin of the loss, and the average of their weights is a model at least as good as either, for
nothing at training time. The shipped piano-small is such an average: the model of the
piano_pretrained recipe and its continuation on wider transpositions (piano_wide), half and half
(its MODEL_CARD: a lower held-out loss than either, and continuations as close to the real ones
as the first's, where the second's were further in key).

Models must share every shape but the vocabulary's: a vocabulary grows at its end (the FIM tokens
came after EOS and PAD), so the token embedding of a model with more ids is cut to the first
model's ids, and the ids a model lacks are averaged over the models that have them (the first
model, a FIM fine-tune, keeps its FIM rows in a soup with the model it started from). The result keeps the first model's config and tokenizer and is written in fp32
(`python -m musicgpt.ship` decides the shipped dtype).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from musicgpt.errors import MusicGPTError

# (vocab, n_embd): the tensors whose rows may differ (the output head is tied to the embedding)
VOCABULARY_ROWS = ("transformer.wte.weight", "lm_head.weight")


def average_state_dicts(
    states: list[dict[str, torch.Tensor]], weights: list[float], names: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """sum_i weights[i] * states[i], tensor by tensor, in fp32; the token embedding cut to the
    first model's vocabulary (its ids a model lacks: the weighted mean of the models that have them). `names` label the models in errors (default: model 1, 2, ...)."""
    names = names or [f"model {i + 1}" for i in range(len(states))]
    check_weights(weights, len(states))
    first = states[0]
    out = {}
    for key, tensor in first.items():
        total = torch.zeros(tensor.shape, dtype=torch.float32)
        # per row of a vocabulary table: the weight of the models that have that id
        weight_of_row = torch.zeros(tensor.shape[:1] if key in VOCABULARY_ROWS else (), dtype=torch.float32)
        for state, weight, name in zip(states, weights, names, strict=True):
            if key not in state:
                raise MusicGPTError(f"{name} has no tensor {key} ({names[0]} has): not the same model")
            other = state[key]
            rows_only = key in VOCABULARY_ROWS and other.shape[1:] == tensor.shape[1:]
            if rows_only and len(other) >= len(tensor):
                other = other[: len(tensor)]  # a larger vocabulary: its later ids are dropped
            if rows_only and len(other) < len(tensor):
                # a smaller vocabulary: the ids it lacks (added since) come from the models that have them
                total[: len(other)] += weight * other.float()
                weight_of_row[: len(other)] += weight
                continue
            if other.shape != tensor.shape:
                raise MusicGPTError(
                    f"{name}'s {key} is {tuple(other.shape)}, {names[0]}'s {tuple(tensor.shape)}: models of one shape only"
                )
            total += weight * other.float()
            weight_of_row += weight
        if key in VOCABULARY_ROWS:
            total /= weight_of_row[:, None]  # 1 where every model has the id
        out[key] = total
    extra = [key for state in states[1:] for key in state if key not in first]
    if extra:
        raise MusicGPTError(
            f"tensors {names[0]} lacks: {', '.join(sorted(set(extra))[:3])}: not the same model"
        )
    return out


def check_weights(weights: list[float], n_models: int) -> None:
    if n_models < 2 or len(weights) != n_models:
        raise MusicGPTError(f"need two or more models and one weight each, got {n_models} and {len(weights)}")
    if any(not w >= 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise MusicGPTError(f"the weights must be at least 0 and sum to 1, got {','.join(map(str, weights))}")


def average_models(sources: list[str], weights: list[float], out: Path) -> None:
    """Load every model (a model dir, run dir, .ckpt or shipped name), average, write `out` as a
    model directory (config.yaml, model.safetensors, tokenizer.json)."""
    import dataclasses

    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.model.gpt import GPT

    models, tokenizers = zip(*(load_checkpoint(s) for s in sources), strict=True)
    first = dataclasses.asdict(models[0].config)
    for source, model in zip(sources[1:], models[1:], strict=True):
        differs = {
            k: (first[k], v)
            for k, v in dataclasses.asdict(model.config).items()
            if k != "vocab_size" and v != first[k]
        }
        if differs:
            k, (a, b) = next(iter(differs.items()))
            raise MusicGPTError(f"{source}: {k} is {b}, {sources[0]}'s is {a}: models of one shape only")
    state = average_state_dicts([m.state_dict() for m in models], weights, list(sources))
    soup = GPT(models[0].config)
    soup.load_state_dict(state)
    soup.save_pretrained(out)
    if tokenizers[0] is not None:
        tokenizers[0].save(out / "tokenizer.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "models", nargs="+", help="two or more models: model dirs, run dirs, .ckpt files, shipped names"
    )
    ap.add_argument("--weights", help="comma-separated, one per model, summing to 1 (default: equal)")
    ap.add_argument("--out", required=True, help="the averaged model's directory (written, not merged into)")
    args = ap.parse_args(argv)
    try:
        if args.weights is None:
            weights = [1.0 / len(args.models)] * len(args.models)
        else:
            try:
                weights = [float(w) for w in args.weights.split(",")]
            except ValueError:
                raise MusicGPTError(f"--weights: numbers separated by commas, got {args.weights!r}") from None
        check_weights(weights, len(args.models))
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise MusicGPTError(f"{out}: exists and is not an empty directory")
        average_models(args.models, weights, out)
    except MusicGPTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{out}: {' + '.join(f'{w:g} x {m}' for w, m in zip(weights, args.models, strict=True))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
