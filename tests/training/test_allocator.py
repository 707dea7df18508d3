"""keep_freed_memory: glibc's malloc keeps freed blocks, so training steps reuse their memory."""

from __future__ import annotations

import sys

import pytest

from musicgpt.training.allocator import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_keep_freed_memory_takes_effect_on_linux():
    # mallopt returns 1 for each setting glibc accepts; a value past glibc's ceiling would give 0
    assert keep_freed_memory() is True


def test_keep_freed_memory_is_a_no_op_elsewhere(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
