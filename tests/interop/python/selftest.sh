#!/usr/bin/env bash
# py<->py self-test: server.py and client.py (both pywebtransport) against each other.
# Proves the scripts and the venv work before blaming a Tern peer.
#
# Exit status: 0 all checks passed; 1 failure; 3 skipped (no Python >= 3.12, CI unset).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

set +e
py_out="$("$here/setup.sh")"
rc=$?
set -e
[ "$rc" -eq 0 ] || exit "$rc"
py="$(printf '%s\n' "$py_out" | tail -n 1)"

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# CA + leaf (ECDSA P-256, SAN DNS:localhost) made by pywebtransport's own generator.
"$py" -c 'import sys; from pywebtransport._pywebtransport import generate_self_signed_cert as g
g(hostname="localhost", output_dir=sys.argv[1], validity_days=2)' "$work"

"$py" "$here/server.py" --cert "$work/localhost.crt" --key "$work/localhost.key" \
    >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

port=""
for _ in $(seq 100); do
    port="$(awk '$1 == "ready" {print $2; exit}' "$work/server.out" 2>/dev/null || true)"
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "selftest: server did not become ready" >&2
    cat "$work/server.err" >&2
    exit 1
fi

set +e
"$py" "$here/client.py" "https://localhost:$port/" --ca "$work/localhost_ca.crt"
client_rc=$?
set -e

sleep 0.3
kill "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
server_pid=""
echo "--- server stdout"
cat "$work/server.out"
if [ -s "$work/server.err" ]; then
    echo "--- server stderr"
    cat "$work/server.err"
fi

if ! grep -qx "closed code=7 reason=done" "$work/server.out"; then
    echo "selftest: server did not report the client's close (code 7, reason done)" >&2
    exit 1
fi
exit "$client_rc"
