#!/usr/bin/env bash
# Set up mailguard in .venv and run the demo: a local mail server holding infected mail,
# fetched through the filtering engine. Nothing is left running. Needs no root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e .
exec .venv/bin/mailguard demo "$@"
