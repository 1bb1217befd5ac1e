#!/usr/bin/env bash
# Runs the same benchmark parts against the service code of several commits, back to back, in this
# checkout: for each commit, `service/` and `migrations/` of that commit under this harness (the
# current `generated/` is a superset of older messages), then bench/bench.sh with BENCH_ARGS.
# The working tree's service/ and migrations/ are restored at the end. Used for issue 9's
# "no regression" check (bench/NOTES.md):
#
#   bench/compare_checkouts.sh 23c919c ec5ee24 HEAD
#
#   BENCH_ARGS   default: --only rpcs --only pipeline --runs 1 --seconds 4 --jobs 2000 --half-seconds 5
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
if [[ -n "$(git status --porcelain service migrations)" ]]; then
  echo "service/ or migrations/ has uncommitted changes; commit or stash them first" >&2
  exit 2
fi
restore() { rm -rf service migrations; git checkout -q HEAD -- service migrations; }
trap restore EXIT
ARGS="${BENCH_ARGS:---only rpcs --only pipeline --runs 1 --seconds 4 --jobs 2000 --half-seconds 5}"
for commit in "$@"; do
  rm -rf service migrations
  git checkout -q "$commit" -- service migrations && git reset -q service migrations
  echo "=== $commit ($(git rev-parse --short "$commit")), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  # shellcheck disable=SC2086 # ARGS is a list of options
  bench/bench.sh $ARGS 2>&1 | grep -E "^run |^pipeline|^peers:|^latency:|^relay:"
  echo "=== end of $commit, load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
