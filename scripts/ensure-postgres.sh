#!/usr/bin/env bash
# Make sure PostgreSQL server binaries exist for the test suite, which starts its
# own throwaway server. On Debian as root, install the `postgresql` package.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${TOKENBANK_PG_BIN:-}" ]; then
    exit 0
fi
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing PostgreSQL server binaries (Debian package postgresql)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    exit 0
fi
echo "PostgreSQL server binaries not found: install the postgresql package," \
     "or set TOKENBANK_PG_BIN to the directory holding initdb and pg_ctl." >&2
exit 1
