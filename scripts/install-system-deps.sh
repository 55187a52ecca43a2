#!/usr/bin/env bash
# Debian packages the serve stack and its tests need: a PostgreSQL server (run/event storage for
# `make serve`), Chromium (the browser tests; Playwright must never download its own browser) and
# debian-handbook (the Debian Administrator's Handbook as HTML in en-US, zh-CN and twenty-odd
# more languages: the real bilingual corpus of the demo and the corpus tests).
# Installs only what is missing, so a machine that already has them pays nothing.
set -euo pipefail

missing=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[[ -n "$pg_bin" && -x "$pg_bin/initdb" && -x "$pg_bin/postgres" ]] || missing+=(postgresql)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -f /usr/share/doc/debian-handbook/html/en-US/index.html ]] || missing+=(debian-handbook)
((${#missing[@]} == 0)) && exit 0

echo "installing Debian packages: ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "error: need root (or passwordless sudo) to install ${missing[*]};" \
            "install them with: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || { "${sudo[@]}" apt-get update -q >/dev/null && \
         "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
