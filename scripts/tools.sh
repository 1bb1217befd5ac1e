#!/usr/bin/env bash
# Project-local, version-pinned developer tools, installed into <repo>/.tools/
# (git-ignored) on first use. Each subcommand installs its tool if it is
# missing or at another version, checks that it runs, and prints the absolute
# path of the binary on stdout -- and nothing else, so callers can do:
#
#   BUF="$(scripts/tools.sh buf)"          # @bufbuild/buf from npm
#   GRPCURL="$(scripts/tools.sh grpcurl)"  # github.com/fullstorydev/grpcurl (go install)
#   GHZ="$(scripts/tools.sh ghz)"          # github.com/bojand/ghz (go install)
#   KCAT="$(scripts/tools.sh kcat)"        # Debian's kcat (apt-get, as root), on PATH
#
# All progress/installer output goes to stderr. Needs npm (buf), go (grpcurl, ghz), or root with
# apt-get (kcat) -- and fails, naming what is missing, when it cannot build or install a tool.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TOOLS="$ROOT/.tools"

# Pinned versions. The Go ones are module versions served by the Go module proxy.
BUF_VERSION=1.75.0
GRPCURL_VERSION=v1.9.4
GHZ_VERSION=v0.120.0

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

# Serialise installs (parallel make jobs may ask for the same tool).
take_lock() {
  mkdir -p "$TOOLS"
  exec 9>"$TOOLS/.lock"
  flock -w 600 9 || die "timed out waiting for another scripts/tools.sh ($TOOLS/.lock)"
}

# --- buf (npm package @bufbuild/buf; the npm package ships the prebuilt binary)
tool_buf() {
  local prefix="$TOOLS/node" bin="$TOOLS/node/node_modules/.bin/buf"
  local pkgjson="$prefix/node_modules/@bufbuild/buf/package.json"
  local have=""
  [[ -f "$pkgjson" ]] && have="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$pkgjson" | head -n1)"
  if [[ "$have" != "$BUF_VERSION" || ! -x "$bin" ]]; then
    command -v npm >/dev/null 2>&1 || die "npm not found; it is needed to install @bufbuild/buf@$BUF_VERSION (Debian: apt-get install -y npm)"
    log "installing @bufbuild/buf@$BUF_VERSION into $prefix${have:+ (found $have)}"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-save --no-audit --no-fund --loglevel=error \
      "@bufbuild/buf@$BUF_VERSION" </dev/null >&2 \
      || die "npm install @bufbuild/buf@$BUF_VERSION failed"
  fi
  local out
  out="$("$bin" --version 2>&1)" || die "$bin does not run: $out"
  [[ "$out" == "$BUF_VERSION" ]] || die "$bin reports version '$out', expected $BUF_VERSION"
  printf '%s\n' "$bin"
}

# --- Go tools: `go install module/cmd/x@version` into .tools/bin
# Reinstalls when the binary is missing or was built from another version
# (`go version -m` reads the module version embedded in the binary).
go_tool() {
  local name="$1" pkg="$2" version="$3" module="$4"
  local bin="$TOOLS/bin/$name"
  if [[ ! -x "$bin" ]] || ! go_built_from "$bin" "$module" "$version"; then
    command -v go >/dev/null 2>&1 || die "go not found; it is needed to build $name $version (go install $pkg@$version)"
    log "installing $name $version (go install $pkg@$version; first build takes a minute)"
    mkdir -p "$TOOLS/bin"
    GOBIN="$TOOLS/bin" go install "$pkg@$version" </dev/null >&2 \
      || die "go install $pkg@$version failed"
    go_built_from "$bin" "$module" "$version" || die "$bin was installed but does not report $module $version"
  fi
  printf '%s\n' "$bin"
}

go_built_from() {  # bin module version
  command -v go >/dev/null 2>&1 || return 0   # cannot check without go: trust the file
  go version -m "$1" 2>/dev/null | awk -v m="$2" -v v="$3" '$1 == "mod" && $2 == m && $3 == v { ok = 1 } END { exit !ok }'
}

tool_grpcurl() {
  local bin
  bin="$(go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION" github.com/fullstorydev/grpcurl)"
  "$bin" -version >/dev/null 2>&1 || die "$bin does not run"
  printf '%s\n' "$bin"
}

tool_ghz() {
  local bin
  bin="$(go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION" github.com/bojand/ghz)"
  "$bin" --version >/dev/null 2>&1 || die "$bin does not run"
  printf '%s\n' "$bin"
}

# --- kcat (Debian package; a system tool, not project-local)
tool_kcat() {
  if ! command -v kcat >/dev/null 2>&1; then
    [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 \
      || die "kcat not found; install it (Debian: apt-get install -y kcat) -- installing it needs root and apt-get"
    log "installing kcat (apt-get install kcat)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat; } </dev/null >&2 \
      || die "apt-get install kcat failed"
  fi
  local bin
  bin="$(command -v kcat)"
  "$bin" -V >/dev/null 2>&1 || die "$bin does not run"
  printf '%s\n' "$bin"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  buf)     take_lock; tool_buf ;;
  grpcurl) take_lock; tool_grpcurl ;;
  ghz)     take_lock; tool_ghz ;;
  kcat)    take_lock; tool_kcat ;;
  -h|--help|help) usage ;;
  *)       usage >&2; exit 2 ;;
esac
