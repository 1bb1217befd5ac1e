#!/usr/bin/env bash
# `make bench`: the benchmark suite on a PostgreSQL cluster that is durable like production
# (fsync, synchronous_commit and full_page_writes on), its own cluster beside the local stack's
# throw-away one, with the local stack's Kafka. The cluster is stopped again afterwards unless
# PAYLINK_BENCH_KEEP=1.
#
#   PAYLINK_BENCH_PG_PORT   the durable cluster's port (default 25442)
#   BENCH_ARGS              passed to bench/run.py (see bench/run.py --help)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
eval "$(scripts/stack.sh env)"   # the local stack: Kafka, and the throw-away cluster for comparisons
THROWAWAY_URL="$PAYLINK_DATABASE_URL"
# `--statements` needs pg_stat_statements preloaded in the durable cluster (a cluster kept running
# by PAYLINK_BENCH_KEEP=1 from a run without it must be stopped first: `durable down`).
STATEMENTS=0
for arg in ${BENCH_ARGS:-} "$@"; do [[ "$arg" == --statements ]] && STATEMENTS=1; done
durable() {
  env -u PAYLINK_DATABASE_URL PAYLINK_STACK_DIR="$ROOT/.stack/bench" \
    PAYLINK_PG_PORT="${PAYLINK_BENCH_PG_PORT:-25442}" PAYLINK_PG_DURABLE=1 PAYLINK_STACK_SERVICES=postgres \
    PAYLINK_PG_STATEMENTS="$STATEMENTS" scripts/stack.sh "$@"
}
durable up
if [[ "${PAYLINK_BENCH_KEEP:-0}" != 1 ]]; then trap 'durable down' EXIT; fi
DURABLE_URL="$(durable env | sed -n 's/^export PAYLINK_DATABASE_URL=//p')"
# shellcheck disable=SC2086 # BENCH_ARGS is a list of options
PAYLINK_DATABASE_URL="$DURABLE_URL" .venv/bin/python bench/run.py --throwaway-url "$THROWAWAY_URL" ${BENCH_ARGS:-} "$@"
