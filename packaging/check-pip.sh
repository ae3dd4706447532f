#!/bin/sh
# Install the built wheel, with its dependencies from the package index, in a clean virtualenv
# (no system site-packages) and check that the package, its `cloudmanagers` command and its
# data files are there. This needs the package index and takes a minute or so.
#
#   sh packaging/check-pip.sh [DIST]            (DIST defaults to dist; run `make wheel` first)
set -eu

PYTHON=${PYTHON:-python3}
DIST=${1:-dist}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$(dirname "$0")/../cloudmanagers_plugin/version.py")
WHEEL=$(ls "$DIST"/synapse_cloudmanagers_plugin-"$VERSION"-py3-none-any.whl)

VENV=$(mktemp -d "${TMPDIR:-/tmp}/cm-check-pip.XXXXXX")
trap 'rm -rf "$VENV"' EXIT INT TERM

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$WHEEL"
"$VENV/bin/python" -m pip check

cd "$VENV"   # away from the source tree, so the installed copy is the one imported
"$VENV/bin/python" - "$VERSION" <<'PY'
import sys
import cloudmanagers_plugin
import cloudmanagers_plugin.cli
assert cloudmanagers_plugin.__version__ == sys.argv[1], cloudmanagers_plugin.__version__
assert "site-packages" in cloudmanagers_plugin.__file__, cloudmanagers_plugin.__file__
print("imported", cloudmanagers_plugin.__file__, cloudmanagers_plugin.__version__)
PY
"$VENV/bin/cloudmanagers" --help >/dev/null
for f in cloudmanagers.conf synapse-agent.conf permissions.conf cloudmanagers-agent.service; do
    test -f "$VENV/share/synapse-cloudmanagers-plugin/$f" || {
        echo "check-pip: $f is not in $VENV/share/synapse-cloudmanagers-plugin" >&2
        exit 1
    }
done
echo "check-pip: OK ($WHEEL in a clean virtualenv)"
