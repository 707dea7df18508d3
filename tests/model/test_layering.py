"""The import graph of the model code: no circle between gpt.py and hf.py, nothing importing upward."""

from __future__ import annotations

import ast
from pathlib import Path

import musicgpt

PACKAGE = Path(musicgpt.__file__).parent


def runtime_imports(path: Path) -> set[str]:
    """Modules `path` imports when it runs (anywhere in it), leaving out `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_hf_does_not_import_the_model_back():
    assert "musicgpt.model.hf" in runtime_imports(PACKAGE / "model" / "gpt.py")  # (from_pretrained)
    assert "musicgpt.model.gpt" not in runtime_imports(PACKAGE / "model" / "hf.py")


def test_the_model_layer_imports_nothing_above_it():
    for path in (PACKAGE / "model").glob("*.py"):
        above = {m for m in runtime_imports(path) if m.startswith("musicgpt.")} - {
            m
            for m in runtime_imports(path)
            if m.startswith(("musicgpt.model", "musicgpt.errors", "musicgpt.io"))
        }
        assert not above, (path.name, above)


def test_the_shipped_models_package_imports_nothing_of_musicgpt():
    # checkpoints.py reads musicgpt.models; the tool that writes a model there (musicgpt/ship.py)
    # loads checkpoints, so it cannot live inside it
    for path in (PACKAGE / "models").glob("*.py"):
        assert not {m for m in runtime_imports(path) if m.startswith("musicgpt")}, path.name
