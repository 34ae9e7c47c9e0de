#!/usr/bin/env bash
# Installs what fasterlog needs on a fresh Debian machine: liburing-dev (the C core links it)
# redis-tools and redis-server (the service's tests and benchmark),
# and the Python package with its test dependencies. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s liburing-dev >/dev/null 2>&1; then
    echo "setup: installing liburing-dev"
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq liburing-dev gcc python3-dev >/dev/null
fi

# The service tests drive the server with redis-cli and redis-benchmark (redis-tools), and
# bench/bench_service.py compares it with a private redis-server.
if ! dpkg -s redis-tools >/dev/null 2>&1 || ! dpkg -s redis-server >/dev/null 2>&1; then
    echo "setup: installing redis-tools and redis-server"
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq redis-tools redis-server >/dev/null
fi

python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"
