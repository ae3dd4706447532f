#!/bin/sh
# Install the cloudmanagers_plugin package as a synapse agent drop-in plugin folder.
#
#   sh packaging/install-dropin.sh [DEST]      (DEST defaults to /var/lib/synapse/custom_plugin)
#
# Copies exactly the plugin package: its Python modules and data files, without tests,
# __pycache__ folders or bytecode. The new copy is staged beside the old one and swapped in,
# so an upgrade leaves no stale module behind. Used by `make install-dropin` and by the RPM.
set -eu

DEST=${1:-/var/lib/synapse/custom_plugin}
PKG=cloudmanagers_plugin
SRC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC="$SRC_ROOT/$PKG"

if [ ! -f "$SRC/__init__.py" ]; then
    echo "install-dropin: $SRC/__init__.py not found" >&2
    exit 1
fi

umask 022
mkdir -p "$DEST"
STAGE="$DEST/.$PKG.new.$$"
OLD="$DEST/.$PKG.old.$$"
trap 'rm -rf "$STAGE" "$OLD"' EXIT INT TERM
mkdir "$STAGE"

# Every file of the package except tests, bytecode, editor and VCS leftovers.
(
    cd "$SRC"
    find . -mindepth 1 \( -name __pycache__ -o -name tests -o -name test -o -name '.*' \) -prune -o \
        -type f ! -name '*.py[co]' ! -name '*~' ! -name '*.orig' ! -name '*.rej' -print
) | sort | while IFS= read -r f; do
    f=${f#./}
    case "$f" in
        test_*.py | */test_*.py | conftest.py | */conftest.py) continue ;;
    esac
    mkdir -p "$STAGE/$(dirname "$f")"
    cp "$SRC/$f" "$STAGE/$f"
    chmod 0644 "$STAGE/$f"
done
find "$STAGE" -type d -exec chmod 0755 {} +

if [ -e "$DEST/$PKG" ]; then
    mv "$DEST/$PKG" "$OLD"
fi
mv "$STAGE" "$DEST/$PKG"
echo "installed $PKG in $DEST/$PKG"
