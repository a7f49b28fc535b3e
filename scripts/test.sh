#!/usr/bin/env bash
# Set up everything the test suite needs, then run it: `bash scripts/test.sh [pytest args]`.
# As root it also installs the Debian packages the real-peer tests use; without root those
# tests skip with a reason (and with CI=true a skipped real-peer test fails the run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # policy-rc.d keeps the packages' own daemons from starting: the tests start their own.
    apt-get install -y -q --no-install-recommends \
        python3-venv ca-certificates openssl \
        dovecot-imapd dovecot-pop3d fetchmail \
        clamav clamav-daemon clamav-testfiles \
        socat nftables iproute2 p7zip-full libnss3-tools genisoimage procps xz-utils zstd lzip
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,yara,fast,archives]'
exec .venv/bin/python -m pytest "$@"
