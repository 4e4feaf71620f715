"""The commit a report's run measured, and whether the work tree differed from it."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The reports are rewritten by the runs themselves: a fresh report does not make the code differ.
REPORTS = ("docs/reliability.md", "bench/RESULTS.md")
UNKNOWN = "an unknown commit (not a git work tree)"


def revision(root: Path = ROOT) -> str:
    """`abc1234`, or `abc1234 with uncommitted changes` when tracked files differ from it."""
    try:
        commit = _git(root, "rev-parse", "--short", "HEAD")
        changes = _git(
            root, "status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in REPORTS)
        )
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN
    return f"{commit} with uncommitted changes" if changes else commit


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout.strip()
