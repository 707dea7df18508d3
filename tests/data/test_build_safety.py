"""Nothing lost when a build fails, is killed or interrupted; a damaged data dir says so.

Rows 6, 7, 8 and 12 of the hardening issue: shard sets switch atomically with the manifest,
readers check files against it, pool workers end with their build, truncated cache files are
made again, and a build where no file can be read is an error.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CORRUPTED_DIR, PIANO_DIR, ROOT

from musicgpt.cli import main
from musicgpt.data.build import build_dataset, read_manifest
from musicgpt.data.dataset import TokenShard
from musicgpt.errors import MusicGPTError

FILES = ["fur-elise.mid", "solace.mid", "bethena.mid", "maple-leaf-rag.mid"]
SPLITS = ("train", "validation", "test")


def quiet_build(src, out, **kwargs):
    return build_dataset(src, out, "performance", workers=1, progress=False, log=lambda _: None, **kwargs)


@pytest.fixture
def corpus(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in FILES:
        shutil.copy(PIANO_DIR / name, src / name)
    return src


def shard_tokens(data_dir: Path) -> dict[str, np.ndarray]:
    return {split: np.array(TokenShard(data_dir, split).tokens) for split in SPLITS}


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """A python process running `code` with this checkout's musicgpt."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _children(pid: int) -> set[int]:
    """Pids of the live processes whose parent is `pid` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------------------------- row 6

KILL_DURING_SHARD_WRITE = """
    import os, signal, sys
    import musicgpt.data.build as build

    real = build._write_shard
    def write_then_die(out, split, *args):
        entry = real(out, split, *args)
        if split == "validation":  # train's and validation's new files are on disk, test's not
            os.kill(os.getpid(), signal.SIGKILL)
        return entry
    build._write_shard = write_then_die
    build.build_dataset(sys.argv[1], sys.argv[2], "performance", workers=1, progress=False)
"""


def test_a_build_killed_while_writing_shards_leaves_the_old_set_whole(corpus, tmp_path):
    out = tmp_path / "out"
    quiet_build(corpus, out)
    before_manifest = (out / "manifest.json").read_bytes()
    before = shard_tokens(out)
    other = tmp_path / "other"  # other pieces: every split's content (and so its file names) differs
    other.mkdir()
    for name in ("pineapple-rag.mid", "peacherine-rag.mid", "the-easy-winners.mid", "elite-syncopations.mid"):
        shutil.copy(PIANO_DIR / name, other / name)
    killed = _python(KILL_DURING_SHARD_WRITE, str(other), str(out))
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    new_files = {p.name for p in out.glob("*.bin")} - {
        e["bin"] for e in read_manifest(out)["splits"].values()
    }
    assert len(new_files) == 2  # the killed build's train and validation shards, beside the old set
    assert (out / "manifest.json").read_bytes() == before_manifest
    after = shard_tokens(out)
    assert all(np.array_equal(after[s], before[s]) for s in SPLITS)  # still the old set, whole

    report = quiet_build(other, out)  # the next build finishes the switch and clears the leftovers
    assert report.from_cache == 4  # the killed build's tokenized files were kept
    assert sorted(p.name for p in out.glob("*.bin")) == sorted(
        e["bin"] for e in read_manifest(out)["splits"].values()
    )


def test_a_data_dir_whose_files_disagree_with_its_manifest_says_to_rebuild(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    quiet_build(corpus, out)
    train = read_manifest(out)["splits"]["train"]
    rebuild = f"; build it again with `musicgpt data build SRC --out {out}`"
    bin_path = out / train["bin"]
    data = bin_path.read_bytes()

    bin_path.write_bytes(data[:-2])  # one token short
    with pytest.raises(MusicGPTError) as info:
        TokenShard(out, "train")
    assert str(info.value) == (
        f"{out}: {train['bin']} holds {len(data) - 2:,} bytes, manifest.json says {train['tokens']:,} tokens{rebuild}"
    )
    bin_path.write_bytes(data)
    other_set = np.linspace(0, train["tokens"] - 7, train["pieces"] + 1).astype(np.int64)
    np.save(out / train["index"], other_set)  # the index of another set
    with pytest.raises(MusicGPTError, match=f"does not index the {train['pieces']} pieces of {train['bin']}"):
        TokenShard(out, "train")
    (out / train["index"]).unlink()
    # a user meets it where training or evaluation reads the split
    model_dir = tmp_path / "model"
    from musicgpt.model.gpt import GPT, GPTConfig
    from musicgpt.tokenizers.performance import PerformanceTokenizer

    GPT(GPTConfig.preset("music-tiny")).save_pretrained(model_dir)
    PerformanceTokenizer().save(model_dir / "tokenizer.json")
    assert main(["evaluate", "--checkpoint", str(model_dir), "--data", str(out), "--split", "train"]) == 2
    assert capsys.readouterr().err == f"musicgpt: error: {out}: {train['index']} is missing{rebuild}\n"
    (out / "manifest.json").write_text("{")
    with pytest.raises(MusicGPTError, match=f"^{out}: manifest.json is not valid JSON; build it again"):
        read_manifest(out)


def test_a_data_dir_of_the_first_format_still_reads(corpus, tmp_path):
    """Format 1 (fixed shard names, before content-named sets): read and checked the same way."""
    import json

    out = tmp_path / "out"
    quiet_build(corpus, out)
    expected = shard_tokens(out)
    manifest = read_manifest(out)
    for split, entry in manifest["splits"].items():
        (out / entry.pop("bin")).rename(out / f"{split}.bin")
        (out / entry.pop("index")).rename(out / f"{split}.idx.npy")
    manifest["format"] = 1
    del manifest["vocab_size"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert all(np.array_equal(shard_tokens(out)[s], expected[s]) for s in SPLITS)
    quiet_build(corpus, out)  # a rebuild moves it to content-named files and removes the old ones
    assert not list(out.glob("train.*")) and read_manifest(out)["format"] == 2


# ------------------------------------------------------------------------------------- row 7

SLOW_BUILD = """
    import multiprocessing, signal, sys, time
    import musicgpt.data.build as build

    # Ctrl-C as in a terminal, even where the tests run as a background job (which ignores SIGINT
    # and passes that on to every process it starts)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def slow_tokenize_one(path, cache_file):  # a minute a file
        open(sys.argv[2] + ".started-" + path.rsplit("/", 1)[-1], "w").close()  # the test waits for these
        time.sleep(60)
        return path, None, "slow"

    build._tokenize_one = slow_tokenize_one
    multiprocessing.set_start_method("fork", force=True)  # the workers inherit the slow stand-in
    from musicgpt.cli import main
    sys.exit(main(["data", "build", sys.argv[1], "--out", sys.argv[2], "--workers", "2"]))
"""


def _slow_build_with_workers(corpus: Path, out: Path) -> tuple[subprocess.Popen, set[int]]:
    build = _python(SLOW_BUILD, str(corpus), str(out), start_new_session=True)
    assert _wait_for(lambda: len(_children(build.pid)) >= 2), "the pool's workers never started"
    # both workers are a minute into a file, and the other files wait in the queue
    started = lambda: len(list(out.parent.glob(out.name + ".started-*"))) >= 2  # noqa: E731
    assert _wait_for(started, seconds=30), "the workers never took their files"
    return build, _children(build.pid)


def test_workers_end_when_their_build_is_killed(corpus, tmp_path):
    build, workers = _slow_build_with_workers(corpus, tmp_path / "out")
    os.kill(build.pid, signal.SIGKILL)
    build.communicate(timeout=30)
    # each worker notices its parent is gone within a second, though it is a minute into a file
    assert _wait_for(lambda: not any(_alive(pid) for pid in workers), seconds=10), "orphaned workers"


def test_ctrl_c_cancels_the_queued_files_and_ends_the_workers(corpus, tmp_path):
    build, workers = _slow_build_with_workers(corpus, tmp_path / "out")
    started = time.monotonic()
    os.killpg(build.pid, signal.SIGINT)  # what the terminal sends: the whole process group
    _, err = build.communicate(timeout=30)
    assert time.monotonic() - started < 10  # not after each queued file's minute
    assert build.returncode == 130
    assert err.splitlines()[-1] == "musicgpt: interrupted" and "Traceback" not in err
    assert _wait_for(lambda: not any(_alive(pid) for pid in workers), seconds=10)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_ctrl_c_keeps_the_files_already_tokenized(corpus, tmp_path, monkeypatch):
    import musicgpt.data.build as build

    real, done = build._tokenize_one, []

    def interrupted_after_two(path, cache_file):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(path)
        return real(path, cache_file)

    monkeypatch.setattr(build, "_tokenize_one", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        quiet_build(corpus, tmp_path / "out")
    monkeypatch.setattr(build, "_tokenize_one", real)
    assert quiet_build(corpus, tmp_path / "out").from_cache == 2


# ------------------------------------------------------------------------------------- row 8


def test_a_truncated_cache_file_is_tokenized_again(corpus, tmp_path):
    out = tmp_path / "out"
    quiet_build(corpus, out)
    before = shard_tokens(out)
    cached = sorted((out / "cache").glob("*.npy"))
    cached[0].write_bytes(cached[0].read_bytes()[:100])  # a header and a few ids
    cached[1].write_bytes(b"")
    report = quiet_build(corpus, out)
    assert report.from_cache == len(FILES) - 2 and report.skipped == []
    after = shard_tokens(out)
    assert all(np.array_equal(after[s], before[s]) for s in SPLITS)


# ------------------------------------------------------------------------------------ row 12


def test_a_build_where_every_file_fails_is_an_error_that_writes_nothing(tmp_path, capsys):
    src = tmp_path / "broken"
    src.mkdir()
    for name in ("ValueError_Control168.mid", "Issue104_Bizarre_Love_Triangle2.mid"):
        shutil.copy(CORRUPTED_DIR / name, src / name)
    shutil.copy(PIANO_DIR / "empty.mid", src / "empty.mid")
    assert main(["data", "build", str(src), "--out", str(tmp_path / "d"), "--workers", "1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"musicgpt: error: {src}: none of the 3 file(s) could be tokenized (")
    assert "empty.mid: no notes (or no text): nothing to train on" in err
    assert not (tmp_path / "d" / "manifest.json").exists()
