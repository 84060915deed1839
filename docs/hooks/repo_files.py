"""MkDocs hook: the site carries the measured results that live outside docs/, so links to them are checked.

Measured numbers live in `benchmarks/results/` beside the commands that made them, and the pages
link to them by their place in the repository (`../benchmarks/results/models.md`), a link that
also works when the Markdown is read on a forge. MkDocs only knows files under docs/ and would
call such a link broken, so this hook adds every file of the folders in SHARED to the site under
`repo/` and points the pages' links there before MkDocs checks them. A link that climbs out of
docs/ to anything else is left alone, and `mkdocs build --strict` reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = ("benchmarks/results",)
"""Repository folders (relative to its root) whose files the site carries."""
SITE_PREFIX = "repo"
"""Where those files appear in the site: repo/benchmarks/results/..."""
LINK = re.compile(r"(\]\()([^)\s#]+)((?:#[^)\s]*)?\))")
"""An inline Markdown link's target (up to an anchor): [text](TARGET#anchor)."""


def _shared_files() -> list[str]:
    paths = []
    for folder in SHARED:
        paths += [p.relative_to(REPO_ROOT).as_posix() for p in sorted((REPO_ROOT / folder).rglob("*")) if p.is_file()]
    return paths


def on_files(files, config):
    for path in _shared_files():
        # not in the nav, on purpose: the pages link to them where they quote them
        files.append(File.generated(config, f"{SITE_PREFIX}/{path}", abs_src_path=str(REPO_ROOT / path),
                                    inclusion=InclusionLevel.NOT_IN_NAV))
    return files


def on_page_markdown(markdown, page, config, files):
    page_dir = posixpath.dirname(page.file.src_uri)
    if page.file.src_uri.startswith(SITE_PREFIX + "/"):
        return markdown  # the results' own pages hold no links out of the repository
    shared = set(_shared_files())

    def retarget(match: re.Match) -> str:
        target = match.group(2)
        if "://" in target or target.startswith(("/", "mailto:")):
            return match.group(0)
        resolved = posixpath.normpath(posixpath.join(page_dir, target))
        if not resolved.startswith("../"):
            return match.group(0)  # a page of the site: MkDocs resolves it
        repo_path = resolved[len("../"):]
        if repo_path not in shared:
            return match.group(0)
        site_target = posixpath.relpath(f"{SITE_PREFIX}/{repo_path}", page_dir or ".")
        return f"{match.group(1)}{site_target}{match.group(3)}"

    return LINK.sub(retarget, markdown)
