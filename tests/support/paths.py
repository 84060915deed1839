"""Where the repository is, found once for every test and support module."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = REPO_ROOT.parent / "shared"
"""The team's shared folder beside a developer's checkout (real MTAT and MTG-Jamendo metadata); a user's clone has
none, and the tests that read it skip."""
