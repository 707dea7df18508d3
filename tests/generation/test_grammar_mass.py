"""The grammar under sampling: each event type keeps the model's probability mass.

The performance grammar forbids the NOTE_OFFs of silent pitches. Plain renormalization handed
their mass to NOTE_ON and TIME_SHIFT (notes piled up); per-group masking keeps it on NOTE_OFF.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PIANO_DIR

from musicgpt.generation.sampling import SamplingConfig, next_token
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer


def sample_with_grammar(mask_mode: str, steps: int = 100, batch: int = 32):
    """Sample `steps` tokens per row under the grammar; per step the model's NOTE_OFF mass among the
    allowed event types, and whether a NOTE_OFF was drawn (only steps where one was allowed)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("music-tiny", vocab_size=V.VOCAB_SIZE)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1)
    tokenizer = PerformanceTokenizer()
    prompt = tokenizer.encode(PIANO_DIR / "fur-elise.mid")[:40]
    rows = np.tile(prompt, (batch, 1))
    grammar = tokenizer.grammar(batch)
    grammar.start(rows)
    groups = torch.as_tensor(grammar.group_of_id)
    generator = torch.Generator().manual_seed(1)
    sampling = SamplingConfig(mask_mode=mask_mode)
    seq = torch.as_tensor(rows)
    mass, drawn = [], []
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(seq[:, -48:])[:, -1]  # a short window keeps the test fast
            allowed = torch.as_tensor(grammar.allowed())
            probs = logits.softmax(-1)
            group_mass = torch.zeros(batch, int(groups.max()) + 1).index_add_(1, groups, probs)
            live = torch.zeros_like(group_mass).index_add_(1, groups, allowed.float()) > 0
            off = V.RANGES["NOTE_OFF"]
            off_group = V.EVENT_RANGES.index(off)
            tok = next_token(logits, sampling, allowed, groups, generator)
            keep = live[:, off_group]  # steps where some NOTE_OFF may come
            mass.append((group_mass[:, off_group] / (group_mass * live).sum(-1))[keep])
            drawn.append(((tok >= V.NOTE_OFF_OFFSET) & (tok < V.NOTE_OFF_OFFSET + 128))[keep])
            grammar.advance(tok.numpy())
            seq = torch.cat([seq, tok[:, None]], 1)
    mass, drawn = torch.cat(mass), torch.cat(drawn).float()
    return mass, drawn


def test_per_group_sampling_draws_note_offs_at_the_models_rate():
    mass, drawn = sample_with_grammar("per_group")
    assert mass.numel() > 1000
    expected, rate = mass.mean().item(), drawn.mean().item()
    assert abs(rate - expected) < 0.03 * expected + 0.01, (rate, expected)


def test_plain_renormalization_starves_note_offs():
    mass, drawn = sample_with_grammar("renormalize")
    # most NOTE_OFF ids are forbidden (silent pitches) and their mass went elsewhere
    assert drawn.mean().item() < 0.8 * mass.mean().item()


def test_an_infilled_middle_folds_the_shifts_past_its_end_into_the_one_that_reaches_it():
    """30 steps before the middle's end, every shift of 30 steps or more means "nothing before the
    end" (training cuts such a shift there): their probability lands on TIME_SHIFT_30; shorter
    shifts and other events keep theirs. Outside a middle nothing moves."""
    from musicgpt.generation.piano import PianoSamplingGrammar
    from musicgpt.tokenizers.infill import fim_prompt

    tokenizer = PerformanceTokenizer()
    prefix = np.array([V.name_to_id(x) for x in ("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_10")])
    suffix = np.array([V.name_to_id(x) for x in ("VELOCITY_20", "NOTE_ON_67")])
    prompt = np.concatenate([fim_prompt(prefix, 100, suffix), [V.name_to_id("TIME_SHIFT_70")]])[None]
    grammar = PianoSamplingGrammar(tokenizer.grammar(1), prompt)
    grammar.start(prompt)
    assert grammar.grammar.steps_to_middle_end().tolist() == [30]
    logits = torch.randn(1, V.VOCAB_SIZE, generator=torch.Generator().manual_seed(0))
    folded = grammar.fold_logits(logits)
    to_end, longest = V.name_to_id("TIME_SHIFT_30"), V.name_to_id("TIME_SHIFT_100")
    # in probabilities: TIME_SHIFT_30 now holds what the shifts of 30-100 steps held together
    total = logits.softmax(-1)[0, to_end : longest + 1].sum()
    assert folded[0, to_end].exp().item() == pytest.approx(
        (logits[0, to_end : longest + 1].exp().sum()).item(), rel=1e-5
    )
    assert total.item() > 2 * logits.softmax(-1)[0, to_end].item()  # not vacuous
    # every other logit as it was (the longer shifts too: the mask forbids them)
    others = torch.ones(V.VOCAB_SIZE, dtype=torch.bool)
    others[to_end] = False
    assert torch.equal(folded[0, others], logits[0, others])
    plain = PianoSamplingGrammar(tokenizer.grammar(1), prefix[None])
    plain.start(prefix[None])
    assert plain.fold_logits(logits) is logits
