"""Continuations measured against the real continuation (`musicgpt evaluate --continuations`).

The protocol, per piece (details and how to read the table: docs/evaluation.md):

    |<-- prompt: P s -->|<-- real continuation: S s -->|<-- the piece's next S s -->|
                        |<-- K generated samples ----->|

The first P s are the prompt; the model samples K continuations of S s in one batched call; each
is compared with the piece's real next S s. Three more rows put those numbers on a scale:

    ceiling        the piece's following S s against the real continuation: two stretches of the
                   same piece. A model that continues in the piece's style scores about this.
    another piece  the next piece's real continuation against this one's: music, but not this piece.
    bigram         K samples of a bigram model of the training split, through the same sampler
                   and grammar: what token statistics alone give.

and a last row, the real continuation's own polyphony and note density, the reference for those
two columns. A piece must last P + 2S seconds (the ceiling needs its S s after the real
continuation), so that every row is measured on the same pieces; shorter ones are named and
skipped.

What a segment is: the notes struck in its S s, and for polyphony every note sounding in it,
also those struck before it (a prompt note the continuation never releases is heard in it).
Both are cut at the segment's end and timed from its start, for real and generated music alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicgpt.errors import MusicGPTError
from musicgpt.evaluate import music
from musicgpt.generation.piano import PianoPriors, continue_piano, cut_at_seconds, default_context
from musicgpt.generation.sampling import SamplingConfig
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.base import MusicTokenizer
from musicgpt.tokenizers.notes import Notes


@dataclass(frozen=True)
class ContinuationSettings:
    """What `evaluate_continuations` does: P, S and K of the protocol, the seed, the sampling."""

    prompt_seconds: float = 10.0
    seconds: float = 20.0
    num_samples: int = 4
    seed: int = 0
    max_pieces: int | None = None  # the first N pieces long enough; None: all
    sampling: SamplingConfig = SamplingConfig()  # the model's; the bigram floor always uses the default
    priors: PianoPriors | None = (
        None  # the model's piano priors (None: `PianoPriors()`); the floor's: the default
    )

    def __post_init__(self):
        if not self.prompt_seconds > 0:
            raise MusicGPTError(f"--prompt-seconds must be positive, got {self.prompt_seconds}")
        if not self.seconds > 0:
            raise MusicGPTError(f"--seconds must be positive, got {self.seconds}")
        if self.num_samples < 1:
            raise MusicGPTError(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.max_pieces is not None and self.max_pieces < 1:
            raise MusicGPTError(f"--max-pieces must be at least 1, got {self.max_pieces}")

    @property
    def needed_seconds(self) -> float:
        """How long a piece must be: the prompt, the real continuation and the ceiling's S s."""
        return self.prompt_seconds + 2 * self.seconds


@dataclass(frozen=True)
class Piece:
    name: str
    ids: np.ndarray  # the whole piece's event ids, no EOS


@dataclass(frozen=True)
class Segment:
    """S seconds of music: the notes struck in it, and every note sounding in it (for polyphony)."""

    struck: Notes
    sounding: Notes
    seconds: float
    held: np.ndarray  # (N,) how long each struck note is held in all, past the segment's end too


# --- pieces --------------------------------------------------------------------------------------


def load_pieces(source: str | Path, split: str, tokenizer: MusicTokenizer) -> list[Piece]:
    """The pieces of one split of a built data directory, or of a folder of MIDI files (or one file).

    A data directory gives the tokens it holds (its manifest names the files); MIDI files are
    tokenized here, and a folder's unreadable files are left out (a single unreadable file is an
    error). `split` applies to data directories only.
    """
    from musicgpt.data.build import MANIFEST, find_files, read_manifest
    from musicgpt.errors import MidiReadError

    source = Path(source)
    if not source.exists():
        raise MusicGPTError(f"{source}: no such file or directory")
    if (source / MANIFEST).exists():
        return _pieces_of_split(source, split, read_manifest(source), tokenizer.eos_id)
    if source.is_file():
        return [Piece(source.name, np.asarray(tokenizer.encode(source), np.int64))]
    pieces = []
    for path in find_files(source, tokenizer.suffixes):
        try:
            ids = np.asarray(tokenizer.encode(path), np.int64)
        except MidiReadError:
            continue  # a broken file in a folder of music: not the user's question here
        pieces.append(Piece(path.relative_to(source).as_posix(), ids))
    if not pieces:
        raise MusicGPTError(
            f"{source}: no readable .mid/.midi files (and no {MANIFEST}: not a built dataset)"
        )
    return pieces


def _pieces_of_split(data_dir: Path, split: str, manifest: dict, eos_id: int) -> list[Piece]:
    from musicgpt.data.dataset import TokenShard
    from musicgpt.tokenizers import is_music, tokenizer_class

    name = manifest["tokenizer"].get("name")
    if not is_music(tokenizer_class(name)):
        raise MusicGPTError(f"{data_dir} holds {name} tokens, not music")
    shard = TokenShard(data_dir, split)
    if shard.n_pieces == 0:
        raise MusicGPTError(f"{data_dir}: the {split} split has no pieces")
    # the builder writes a split's pieces in the order of the manifest's files of that split
    names = [f["path"] for f in manifest["files"] if f["split"] == split]
    if len(names) != shard.n_pieces:
        names = [f"{split} piece {i}" for i in range(shard.n_pieces)]
    pieces = []
    for i, name in enumerate(names):
        ids = shard.piece(i).astype(np.int64)
        pieces.append(Piece(name, ids[:-1] if ids.size and ids[-1] == eos_id else ids))
    return pieces


def piece_seconds(ids: np.ndarray) -> float:
    """How long a piece lasts: the clock after its last TIME_SHIFT."""
    return V.seconds_of(ids)


def too_short(piece: Piece, settings: ContinuationSettings) -> str | None:
    """Why the piece cannot be evaluated (too short), or None when it can."""
    seconds = piece_seconds(piece.ids)
    if seconds < settings.prompt_seconds:
        return f"lasts {seconds:.1f} s, shorter than the {settings.prompt_seconds:g} s prompt"
    if seconds < settings.needed_seconds:
        return (
            f"lasts {seconds:.1f} s; needs {settings.needed_seconds:g} s "
            f"({settings.prompt_seconds:g} s prompt + 2 x {settings.seconds:g} s)"
        )
    return None


def select_pieces(
    pieces: list[Piece], settings: ContinuationSettings
) -> tuple[list[Piece], list[dict[str, str]]]:
    """(the first `max_pieces` pieces long enough, every piece too short with its reason).

    Raises MusicGPTError, in one line, when no piece is long enough.
    """
    usable, skipped = [], []
    for piece in pieces:
        reason = too_short(piece, settings)
        if reason is None:
            usable.append(piece)
        else:
            skipped.append({"name": piece.name, "reason": reason})
    if not usable:
        reasons = "; ".join(f"{s['name']} {s['reason']}" for s in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        raise MusicGPTError(f"no piece is long enough to evaluate: {reasons}{more}")
    return usable[: settings.max_pieces], skipped


# --- segments and their numbers ------------------------------------------------------------------


def segment(notes: Notes, first_token: int, last_token: int, t0: float, seconds: float) -> Segment:
    """The segment of tokens [first_token, last_token) that starts at t0 and lasts `seconds`.

    struck: the notes whose NOTE_ON is among those tokens. sounding: those and the notes struck
    earlier that still sound after t0. Both cut at t0 + seconds, timed from t0.
    """
    t1 = t0 + seconds
    struck = (notes.on_token >= first_token) & (notes.on_token < last_token)
    carried = (notes.on_token < first_token) & (notes.end > t0)

    def cut(keep: np.ndarray) -> Notes:
        part = notes.take(keep)
        start = np.clip(part.start, t0, t1) - t0
        end = np.clip(part.end, t0, t1) - t0
        return dataclasses.replace(part, start=start, end=end)

    held = (notes.end - notes.start)[struck]
    return Segment(struck=cut(struck), sounding=cut(struck | carried), seconds=seconds, held=held)


LONG_NOTE_SECONDS = 5.0  # a note held longer than this counts as stuck in `long_notes`


def describe(seg: Segment) -> dict[str, float]:
    """The numbers of one segment on its own."""
    notes = seg.struck
    return {
        "notes": float(music.note_count(notes)),
        "polyphony": music.polyphony(seg.sounding),
        "long_notes": music.long_note_share(seg.held, LONG_NOTE_SECONDS),
        "longest_silence": music.longest_silence(seg.sounding, seg.seconds),
        "note_density": music.note_density(notes, seg.seconds),
        "pitch_range": float(music.pitch_range(notes)),
        "pitch_class_entropy": music.pitch_class_entropy(notes),
        "scale_consistency": music.scale_consistency(notes),
        "velocity_mean": music.velocity_mean(notes),
        "velocity_std": music.velocity_std(notes),
    }


def compare(candidate: Segment, reference: Segment) -> dict[str, float]:
    """How alike a candidate segment is to the reference: histogram overlaps, pitch-class similarity."""
    a, b = candidate.struck, reference.struck
    return {
        "duration_oa": music.overlapping_area(music.duration_histogram(a), music.duration_histogram(b)),
        "ioi_oa": music.overlapping_area(music.inter_onset_histogram(a), music.inter_onset_histogram(b)),
        "pitch_oa": music.overlapping_area(music.pitch_histogram(a), music.pitch_histogram(b)),
        "velocity_oa": music.overlapping_area(music.velocity_histogram(a), music.velocity_histogram(b)),
        "pitch_class_similarity": music.pitch_class_similarity(a, b),
    }


def measure(candidate: Segment, reference: Segment) -> dict[str, float]:
    """compare() against the reference, then describe() the candidate."""
    return {**compare(candidate, reference), **describe(candidate)}


# --- the protocol --------------------------------------------------------------------------------

ROWS = ("generated", "ceiling", "another piece", "bigram", "real")


@dataclass(frozen=True)
class _Cuts:
    """Token boundaries and times of a piece's prompt, real continuation and the S s after it."""

    prompt_end: int
    real_end: int
    ceiling_end: int
    real_t0: float
    ceiling_t0: float


def _cut(ids: np.ndarray, settings: ContinuationSettings) -> _Cuts:
    prompt_end = len(cut_at_seconds(ids, settings.prompt_seconds))
    real_end = prompt_end + len(cut_at_seconds(ids[prompt_end:], settings.seconds))
    ceiling_end = real_end + len(cut_at_seconds(ids[real_end:], settings.seconds))
    return _Cuts(
        prompt_end, real_end, ceiling_end, piece_seconds(ids[:prompt_end]), piece_seconds(ids[:real_end])
    )


def seed_for(seed: int, piece_index: int, role: str) -> int:
    """An independent seed per (run seed, piece, model or bigram): reruns repeat, streams do not collide."""
    words = [seed, piece_index, {"model": 0, "bigram": 1}[role]]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint32)[0])


@dataclass
class PieceResult:
    name: str
    rows: dict[str, list[dict[str, float]]]  # row -> one dict of numbers per sample (or one)


@dataclass
class ContinuationReport:
    settings: ContinuationSettings
    pieces: list[PieceResult]
    skipped: list[dict[str, str]] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)  # why a row is missing, and such

    def row_means(self) -> dict[str, dict[str, float]]:
        """Per row, each number averaged over a piece's samples, then over pieces (NaNs left out)."""
        means = {}
        for row in ROWS:
            per_piece = [_mean_dicts(p.rows[row]) for p in self.pieces if p.rows.get(row)]
            if per_piece:
                means[row] = _mean_dicts(per_piece)
        return means

    def table(self) -> list[str]:
        k, seconds = self.settings.num_samples, self.settings.seconds
        labels = {
            "generated": f"generated ({k} sample{'s' if k > 1 else ''})",
            "ceiling": f"ceiling: the piece's next {seconds:g} s",
            "another piece": "floor: another piece",
            "bigram": "floor: bigram sampler",
            "real": "real continuation",
        }
        header = f"{'':<30}" + "".join(f"{title:>{width}}" for _, title, width, _ in TABLE_COLUMNS)
        lines = [header]
        for row, values in self.row_means().items():
            cells = "".join(
                f"{_format(values.get(key), fmt):>{width}}" for key, _, width, fmt in TABLE_COLUMNS
            )
            lines.append(f"{labels[row]:<30}{cells}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return _finite(
            {
                "settings": dataclasses.asdict(self.settings),
                "rows": self.row_means(),
                "pieces": [{"name": p.name, "rows": p.rows} for p in self.pieces],
                "skipped": self.skipped,
                "remarks": self.remarks,
            }
        )


# (number, column title, width, format) of the printed table; the JSON report holds every number
TABLE_COLUMNS = (
    ("duration_oa", "duration OA", 13, ".2f"),
    ("ioi_oa", "onset OA", 10, ".2f"),
    ("pitch_oa", "pitch OA", 10, ".2f"),
    ("pitch_class_similarity", "PC sim", 8, ".2f"),
    ("polyphony", "polyphony", 11, ".1f"),
    ("note_density", "notes/s", 9, ".1f"),
    ("long_notes", "notes >5 s", 12, ".1%"),
    ("longest_silence", "silence s", 11, ".1f"),
)


def _format(value: float | None, fmt: str) -> str:
    return "—" if value is None or math.isnan(value) else format(value, fmt)


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = dicts[0].keys()
    out = {}
    for key in keys:
        values = np.array([d[key] for d in dicts], np.float64)
        out[key] = float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() else float("nan")
    return out


def _finite(obj: Any) -> Any:
    """NaN -> None, so that the report is strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def evaluate_continuations(
    model,
    tokenizer: MusicTokenizer,
    pieces: list[Piece],
    settings: ContinuationSettings,
    bigram=None,
    on_progress: Callable[[float], None] | None = None,
) -> ContinuationReport:
    """Run the protocol on pieces that are long enough (see `select_pieces`).

    `bigram`: a model for the bigram floor (`BigramLM`), or None to leave that row out.
    `on_progress(seconds)`: seconds of music the model has generated so far, over all pieces.
    """
    seconds = settings.seconds
    real_notes = [tokenizer.decode_notes(p.ids) for p in pieces]
    cuts = [_cut(p.ids, settings) for p in pieces]
    real = [
        segment(notes, c.prompt_end, c.real_end, c.real_t0, seconds)
        for notes, c in zip(real_notes, cuts, strict=True)
    ]
    results = []
    for i, (piece, notes, c) in enumerate(zip(pieces, real_notes, cuts, strict=True)):
        prompt = piece.ids[: c.prompt_end]

        def progress(reached: float, done: float = i * seconds) -> None:
            if on_progress is not None:
                on_progress(done + reached)

        rows = {
            "generated": _sample_rows(
                model,
                tokenizer,
                prompt,
                real[i],
                c,
                settings,
                sampling=settings.sampling,
                priors=settings.priors,
                seed=seed_for(settings.seed, i, "model"),
                progress=progress,
            ),  # fmt: skip
            "ceiling": [measure(segment(notes, c.real_end, c.ceiling_end, c.ceiling_t0, seconds), real[i])],
            "real": [describe(real[i])],
        }
        if len(pieces) > 1:
            rows["another piece"] = [measure(real[(i + 1) % len(pieces)], real[i])]
        if bigram is not None:
            # the floor is sampled with the default settings, so it stays put while the model's
            # vary; under the grammar the model's context gives (it ends notes that left the view)
            rows["bigram"] = _sample_rows(
                bigram, tokenizer, prompt, real[i], c, settings,
                sampling=SamplingConfig(), seed=seed_for(settings.seed, i, "bigram"), context=default_context(model),
            )  # fmt: skip
        results.append(PieceResult(piece.name, rows))
    remarks = [] if len(pieces) > 1 else ["one piece only: no 'another piece' floor"]
    return ContinuationReport(settings, results, remarks=remarks)


def _sample_rows(
    model,
    tokenizer: MusicTokenizer,
    prompt: np.ndarray,
    real: Segment,
    cuts: _Cuts,
    settings: ContinuationSettings,
    *,
    sampling: SamplingConfig,
    seed: int,
    priors: PianoPriors | None = None,
    context: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[dict[str, float]]:
    """K continuations in one batched call, each measured against the real continuation."""
    result = continue_piano(
        model,
        tokenizer,
        prompt,
        settings.seconds,
        num_samples=settings.num_samples,
        sampling=sampling,
        seed=seed,
        max_context=context,
        on_progress=progress,
        priors=priors,
    )
    rows = []
    for sequence in result.sequences():
        notes = tokenizer.decode_notes(sequence)
        generated = segment(notes, cuts.prompt_end, len(sequence), cuts.real_t0, settings.seconds)
        rows.append(measure(generated, real))
    return rows
