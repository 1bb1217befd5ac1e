"""`make lint`'s breaking-change check can fail (issue #11): scripts/buf_breaking.sh, run in a
throw-away git repository holding this repository's contracts, refuses a renumbered field on the
next commit (main compares with its previous commit) and on a branch (compares with the merge
base), and accepts an added field."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from tests.cli.util import ROOT

SCRIPT = ROOT / "scripts" / "buf_breaking.sh"


@pytest.fixture(scope="module")
def buf() -> str:
    result = subprocess.run(
        [str(ROOT / "scripts" / "tools.sh"), "buf"], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"scripts/tools.sh buf failed:\n{result.stderr[-3000:]}"
    return result.stdout.strip()


def _git(repo: pathlib.Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env, timeout=60)


def _check(repo: pathlib.Path, buf: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)],
        cwd=repo,
        env={**os.environ, "BUF": buf},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _edit(repo: pathlib.Path, change: str) -> None:
    proto = repo / "protos" / "paylink" / "v1" / "job.proto"
    text = proto.read_text()
    if change == "renumber":
        text, n = re.subn(r"(string link_session_id = )15;", r"\g<1>99;", text)
    else:
        text, n = re.subn(
            r"(message GetJobRequest \{\n)", "\\1  // A new optional field.\n  string hint = 90;\n", text
        )
    assert n == 1, change
    proto.write_text(text)


def test_breaking_change_fails_and_an_addition_passes(tmp_path: pathlib.Path, buf: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    shutil.copytree(ROOT / "protos", repo / "protos")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "contracts")

    # On main: a commit that renumbers a field fails against the previous commit.
    _edit(repo, "renumber")
    _git(repo, "commit", "-q", "-am", "renumber")
    broken = _check(repo, buf)
    assert broken.returncode != 0, broken.stdout + broken.stderr
    assert "link_session_id" in broken.stdout + broken.stderr
    _git(repo, "reset", "-q", "--hard", "HEAD~1")

    # On a branch: compared with the merge base, even two commits later.
    _git(repo, "checkout", "-q", "-b", "feature")
    _edit(repo, "add")
    _git(repo, "commit", "-q", "-am", "add a field")
    added = _check(repo, buf)
    assert added.returncode == 0, added.stdout + added.stderr
    _edit(repo, "renumber")
    _git(repo, "commit", "-q", "-am", "renumber")
    broken = _check(repo, buf)
    assert broken.returncode != 0 and "link_session_id" in broken.stdout + broken.stderr
