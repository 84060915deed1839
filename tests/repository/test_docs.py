"""The documentation: the site builds strictly (no broken link, no page outside the nav), the README stays short.

Building needs MkDocs with the Material theme (the `dev` extra). Without it the build test skips
saying why; under `CI=true` (`.ci/run`) it fails instead, so a green CI run means the site was built.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

README_MAX_LINES = 300


def _mkdocs_missing() -> str | None:
    """Why the site cannot be built here, or None."""
    for module, package in (("mkdocs", "mkdocs"), ("material", "mkdocs-material")):
        if importlib.util.find_spec(module) is None:
            return f"no {package}: pip install -e '.[dev]'"
    return None


def _mkdocs_or_skip() -> None:
    reason = _mkdocs_missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs the documentation site to be built: {reason}")
        pytest.skip(reason)


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    _mkdocs_or_skip()
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's notice about MkDocs 2 is not a warning of ours
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "options" / "index.html").is_file()


def test_without_mkdocs_the_build_test_skips_saying_why_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no mkdocs"):
        _mkdocs_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true needs the documentation site"):
        _mkdocs_or_skip()


def _anchors(page: Path) -> set[str]:
    """The heading anchors of a Markdown page, slugged as the site's table of contents slugs them."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    headings = re.findall(r"^#+\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", h.lower()).strip()) for h in headings}


def test_the_readme_is_short_and_its_links_resolve():
    text = (REPO_ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md holds the essentials; the rest goes in docs/"
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert links, "the README maps the documentation"
    for link in links:
        target, _, anchor = link.partition("#")
        path = REPO_ROOT / target
        assert path.exists(), f"README.md links to a missing file: {link}"
        assert not anchor or anchor in _anchors(path), f"README.md links to a missing heading: {link}"
