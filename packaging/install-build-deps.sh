#!/bin/sh
# Install what the packaging targets need: rpmbuild (Debian's "rpm" package, or rpm-build on
# RPM-based systems), systemd-analyze (the "systemd" package: the unit's confinement is tested
# with it) and the Python build tools (build, twine, pytest).
#
#   sh packaging/install-build-deps.sh            both
#   sh packaging/install-build-deps.sh rpmbuild   rpmbuild only (what `make rpm` needs besides the venv)
#
# Needs root for the system package; PYTHON selects the interpreter (default python3).
set -eu

PYTHON=${PYTHON:-python3}
ONLY=${1:-}

if ! command -v rpmbuild >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm
    elif command -v dnf >/dev/null 2>&1; then
        dnf install -y rpm-build systemd-rpm-macros
    elif command -v yum >/dev/null 2>&1; then
        yum install -y rpm-build
    else
        echo "install-build-deps: no rpmbuild and no known package manager" >&2
        exit 1
    fi
fi

if [ "$ONLY" != rpmbuild ] && ! command -v systemd-analyze >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd
    elif command -v dnf >/dev/null 2>&1; then
        dnf install -y systemd
    elif command -v yum >/dev/null 2>&1; then
        yum install -y systemd
    fi
fi

if [ "$ONLY" != rpmbuild ] && ! "$PYTHON" -c 'import build, twine, pytest' >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet build twine pytest
fi
