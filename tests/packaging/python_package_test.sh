#!/usr/bin/env bash
# `pip install ./clients/python` into a fresh venv (Debian's python3-zmq and python3-msgpack serve
# through --system-site-packages; offline: --no-build-isolation --no-index with Debian's
# python3-setuptools), then python_package_e2e.py under that venv's interpreter.
# Usage: python_package_test.sh SOURCE_DIR INFERSCOPE_BINARY PROJECT_VERSION
set -euo pipefail
src=$1 binary=$2 version=$3
work=$(mktemp -d /tmp/inferscope-pip.XXXXXX)
trap 'rm -rf "$work"' EXIT
# A copy: pip builds in the tree it is given (build/, *.egg-info), which must not be the source.
cp -r "$src/clients/python" "$work/src"
rm -rf "$work/src/build" "$work/src"/*.egg-info
/usr/bin/python3 -m venv --system-site-packages "$work/venv"
"$work/venv/bin/pip" install -q --no-build-isolation --no-index "$work/src"
# Run from the work dir so that nothing but the venv provides `inferscope`.
cd "$work"
"$work/venv/bin/python" "$src/tests/packaging/python_package_e2e.py" "$binary" "$version" "$work"
