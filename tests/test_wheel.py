"""A wheel carries what the package needs: built, installed outside the checkout, run elsewhere.

The configs, GPT-2's vocabulary and the piano corpus are package data read with
importlib.resources; this test holds a non-editable install to that, from a folder that has
nothing of the repository in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, TEXT_DIR

# what a checkout holds that a build must not see (and that can be large)
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "runs", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", "lightning_logs"
)


@dataclass
class Installed:
    wheel: Path
    site: Path  # the folder the wheel was installed into
    env: dict[str, str]  # an environment whose python imports musicgpt from `site`

    def musicgpt(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        """The wheel's own `musicgpt` script."""
        return subprocess.run(
            [sys.executable, str(self.site / "bin" / "musicgpt"), *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """The wheel installed into its own folder; the environment that runs its `musicgpt` from there."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building in place would leave build/ and egg-info in the checkout
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    # offline: the build uses this environment's setuptools, and the dependencies are this environment's
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp / "dist").glob("musicgpt-*.whl")
    site = tmp / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)  # before this environment's site-packages (and any editable install)
    return Installed(wheel, site, env)


def test_the_wheel_holds_the_configs_the_vocabulary_and_the_corpus(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    expected = {
        "musicgpt/configs/piano_cpu.yaml",
        "musicgpt/configs/piano_gpu.yaml",
        "musicgpt/configs/text_bytes.yaml",
        "musicgpt/assets/gpt2/encoder.json",
        "musicgpt/assets/gpt2/vocab.bpe",
        "musicgpt/assets/piano/Maestro_1.mid",
        "musicgpt/assets/piano/empty.mid",
        "musicgpt/viz/assets/page.html",
    }
    assert expected <= names
    assert len([n for n in names if n.startswith("musicgpt/assets/piano/")]) == 25


@pytest.mark.slow
def test_demo_and_a_bpe_build_run_from_the_wheel_in_an_unrelated_folder(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import musicgpt; print(musicgpt.__file__)"],
        cwd=elsewhere,
        env=installed.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(installed.site / "musicgpt" / "__init__.py")

    demo = installed.musicgpt("demo", "--max-steps", "2", cwd=elsewhere)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "trained to step 2" in demo.stdout
    assert (elsewhere / "runs" / "piano" / "continuation.mid").stat().st_size > 0

    (elsewhere / "book.txt").write_bytes((TEXT_DIR / "sherlock.txt").read_bytes()[:20_000])
    build = installed.musicgpt(
        "data", "build", "book.txt", "--tokenizer", "gpt2-bpe", "--out", "d", cwd=elsewhere
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "built d from 1 files" in build.stdout
    manifest = json.loads((elsewhere / "d" / "manifest.json").read_text())
    assert manifest["tokenizer"] == {"name": "gpt2-bpe"} and manifest["vocab_size"] == 50257
