#!/usr/bin/env bash
# Checks tools/build-deps.sh's detection against throwaway directory layouts and PATHs, so that a machine
# which already has every package cannot hide a detection mistake (the one that took Debian's
# libclang-cpp14 for libclang). Runs in CI; takes well under a second.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

pass=0
fail=0
# expect NAME ROOT BIN "expected packages (space separated, sorted)"
expect() {
  local name="$1" root="$2" bin="$3" want="$4" got
  got="$(env -u LIBCLANG_PATH -u LD_LIBRARY_PATH -u LIBRARY_PATH PATH="$bin" TERN_DEPS_ROOT="$root" \
    /bin/bash "$here/build-deps.sh" check | sort | tr '\n' ' ' | sed 's/ $//')"
  if [ "$got" = "$want" ]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $name: expected [$want], got [$got]" >&2
  fi
}

mkfile() { mkdir -p "$(dirname "$1")"; : >"$1"; }
mkbin() { # mkbin DIR NAME...: executables that exist (their content does not matter to the check)
  local d="$1"; shift
  mkdir -p "$d"
  for n in "$@"; do printf '#!/bin/sh\nexit 0\n' >"$d/$n"; chmod +x "$d/$n"; done
}

bare="$work/bin-bare"; mkdir -p "$bare"
tools="$work/bin-tools"; mkbin "$tools" cc c++ make cmake
nocxx="$work/bin-nocxx"; mkbin "$nocxx" cc make cmake
nocmake="$work/bin-nocmake"; mkbin "$nocmake" cc c++ make

# A machine with only Debian's libclang-cpp14 (the case that fooled the old check).
r="$work/cpp-only"
mkfile "$r/usr/lib/llvm-14/lib/libclang-cpp.so.14"
mkfile "$r/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14"
expect "libclang-cpp only" "$r" "$tools" "libclang-dev"
expect "bare machine" "$r" "$bare" "build-essential cmake libclang-dev"
expect "no C++ compiler" "$r" "$nocxx" "build-essential libclang-dev"

# The libclang runtime (libclang1-14) without clang's headers (libclang-common-14-dev).
r="$work/runtime-only"
mkfile "$r/usr/lib/llvm-14/lib/libclang-cpp.so.14"
mkfile "$r/usr/lib/x86_64-linux-gnu/libclang-14.so.1"
expect "runtime without headers" "$r" "$tools" "libclang-dev"

# Headers without the library.
r="$work/headers-only"
mkfile "$r/usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h"
expect "headers without library" "$r" "$tools" "libclang-dev"

# Debian's libclang-dev: libclang.so in llvm-14/lib, headers in the resource directory.
r="$work/debian"
mkfile "$r/usr/lib/llvm-14/lib/libclang-cpp.so.14"
mkfile "$r/usr/lib/llvm-14/lib/libclang.so.1"
mkfile "$r/usr/lib/llvm-14/lib/libclang.so"
mkfile "$r/usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h"
expect "libclang-dev installed" "$r" "$tools" ""
expect "libclang-dev installed, no cmake" "$r" "$nocmake" "cmake"

# A versioned library only in the multiarch directory (other distributions' layout), headers in /usr/lib/clang.
r="$work/multiarch"
mkfile "$r/usr/lib/x86_64-linux-gnu/libclang-16.so.16"
mkfile "$r/usr/lib/clang/16/include/stddef.h"
expect "multiarch versioned" "$r" "$tools" ""

# LIBCLANG_PATH is searched first, as clang-sys does.
r="$work/libclang-path"
mkfile "$r/opt/llvm/lib/libclang.so"
mkfile "$r/usr/local/lib/clang/18/include/stddef.h"
got="$(env -u LD_LIBRARY_PATH -u LIBRARY_PATH PATH="$tools" TERN_DEPS_ROOT="$r" LIBCLANG_PATH="$r/opt/llvm/lib" \
  /bin/bash "$here/build-deps.sh" check)"
if [ -z "$got" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL LIBCLANG_PATH: got [$got]" >&2; fi

echo "build-deps detection: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
