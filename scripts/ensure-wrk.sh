#!/usr/bin/env bash
# Make sure the `wrk` load generator is installed for `make bench`. On Debian as
# root, install the `wrk` package with apt; otherwise say what is missing.
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing the wrk load generator (Debian package wrk)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends wrk >/dev/null
    command -v wrk >/dev/null 2>&1 && exit 0
fi
echo "wrk not found: install the Debian package wrk (apt-get install wrk)" >&2
exit 1
