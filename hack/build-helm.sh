#!/usr/bin/env bash
# Build (or reuse from the cache) the Helm CLI used by tests/integration/test_helm_chart.py and `make helm`,
# compiled from its upstream Go module helm.sh/helm/v4 (no release download, no Docker).
#
# The version is HELM_VERSION below. The build is reproducible without a wrapper module: `go install
# module@version` resolves every dependency from helm's own go.mod and checks it against its go.sum, and the
# version stamp (-X .../internal/version.*) is what helm's Makefile sets for a release tag.
#
# The binary is cached OUTSIDE the clone, keyed by version, so fresh clones on the same machine reuse it:
#   ${PVE_OPERATOR_CACHE_DIR:-$HOME/.cache/pve-operator}/helm-<version>/helm
# It is built into a temporary directory and renamed into place (atomic), under a lock (flock), so parallel
# runs never see a partial binary. When it exists this script only prints its path (it does not even need Go).
# A cold build (empty Go build cache, 90 modules to download) took 516 s on 2 shared cores (4 min CPU); with
# Go's build cache warm it takes seconds.
#
# Usage:
#   bash hack/build-helm.sh          build if missing; prints HELM=<path> on stdout
#   bash hack/build-helm.sh --force  rebuild even if cached
#
# Environment: PVE_OPERATOR_CACHE_DIR (cache root), HELM_VERSION (default below), GO (go binary; default:
# `go` on PATH, else /usr/local/go/bin/go). GOPROXY is Go's default; the module and build caches stay in
# Go's default places so they are reused.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.2}"
HELM_MODULE=helm.sh/helm/v4

log() { printf 'build-helm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

[[ "$HELM_VERSION" =~ ^v4\.[0-9]+\.[0-9]+$ ]] || die "HELM_VERSION=$HELM_VERSION is not a v4.x.y release tag"

CACHE_ROOT="${PVE_OPERATOR_CACHE_DIR:-$HOME/.cache/pve-operator}"
OUT_DIR="$CACHE_ROOT/helm-$HELM_VERSION"
HELM="$OUT_DIR/helm"

print_path() { printf 'HELM=%s\n' "$HELM"; }

if [[ $FORCE == 0 && -x "$HELM" ]]; then
    log "cached (helm $HELM_VERSION): $HELM"
    print_path
    exit 0
fi

mkdir -p "$OUT_DIR"
# Serialise concurrent builds (two checkouts, or make -j); the second waits, then finds the cache.
exec 9>"$CACHE_ROOT/.helm.lock"
if command -v flock >/dev/null; then
    log "waiting for the build lock $CACHE_ROOT/.helm.lock ..."
    flock 9
fi
if [[ $FORCE == 0 && -x "$HELM" ]]; then
    log "built meanwhile by another run: $HELM"
    print_path
    exit 0
fi

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[[ -x "$GO" ]] || die "no Go toolchain found (looked for 'go' on PATH and /usr/local/go/bin/go); set GO=/path/to/go"
# Never download another toolchain: helm v4.3's go.mod needs go >= 1.26.0, which must be installed.
# Static binary, as helm's Makefile builds it. GOFLAGS is cleared: `go install module@version` runs outside
# any module and refuses -mod; -buildvcs does not apply to module-mode builds either.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=
log "using $("$GO" version) ($GO)"

# Leftovers of a build killed with SIGKILL (which no trap sees); never mistaken for the cached binary.
rm -rf "$OUT_DIR"/.build.tmp.*
TMP_DIR="$OUT_DIR/.build.tmp.$$"
trap 'rm -rf "$TMP_DIR"' EXIT
# Exit (running the EXIT trap) on Ctrl-C / SIGTERM too, so an interrupted build removes its temporary files.
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$TMP_DIR"

# helm's Makefile for a release tag: version set, metadata empty, tree clean. The module proxy does not
# record the git commit, so gitCommit stays empty.
LDFLAGS="-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION"
LDFLAGS+=" -X $HELM_MODULE/internal/version.metadata= -X $HELM_MODULE/internal/version.gitTreeState=clean"

log "building helm $HELM_VERSION from $HELM_MODULE/cmd/helm (downloads modules from $("$GO" env GOPROXY) if needed) ..."
started=$(date +%s)
GOBIN="$TMP_DIR" "$GO" install -trimpath -ldflags "$LDFLAGS" "$HELM_MODULE/cmd/helm@$HELM_VERSION" \
    || die "go install $HELM_MODULE/cmd/helm@$HELM_VERSION failed (is the Go module proxy reachable? see above)"
elapsed=$(($(date +%s) - started))

output=$("$TMP_DIR/helm" version --short 2>&1) || die "helm version failed: $output"
[[ "$output" == "$HELM_VERSION"* ]] || die "helm version reports '$output', expected $HELM_VERSION"
mv -f "$TMP_DIR/helm" "$HELM"
log "built helm in ${elapsed}s ($(du -h "$HELM" | cut -f1)): $output"
print_path
