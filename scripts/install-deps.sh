#!/usr/bin/env bash
# Install the Debian packages needed to build, test and run Ferry.
# Extra package names may be passed as arguments, e.g.
#   scripts/install-deps.sh hitch haproxy python3-tornado
# Silent and fast when everything is already installed.
set -euo pipefail

# scdoc builds the man pages; man-db and groff-base render them (the test).
# libnats-dev is the cluster's NATS client; the cluster tests run a
# nats-server cluster of their own.  libwslay-dev and libhttp-parser-dev:
# WebSocket clients and the admin page; chromium, chromium-driver and
# python3-selenium: the status page's tests in a real browser
# (tests/test_browser.py).
packages=(build-essential pkg-config libssl-dev libev-dev libcriterion-dev
          libinih-dev openssl python3 scdoc man-db groff-base libnats-dev
          nats-server libwslay-dev libhttp-parser-dev chromium
          chromium-driver python3-selenium "$@")

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done

[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
# Wait (up to 5 minutes) rather than fail if another apt/dpkg holds the lock.
lock=(-o DPkg::Lock::Timeout=300)
"${as_root[@]}" apt-get "${lock[@]}" update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get "${lock[@]}" install -y --no-install-recommends "${missing[@]}"
