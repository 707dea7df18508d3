"""The web pages and their scripts and styles: package files, served by Starlette's StaticFiles.

Nothing is fetched from anywhere else. The app's assets are musicgpt/serve/assets; player.js (the
WebAudio synth) is the attention page's, in musicgpt/viz/assets, and served from there.
"""

from __future__ import annotations

from importlib import resources

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

PACKAGES = [("musicgpt.serve", "assets"), ("musicgpt.viz", "assets")]


class PackageFiles(StaticFiles):
    """StaticFiles over the package's asset folders; a missing one is a 404 that names it."""

    def __init__(self) -> None:
        super().__init__(packages=PACKAGES)

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as e:
            if e.status_code != 404:
                raise
            raise HTTPException(404, f"no asset {path!r}") from None


def page(name: str) -> str:
    """An HTML page of musicgpt/serve/assets."""
    return resources.files("musicgpt.serve").joinpath("assets", name).read_text(encoding="utf-8")
