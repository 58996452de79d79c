#!/usr/bin/env bash
# Create (or reuse from the cache) the virtualenv with Ansible, used by tests/conformance/test_ansible_lxc.py
# to run the community.proxmox.proxmox module (the LXC module, built on proxmoxer) against pve_sim.
#
# Ansible gets a venv of its own (its ~100 collections have no business in .venv), pinned by
# hack/conformance/ansible/requirements.txt, cached OUTSIDE the clone so fresh clones reuse it:
#   ${PVE_OPERATOR_CACHE_DIR:-$HOME/.cache/pve-operator}/ansible-<version>-<hash>/
# where <hash> covers requirements.txt and the Python version. A venv cannot be moved after it is made (its
# scripts name their interpreter by absolute path), so instead of an atomic rename the build takes a lock
# (flock), builds in place and writes the marker file .complete last: a directory without it is the leftover
# of an interrupted build and is removed and rebuilt. When the marker exists this script only prints the path.
#
# Usage:
#   bash hack/build-ansible.sh          build if missing; prints ANSIBLE_VENV=<dir> on stdout (progress on stderr)
#   bash hack/build-ansible.sh --force  rebuild even if cached
#
# Environment: PVE_OPERATOR_CACHE_DIR (cache root), PYTHON (interpreter for the venv; default python3, >= 3.11).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF_DIR="$REPO_ROOT/hack/conformance"
# shellcheck source=conformance/versions.env
source "$CONF_DIR/versions.env"
: "${ANSIBLE_VERSION:?missing in hack/conformance/versions.env}"
REQUIREMENTS="$CONF_DIR/ansible/requirements.txt"

log() { printf 'build-ansible: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

grep -Eq "^ansible==${ANSIBLE_VERSION//./\\.}\$" "$REQUIREMENTS" \
    || die "hack/conformance/ansible/requirements.txt does not pin ansible==$ANSIBLE_VERSION (versions.env)"

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "no Python interpreter '$PYTHON' (set PYTHON=/path/to/python3.11+)"
PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is Python $PY_VERSION; Ansible $ANSIBLE_VERSION needs >= 3.11"

CACHE_ROOT="${PVE_OPERATOR_CACHE_DIR:-$HOME/.cache/pve-operator}"
KEY=$( { cat "$REQUIREMENTS"; echo "python $PY_VERSION"; } | sha256sum | cut -c1-12)
VENV="$CACHE_ROOT/ansible-$ANSIBLE_VERSION-$KEY"
MARKER="$VENV/.complete"

print_path() { printf 'ANSIBLE_VENV=%s\n' "$VENV"; }

if [[ $FORCE == 0 && -f "$MARKER" ]]; then
    log "cached (ansible $ANSIBLE_VERSION, Python $PY_VERSION): $VENV"
    print_path
    exit 0
fi

mkdir -p "$CACHE_ROOT"
# Serialise concurrent builds (two checkouts, parallel pytest sessions); the second waits, then finds the marker.
exec 9>"$CACHE_ROOT/.ansible.lock"
if command -v flock >/dev/null; then
    log "waiting for the build lock $CACHE_ROOT/.ansible.lock ..."
    flock 9
fi
if [[ $FORCE == 0 && -f "$MARKER" ]]; then
    log "built meanwhile by another run: $VENV"
    print_path
    exit 0
fi

started=$(date +%s)
[[ -e "$VENV" ]] && log "removing the incomplete or forced $VENV" && rm -rf "$VENV"
log "creating $VENV with $("$PYTHON" --version 2>&1) ($PYTHON) ..."
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
log "installing ansible $ANSIBLE_VERSION, proxmoxer and requests (pip; about 50 MB, a minute or two the first time) ..."
"$VENV/bin/python" -m pip install --progress-bar on -r "$REQUIREMENTS" >&2 \
    || die "pip could not install hack/conformance/ansible/requirements.txt (is PyPI reachable?)"

# Check what the tests rely on before declaring the venv complete.
version=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("ansible"))')
[[ "$version" == "$ANSIBLE_VERSION" ]] || die "installed ansible is $version, expected $ANSIBLE_VERSION"
"$VENV/bin/ansible-doc" --type module community.proxmox.proxmox >/dev/null 2>&1 \
    || die "ansible $ANSIBLE_VERSION has no community.proxmox.proxmox module"
"$VENV/bin/python" -c 'import proxmoxer, requests' || die "proxmoxer or requests missing from $VENV"

touch "$MARKER"
banner=$("$VENV/bin/ansible" --version)
log "built in $(($(date +%s) - started))s ($(du -sh "$VENV" | cut -f1)): ${banner%%$'\n'*}"
print_path
