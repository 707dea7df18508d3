"""Fit the prompt cache's gate on held-out pieces, and measure what it and the naive cache gain.

    python benchmarks/prompt_cache.py [--checkpoint piano-small] [--data runs/base/data]
        [--fit-split validation] [--split test] [--context 1024] [--extra-midi DIR]

1. The model's log p of every token of every piece (windows of --context tokens, as a
   continuation reads them).
2. On the --fit-split pieces: for each (min_match, length_weight) of a small grid, the gate's
   three coefficients by L-BFGS on the mixture's mean NLL; the best grid point wins. Print them:
   they are CacheGate's defaults in musicgpt/generation/prompt_cache.py.
3. On the --split pieces (and every MIDI file of --extra-midi): per piece, the loss of the model
   alone, with the fitted cache, with the naive cache (what followed the same last 3-8 tokens,
   weight 0.5), and with the naive cache on top of the fitted one. The "copy gap" is what the
   naive cache still gains: model - (model + naive) without the fitted cache, and
   (model + cache) - (model + cache + naive) with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

from musicgpt.checkpoints import load_checkpoint
from musicgpt.evaluate.continuations import load_pieces
from musicgpt.evaluate.copy_gap import TABLE_HEADER, copy_gap, total
from musicgpt.evaluate.nll import token_log_probs
from musicgpt.generation.piano import default_context
from musicgpt.generation.prompt_cache import (
    MAX_LAMBDA,
    CacheGate,
    cache_features,
)

GRID = {"min_match": [3, 4, 6], "length_weight": [0.0, 0.15, 0.3, 0.6]}


def pieces_of(data_dir: Path, split: str, tokenizer) -> list[tuple[str, np.ndarray]]:
    return [(p.name, p.ids) for p in load_pieces(data_dir, split, tokenizer)]


def fit_gate(lps: list[np.ndarray], feats: list[dict], base: CacheGate) -> tuple[CacheGate, float]:
    """The logistic gate's coefficients minimizing the mixture's mean NLL over all pieces."""
    lp = torch.as_tensor(np.concatenate([x[1:] for x in lps]))
    f = {k: torch.as_tensor(np.concatenate([x[k][1:] for x in feats]), dtype=torch.float64) for k in feats[0]}
    found = f["longest"] >= base.min_match
    loglen = torch.log(f["longest"].clamp(min=1))
    theta = torch.tensor(
        [base.bias, base.length_coef, base.agreement_coef], dtype=torch.float64, requires_grad=True
    )
    opt = torch.optim.LBFGS([theta], max_iter=200, line_search_fn="strong_wolfe")

    def nll():
        opt.zero_grad()
        lam = torch.sigmoid(theta[0] + theta[1] * loglen + theta[2] * f["agreement"]) * found
        lam = lam.clamp(max=MAX_LAMBDA)
        loss = -torch.log((1 - lam) * lp.exp() + lam * f["q_target"]).clamp(min=-700).mean()
        loss.backward()
        return loss

    opt.step(nll)
    b, lc, ac = (round(float(v), 2) for v in theta.detach())
    gate = dataclasses.replace(base, bias=b, length_coef=lc, agreement_coef=ac)
    return gate, float(nll().detach())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="piano-small")
    parser.add_argument("--data", type=Path, default=Path("runs/base/data"))
    parser.add_argument("--fit-split", default="validation")
    parser.add_argument("--split", default="test")
    parser.add_argument("--context", type=int, default=None)
    parser.add_argument("--extra-midi", type=Path, default=None, help="also report every MIDI file here")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--exact", action="store_true", help="match exact ids, not the grammar's keys")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_checkpoint(args.checkpoint)
    model = model.float()
    context = args.context or default_context(model)
    V = model.config.vocab_size
    # what the sampler compares to find repeats: the grammar's keys (music), else the ids
    key = None if args.exact else getattr(tokenizer.grammar(1), "match_key_of_id", None)

    fit = pieces_of(args.data, args.fit_split, tokenizer)
    fit_lp = [token_log_probs(model, ids, context) for _, ids in fit]
    best = None
    for min_match, length_weight in itertools.product(GRID["min_match"], GRID["length_weight"]):
        base = dataclasses.replace(CacheGate(), min_match=min_match, length_weight=length_weight)
        feats = [cache_features(ids, V, base, key) for _, ids in fit]
        gate, loss = fit_gate(fit_lp, feats, base)
        print(
            f"fit on {args.fit_split}: min_match {min_match} length_weight {length_weight}: "
            f"{loss:.4f} nats/token  ({gate.bias}, {gate.length_coef}, {gate.agreement_coef})",
            flush=True,
        )
        if best is None or loss < best[1]:
            best = (gate, loss)
    gate = best[0]
    model_fit = -np.mean(np.concatenate([x[1:] for x in fit_lp]))
    print(f"\nbest gate: {gate}\n({args.fit_split}: model {model_fit:.4f} -> {best[1]:.4f} nats/token)\n")

    report = pieces_of(args.data, args.split, tokenizer)
    if args.extra_midi:
        for path in sorted(args.extra_midi.glob("*.mid")):
            ids = np.asarray(tokenizer.encode(path), dtype=np.int64)
            if ids.size > 16:
                report.append((f"{path.name} (extra)", ids))
    print(TABLE_HEADER)
    rows = [copy_gap(model, ids, context, name, gate, key_of_id=key) for name, ids in report]
    for row in rows:
        print(row.row())
    print(total(rows).row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
