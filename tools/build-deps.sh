#!/usr/bin/env bash
# What building Tern needs from the system, checked by the files and programs the build really uses, and
# installed from Debian's packages when missing.
#
# quiche builds BoringSSL through boring-sys: cmake drives a C and a C++ compiler (and make), and bindgen
# loads libclang at run time to read BoringSSL's headers. bindgen (clang-sys) accepts only these file names:
# libclang.so, libclang-*.so, libclang.so.*, libclang-*.so.*, never libclang-cpp* (the C++ API library that
# Debian's libclang-cpp14 ships, which an earlier check here mistook for libclang). It also needs clang's
# own headers (stddef.h and friends, in clang's resource directory), which Debian ships in
# libclang-common-*-dev, not in the libclang1-* runtime.
#
# Usage:
#   tools/build-deps.sh check     print the Debian packages that are missing, one a line (exit 0 either way)
#   tools/build-deps.sh explain   what was looked for and what was found, one line a requirement
#   tools/build-deps.sh install   install what is missing (apt-get; sudo when not root), quiet when nothing is
#
# For testing the detection itself (tools/test-build-deps.sh): TERN_DEPS_ROOT=DIR looks for files under DIR
# instead of /, and the environment's PATH decides which programs exist.
set -euo pipefail
shopt -s nullglob

root="${TERN_DEPS_ROOT:-}"

# Directories clang-sys searches for libclang on Linux (clang-sys 1.9 build/common.rs), after LIBCLANG_PATH,
# `llvm-config --libdir`, LD_LIBRARY_PATH and LIBRARY_PATH.
libclang_dirs() {
  local d
  if [ -n "${LIBCLANG_PATH:-}" ]; then echo "$LIBCLANG_PATH"; fi
  if command -v llvm-config >/dev/null 2>&1; then llvm-config --libdir 2>/dev/null || true; fi
  local IFS=:
  for d in ${LD_LIBRARY_PATH:-} ${LIBRARY_PATH:-}; do [ -n "$d" ] && echo "$d"; done
  unset IFS
  for d in "$root"/usr/local/llvm*/lib* "$root"/usr/local/lib*/*/* "$root"/usr/local/lib*/* "$root"/usr/local/lib* \
    "$root"/usr/lib*/*/* "$root"/usr/lib*/* "$root"/usr/lib*; do
    [ -d "$d" ] && echo "$d"
  done
}

# The first libclang shared library bindgen would load, or nothing.
find_libclang() {
  local d f name
  while IFS= read -r d; do
    for f in "$d"/libclang.so "$d"/libclang-*.so "$d"/libclang.so.* "$d"/libclang-*.so.*; do
      name="${f##*/}"
      case "$name" in *-cpp.*) continue ;; esac
      [ -e "$f" ] && { echo "$f"; return 0; }
    done
  done < <(libclang_dirs)
  return 1
}

# clang's builtin headers (bindgen parses BoringSSL's headers, which include <stddef.h>).
find_clang_headers() {
  local f
  for f in "$root"/usr/lib/llvm-*/lib/clang/*/include/stddef.h "$root"/usr/lib/clang/*/include/stddef.h \
    "$root"/usr/local/lib/clang/*/include/stddef.h "$root"/usr/local/llvm*/lib/clang/*/include/stddef.h; do
    [ -e "$f" ] && { echo "${f%/stddef.h}"; return 0; }
  done
  return 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# One line a requirement: "ok|missing<TAB>what<TAB>package<TAB>detail".
requirements() {
  local p
  if have cc; then printf 'ok\tC compiler (cc)\tbuild-essential\t%s\n' "$(command -v cc)"
  else printf 'missing\tC compiler (cc)\tbuild-essential\t\n'; fi
  if have c++; then printf 'ok\tC++ compiler (c++)\tbuild-essential\t%s\n' "$(command -v c++)"
  else printf 'missing\tC++ compiler (c++)\tbuild-essential\t\n'; fi
  if have make; then printf 'ok\tmake\tbuild-essential\t%s\n' "$(command -v make)"
  else printf 'missing\tmake\tbuild-essential\t\n'; fi
  if have cmake; then printf 'ok\tcmake\tcmake\t%s\n' "$(command -v cmake)"
  else printf 'missing\tcmake\tcmake\t\n'; fi
  if p="$(find_libclang)"; then printf 'ok\tlibclang (loaded by bindgen)\tlibclang-dev\t%s\n' "$p"
  else printf 'missing\tlibclang (loaded by bindgen)\tlibclang-dev\tno libclang.so, libclang-*.so, libclang.so.* or libclang-*.so.* (libclang-cpp does not count)\n'; fi
  if p="$(find_clang_headers)"; then printf 'ok\tclang builtin headers (stddef.h)\tlibclang-dev\t%s\n' "$p"
  else printf 'missing\tclang builtin headers (stddef.h)\tlibclang-dev\t\n'; fi
}

# Pure bash from here on (the detection test runs it with a PATH of stub programs only).
missing_packages() {
  local state what pkg detail seen=" "
  while IFS=$'\t' read -r state what pkg detail; do
    if [ "$state" = missing ] && [[ "$seen" != *" $pkg "* ]]; then
      echo "$pkg"
      seen="$seen$pkg "
    fi
  done < <(requirements)
}

case "${1:-}" in
  check)
    missing_packages
    ;;
  explain)
    while IFS=$'\t' read -r state what pkg detail; do
      printf '%-8s %-34s %s\n' "$state" "$what" "${detail:-(package $pkg)}"
    done < <(requirements)
    ;;
  install)
    mapfile -t pkgs < <(missing_packages)
    [ ${#pkgs[@]} -eq 0 ] && exit 0
    echo "installing ${pkgs[*]} (BoringSSL's build needs them; tools/build-deps.sh explain says why)" >&2
    sudo_cmd=()
    [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
    log="$(mktemp)"
    if ! { "${sudo_cmd[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" \
      apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      echo "tools/build-deps.sh: could not install ${pkgs[*]}" >&2
      exit 1
    fi
    rm -f "$log"
    still="$(missing_packages)"
    if [ -n "$still" ]; then
      echo "tools/build-deps.sh: still missing after the install:" >&2
      while IFS=$'\t' read -r state what pkg detail; do
        [ "$state" = missing ] && echo "  $what (package $pkg)" >&2
      done < <(requirements)
      exit 1
    fi
    ;;
  *)
    echo "usage: tools/build-deps.sh check | explain | install" >&2
    exit 2
    ;;
esac
