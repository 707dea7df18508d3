"""Checkpoints written the way every other file is: to a temporary file beside the target, then
renamed over it (`musicgpt.io.atomic_open`).

Lightning's own writer stages the file through fsspec, whose temporary file lives in $TMPDIR: when
that is another file system the rename fails (EXDEV) and the fallback truncates last.ckpt before
copying, so a run killed in that window (or a full disk) lost its only good checkpoint. Here the
old last.ckpt stays whole until the new one is complete, and a full disk is a one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from musicgpt.io import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO writes local files and takes no storage_options")
        with atomic_open(Path(path), "wb") as f:
            torch.save(checkpoint, f)
