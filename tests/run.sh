#!/usr/bin/env bash
# Install what the tests need (when missing) and run them: bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: real DNS clients, a real recursive resolver, the reference server, Redis, a
# browser for the status page test, systemd-analyze for the units and promtool for the alert
# rules (monitoring/).
declare -A tools=([dig]=dnsutils [unbound]=unbound [nsd]=nsd [dnsperf]=dnsperf
                  [redis-server]=redis-server [chromium]=chromium
                  [systemd-analyze]=systemd [promtool]=prometheus)
missing=()
for tool in "${!tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("${tools[$tool]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages start their own daemons on standard ports; the tests start their own instances.
  for svc in unbound nsd prometheus prometheus-node-exporter; do $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true; done
fi

# A C compiler and the Python headers, so that the install builds the compiled parts the tests
# expect, the UDP loop and the farms' answers to direct askers (lbdns itself installs without
# them, with the same code in Python).
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
if ! python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  need+=(python3-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Python: a virtual environment with lbdns and its test extras.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
