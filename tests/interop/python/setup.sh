#!/usr/bin/env bash
# Prepare a Python venv with pywebtransport for the interop tests.
#
# Finds a Python >= 3.12, creates a venv at ${TERN_PY_VENV:-<repo>/target/interop-venv}
# and installs the pinned pywebtransport version into it. Idempotent: when the
# venv already holds the pinned version nothing is downloaded.
#
# Exit status: 0 ok (last stdout line = absolute path of the venv's python),
#              3 no Python >= 3.12 found (skip; only when CI is not "true"),
#              1 any error (including no Python >= 3.12 when CI=true).
set -euo pipefail

PYWT_VERSION="0.21.1"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
repo_root="$(cd "$script_dir/../../.." && pwd -P)"
venv="${TERN_PY_VENV:-$repo_root/target/interop-venv}"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac

log() { printf 'setup.sh: %s\n' "$*" >&2; }

# A candidate is usable if it runs (pyenv shims on PATH fail when the version
# is not selected) and reports a version >= 3.12 and has the venv module.
usable() {
    [ -n "$1" ] || return 1
    "$1" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 12) else 1)' \
        >/dev/null 2>&1
}

find_python() {
    local c cands=()
    for c in python3.13 python3.12 python3.14; do
        if command -v "$c" >/dev/null 2>&1; then cands+=("$(command -v "$c")"); fi
    done
    local roots=("$HOME/.pyenv")
    if [ -n "${PYENV_ROOT:-}" ]; then roots+=("$PYENV_ROOT"); fi
    if command -v pyenv >/dev/null 2>&1; then
        local r
        r="$(pyenv root 2>/dev/null || true)"
        if [ -n "$r" ]; then roots+=("$r"); fi
    fi
    local root minor d
    for root in "${roots[@]}"; do
        for minor in 3.13 3.12 3.14; do
            # newest patch release first
            while IFS= read -r d; do
                [ -n "$d" ] && cands+=("$d/bin/python3")
            done < <(ls -d "$root/versions/$minor"* 2>/dev/null | sort -rV)
        done
    done
    # Last resort: a plain python3 that happens to be new enough.
    if command -v python3 >/dev/null 2>&1; then cands+=("$(command -v python3)"); fi
    for c in "${cands[@]}"; do
        if usable "$c"; then printf '%s\n' "$c"; return 0; fi
    done
    return 1
}

venv_py="$venv/bin/python"

installed_version() {
    "$venv_py" -I -c 'import importlib.metadata as m; print(m.version("pywebtransport"))' 2>/dev/null || true
}

# Fast path: venv already set up with the pinned version (no network).
if [ -x "$venv_py" ] && usable "$venv_py" && [ "$(installed_version)" = "$PYWT_VERSION" ]; then
    printf '%s\n' "$venv_py"
    exit 0
fi

if ! py="$(find_python)"; then
    if [ "${CI:-}" = "true" ]; then
        log "error: no Python >= 3.12 found (tried python3.13, python3.12 on PATH and pyenv versions);" \
            "pywebtransport $PYWT_VERSION needs Python >= 3.12"
        exit 1
    fi
    log "skipping: no Python >= 3.12 found (pywebtransport $PYWT_VERSION needs it)"
    exit 3
fi

# Recreate a venv that is broken or built on an unusable interpreter.
if [ -e "$venv" ] && ! usable "$venv_py"; then
    if [ ! -f "$venv/pyvenv.cfg" ]; then
        log "error: $venv exists but is not a Python venv; set TERN_PY_VENV to another path"
        exit 1
    fi
    log "recreating broken venv at $venv"
    rm -rf "$venv"
fi
if [ ! -x "$venv_py" ]; then
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv" >&2
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
if ! "$venv_py" -m pip install -q "pywebtransport==$PYWT_VERSION" >&2; then
    log "error: pip install pywebtransport==$PYWT_VERSION failed"
    exit 1
fi
got="$(installed_version)"
if [ "$got" != "$PYWT_VERSION" ]; then
    log "error: expected pywebtransport $PYWT_VERSION in $venv, found '${got:-nothing}'"
    exit 1
fi
printf '%s\n' "$venv_py"
