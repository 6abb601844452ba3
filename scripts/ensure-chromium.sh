#!/usr/bin/env bash
# Make sure Debian's chromium exists for the browser tests (tests/web), which drive
# /usr/bin/chromium with Playwright: `playwright install` downloads a browser of its
# own, which nothing here may fetch. On Debian as root, install the `chromium` package.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Chromium for the browser tests (Debian package chromium)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Without recommends (udev, upower, a printing stack...), but with the fonts that
    # screenshots need to show text as a user sees it.
    apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
    exit 0
fi
echo "$CHROMIUM not found: install Debian's chromium package (as root:" \
     "apt-get install chromium); until then the browser tests (tests/web) are skipped." >&2
exit 1
