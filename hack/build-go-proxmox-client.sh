#!/usr/bin/env bash
# Build (or reuse from the cache) the Go conformance client in hack/conformance/go-proxmox/, a small program on
# the third-party library github.com/luthermonson/go-proxmox (JSON request bodies), which
# tests/conformance/test_go_proxmox.py runs against pve_sim.
#
# The library version comes from hack/conformance/versions.env and is pinned (with go.sum) in the module's
# go.mod. The binary is cached OUTSIDE the clone, keyed by the library version and the hash of the module's
# sources (go.mod, go.sum, *.go), so fresh clones reuse it and any edit rebuilds it:
#   ${PVE_OPERATOR_CACHE_DIR:-$HOME/.cache/pve-operator}/go-proxmox-client-<version>-<hash>/client
# It is built into a temporary file and renamed into place (atomic), under a lock (flock), so parallel runs
# never see a partial binary. When it exists this script only prints its path (it does not even need Go).
#
# Usage:
#   bash hack/build-go-proxmox-client.sh          build if missing; prints GO_PROXMOX_CLIENT=<path> on stdout
#   bash hack/build-go-proxmox-client.sh --force  rebuild even if cached
#
# Environment: PVE_OPERATOR_CACHE_DIR (cache root), GO (go binary; default: `go` on PATH, else
# /usr/local/go/bin/go). GOPROXY is Go's default; the module and build caches stay in Go's default places.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF_DIR="$REPO_ROOT/hack/conformance"
MODULE_DIR="$CONF_DIR/go-proxmox"
# shellcheck source=conformance/versions.env
source "$CONF_DIR/versions.env"
: "${GO_PROXMOX_VERSION:?missing in hack/conformance/versions.env}"

log() { printf 'build-go-proxmox-client: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

grep -Eq "^require github\.com/luthermonson/go-proxmox ${GO_PROXMOX_VERSION//./\\.}\$" "$MODULE_DIR/go.mod" \
    || die "hack/conformance/go-proxmox/go.mod does not require go-proxmox $GO_PROXMOX_VERSION (versions.env)"

HASH=$(cd "$MODULE_DIR" && cat go.mod go.sum $(LC_ALL=C ls ./*.go) | sha256sum | cut -c1-12)
CACHE_ROOT="${PVE_OPERATOR_CACHE_DIR:-$HOME/.cache/pve-operator}"
OUT_DIR="$CACHE_ROOT/go-proxmox-client-$GO_PROXMOX_VERSION-$HASH"
CLIENT="$OUT_DIR/client"

print_path() { printf 'GO_PROXMOX_CLIENT=%s\n' "$CLIENT"; }

if [[ $FORCE == 0 && -x "$CLIENT" ]]; then
    log "cached (go-proxmox $GO_PROXMOX_VERSION, sources $HASH): $CLIENT"
    print_path
    exit 0
fi

mkdir -p "$OUT_DIR"
exec 9>"$CACHE_ROOT/.go-proxmox-client.lock"
if command -v flock >/dev/null; then
    log "waiting for the build lock $CACHE_ROOT/.go-proxmox-client.lock ..."
    flock 9
fi
if [[ $FORCE == 0 && -x "$CLIENT" ]]; then
    log "built meanwhile by another run: $CLIENT"
    print_path
    exit 0
fi

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[[ -x "$GO" ]] || die "no Go toolchain found (looked for 'go' on PATH and /usr/local/go/bin/go); set GO=/path/to/go"
export GOTOOLCHAIN=local CGO_ENABLED=0
# -mod=mod: a go.sum entry that is missing is fetched instead of failing (go.mod and go.sum are committed, so
# normally nothing changes); -buildvcs=false: the clone's git state has no business in the binary.
export GOFLAGS="-mod=mod -buildvcs=false"
log "using $("$GO" version) ($GO)"

TMP="$OUT_DIR/.client.tmp.$$"
trap 'rm -f "$TMP"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
rm -f "$OUT_DIR"/.client.tmp.*  # leftovers of a build killed with SIGKILL

started=$(date +%s)
log "building the client on go-proxmox $GO_PROXMOX_VERSION (downloads the modules through the Go module proxy the first time) ..."
(cd "$MODULE_DIR" && "$GO" build -trimpath -ldflags "-s -w" -o "$TMP" .) \
    || die "go build failed in hack/conformance/go-proxmox (is the Go module proxy reachable? GOPROXY=$("$GO" env GOPROXY))"
version=$("$TMP" -library-version) || die "the built client does not run"
[[ "$version" == "$GO_PROXMOX_VERSION" ]] || die "the built client has go-proxmox $version, expected $GO_PROXMOX_VERSION"
mv -f "$TMP" "$CLIENT"
log "built in $(($(date +%s) - started))s ($(du -h "$CLIENT" | cut -f1)): go-proxmox $version"
print_path
