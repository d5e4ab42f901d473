#!/usr/bin/env bash
# Installs what the browser tests need when it is missing, then prints where it is, one KEY=PATH a line:
#   CHROMIUM=/usr/bin/chromium  CHROMEDRIVER=/usr/bin/chromedriver  FIREFOX=/usr/bin/firefox-esr  GECKODRIVER=...
# Chromium, chromedriver and Firefox ESR come from Debian's packages (apt; sudo when not root).
# geckodriver is built once from crates.io (`cargo install`, about 4 minutes on two cores) and cached in
# ${XDG_CACHE_HOME:-$HOME/.cache}/tern/tools. Quiet when all is present; progress goes to stderr, the
# install logs are shown only on failure. Exit status non-zero when something could not be had.
# Usage: tools/browsers.sh [chromium] [firefox]   (default: both)
set -euo pipefail

cache="${TERN_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tern/tools}"
mkdir -p "$cache"
log="$cache/install.log"

want_chromium=0
want_firefox=0
[ $# -eq 0 ] && set -- chromium firefox
for w in "$@"; do
  case "$w" in
    chromium) want_chromium=1 ;;
    firefox) want_firefox=1 ;;
    *) echo "usage: $0 [chromium] [firefox]" >&2; exit 2 ;;
  esac
done

# One installer at a time (test binaries may call this concurrently).
exec 9>"$cache/.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

find_bin() { # first of the names found on PATH or in /usr/bin, /usr/lib/chromium
  local n
  for n in "$@"; do
    if command -v "$n" >/dev/null 2>&1; then command -v "$n"; return 0; fi
    for d in /usr/bin /usr/lib/chromium /usr/lib/firefox-esr; do
      if [ -x "$d/$n" ]; then echo "$d/$n"; return 0; fi
    done
  done
  return 1
}

fail() {
  echo "tools/browsers.sh: $*" >&2
  if [ -s "$log" ]; then
    echo "--- last lines of $log ---" >&2
    tail -n 30 "$log" >&2
  fi
  exit 1
}

pkgs=()
if [ $want_chromium = 1 ]; then
  find_bin chromium chromium-browser >/dev/null || pkgs+=(chromium)
  find_bin chromedriver >/dev/null || pkgs+=(chromium-driver)
fi
if [ $want_firefox = 1 ]; then
  find_bin firefox-esr firefox >/dev/null || pkgs+=(firefox-esr)
fi

if [ ${#pkgs[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || fail "missing ${pkgs[*]} and no apt-get to install them"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || fail "missing ${pkgs[*]}; not root and no sudo"
    sudo_cmd=(sudo -n)
  fi
  echo "tools/browsers.sh: installing ${pkgs[*]} (apt)" >&2
  : >"$log"
  "${sudo_cmd[@]}" apt-get update -qq >>"$log" 2>&1 || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" \
    >>"$log" 2>&1 || fail "apt-get install ${pkgs[*]} failed"
fi

out=()
if [ $want_chromium = 1 ]; then
  chromium=$(find_bin chromium chromium-browser) || fail "chromium not found after install"
  chromedriver=$(find_bin chromedriver) || fail "chromedriver not found after install"
  out+=("CHROMIUM=$chromium" "CHROMEDRIVER=$chromedriver")
fi

if [ $want_firefox = 1 ]; then
  firefox=$(find_bin firefox-esr firefox) || fail "firefox-esr not found after install"
  gecko="$cache/geckodriver/bin/geckodriver"
  if [ ! -x "$gecko" ]; then
    if command -v geckodriver >/dev/null 2>&1; then
      gecko=$(command -v geckodriver)
    else
      command -v cargo >/dev/null 2>&1 || fail "no geckodriver and no cargo to build it"
      echo "tools/browsers.sh: building geckodriver (cargo install, a few minutes; cached in $cache)" >&2
      : >"$log"
      # Build outside any workspace and with none of the calling cargo's settings.
      (cd "$cache" && env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_TARGET -u CARGO_ENCODED_RUSTFLAGS \
        cargo install geckodriver --locked --root "$cache/geckodriver" >>"$log" 2>&1) \
        || fail "cargo install geckodriver failed"
      [ -x "$gecko" ] || fail "geckodriver not found after cargo install"
    fi
  fi
  out+=("FIREFOX=$firefox" "GECKODRIVER=$gecko")
fi

printf '%s\n' "${out[@]}"
