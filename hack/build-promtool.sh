#!/usr/bin/env bash
# Build (or reuse from the cache) promtool, Prometheus's rule checker and rule unit-test runner, which
# tests/integration/test_monitoring.py runs on deploy/monitoring/ (check rules, test rules, PromQL parsing).
# It is compiled from the upstream Go module github.com/prometheus/prometheus with `go install pkg@version`
# (no Docker, no release downloads: only the Go module proxy is needed). The module's own go.mod and go.sum
# pin every dependency, and the proxy's checksum database verifies them.
#
# The binary is cached OUTSIDE the clone, keyed by version, so fresh clones on the same machine reuse it:
#   ${PVE_OPERATOR_CACHE_DIR:-$HOME/.cache/pve-operator}/promtool-<version>/promtool
# It is built into a temporary directory next to it and renamed into place (atomic), under a lock (flock),
# so parallel runs never see a partial binary. When it exists this script only prints its path (no Go needed).
#
# Usage:
#   bash hack/build-promtool.sh          build if missing; prints PROMTOOL=<path> on stdout
#   bash hack/build-promtool.sh --force  rebuild even if cached
#
# Environment: PROMETHEUS_MODULE_VERSION (default below), PVE_OPERATOR_CACHE_DIR (cache root), GO (go binary;
# default: `go` on PATH, else /usr/local/go/bin/go). GOPROXY is Go's default; the module and build caches stay
# in Go's default places so they are reused.
set -euo pipefail

# github.com/prometheus/prometheus publishes Go module tags v0.<3-digit minor>.<patch> for Prometheus v3.x.
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"
PACKAGE=github.com/prometheus/prometheus/cmd/promtool

log() { printf 'build-promtool: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

[[ "$PROMETHEUS_MODULE_VERSION" =~ ^v0\.[0-9]+\.[0-9]+$ ]] \
    || die "PROMETHEUS_MODULE_VERSION=$PROMETHEUS_MODULE_VERSION is not a Go module version of Prometheus (v0.MMM.P)"

CACHE_ROOT="${PVE_OPERATOR_CACHE_DIR:-$HOME/.cache/pve-operator}"
OUT_DIR="$CACHE_ROOT/promtool-$PROMETHEUS_MODULE_VERSION"
PROMTOOL="$OUT_DIR/promtool"

print_path() { printf 'PROMTOOL=%s\n' "$PROMTOOL"; }

if [[ $FORCE == 0 && -x "$PROMTOOL" ]]; then
    log "cached (prometheus $PROMETHEUS_MODULE_VERSION): $PROMTOOL"
    print_path
    exit 0
fi

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)  # absolute: the build runs in a temporary directory
PROMTOOL="$OUT_DIR/promtool"
exec 9>"$CACHE_ROOT/.promtool.lock"
if command -v flock >/dev/null; then
    log "waiting for the build lock $CACHE_ROOT/.promtool.lock ..."
    flock 9
fi
if [[ $FORCE == 0 && -x "$PROMTOOL" ]]; then
    log "built meanwhile by another run: $PROMTOOL"
    print_path
    exit 0
fi

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[[ -x "$GO" ]] || die "no Go toolchain found (looked for 'go' on PATH and /usr/local/go/bin/go); set GO=/path/to/go"
# Never download another toolchain: the local one must satisfy the go line of Prometheus's go.mod.
export GOTOOLCHAIN=local CGO_ENABLED=0
# `go install pkg@version` builds in module-aware mode outside any main module; no -mod flag applies.
export GOFLAGS="-buildvcs=false"
log "using $("$GO" version) ($GO)"

TMP_DIR="$OUT_DIR/.gobin.tmp.$$"
trap 'rm -rf "$TMP_DIR"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
rm -rf "$OUT_DIR"/.gobin.tmp.*  # leftovers of a build killed with SIGKILL
mkdir -p "$TMP_DIR"
# Outside any module or workspace, whatever the caller's directory: `go install pkg@version` builds the
# module exactly as its own go.mod pins it.
cd "$TMP_DIR"
export GOWORK=off

# The proxy records the tag's commit time: used as the build date so the binary is reproducible. The
# revision (git commit) is not known to the proxy, so it says where the binary came from instead.
MODULE="github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION"
"$GO" mod download "$MODULE" || die "cannot download $MODULE from the Go module proxy ($("$GO" env GOPROXY))"
BUILD_DATE=$("$GO" list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "$MODULE")
VERSION_PKG=github.com/prometheus/common/version
LDFLAGS="-s -w -X '$VERSION_PKG.Version=$PROMETHEUS_MODULE_VERSION' -X '$VERSION_PKG.Revision=go-module-$PROMETHEUS_MODULE_VERSION'"
LDFLAGS+=" -X '$VERSION_PKG.Branch=' -X '$VERSION_PKG.BuildUser=build-promtool.sh' -X '$VERSION_PKG.BuildDate=$BUILD_DATE'"

log "building promtool from $PACKAGE@$PROMETHEUS_MODULE_VERSION (cold: ~150 modules to download, 5-15 minutes of compiling) ..."
started=$(date +%s)
GOBIN="$TMP_DIR" "$GO" install -trimpath -ldflags "$LDFLAGS" "$PACKAGE@$PROMETHEUS_MODULE_VERSION" \
    || die "go install $PACKAGE@$PROMETHEUS_MODULE_VERSION failed (see above)"
elapsed=$(($(date +%s) - started))
[[ -x "$TMP_DIR/promtool" ]] || die "go install succeeded but left no promtool in $TMP_DIR"
output=$("$TMP_DIR/promtool" --version 2>&1) || die "promtool --version failed: $output"
[[ "$output" == *"$PROMETHEUS_MODULE_VERSION"* ]] || die "promtool --version reports '$output', expected $PROMETHEUS_MODULE_VERSION"
mv -f "$TMP_DIR/promtool" "$PROMTOOL"
log "built promtool in ${elapsed}s ($(du -h "$PROMTOOL" | cut -f1)): $(head -n1 <<<"$output")"
print_path
