#!/usr/bin/env bash
# `buf breaking` against the contracts this commit builds on (make lint, CI):
#   on a branch: the merge base with main (what the branch changes);
#   on main (or a branch with nothing of its own): the previous commit, HEAD~1.
# BUF_BREAKING_AGAINST=<commit> compares against that commit instead (e.g. the last release tag).
# Comparing main with main, as `--against .git#branch=main` does on main, could never fail.
# The earlier commit's buf.yaml and protos/ are exported with `git archive`, so any depth of
# history works. tests/cli/test_buf_breaking.py shows it failing on a renumbered field.
# Usage: BUF=/path/to/buf scripts/buf_breaking.sh   (run from the repository's root)
set -euo pipefail
if [ -z "${BUF:-}" ]; then
  BUF="$("$(dirname "${BASH_SOURCE[0]}")/tools.sh" buf)"
fi

against="${BUF_BREAKING_AGAINST:-}"
if [ -z "$against" ]; then
  head="$(git rev-parse HEAD)"
  if git rev-parse -q --verify main >/dev/null; then
    against="$(git merge-base HEAD main || true)"
  fi
  if [ -z "$against" ] || [ "$against" = "$head" ]; then
    against="$(git rev-parse -q --verify 'HEAD~1' || true)"
  fi
fi
if [ -z "$against" ]; then
  echo "buf breaking: no earlier commit to compare with, skipped"
  exit 0
fi
if ! git cat-file -e "$against:buf.yaml" 2>/dev/null; then
  echo "buf breaking: $against has no contracts yet, skipped"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
git archive "$against" buf.yaml protos | tar -x -C "$tmp"
"$BUF" breaking --against "$tmp"
echo "buf breaking: no breaking change against $(git rev-parse --short "$against")"
