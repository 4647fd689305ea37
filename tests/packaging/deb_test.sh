#!/usr/bin/env bash
# `cpack -G DEB` builds inferscope_<version>_<arch>.deb; extracted with `dpkg -x` into a clean
# directory, its file list is the installed layout (packaging/README.md), the unit runs the packaged
# binary and topology, the binary runs, the Python package imports, and Depends names the Debian
# package of every shared library the binary links (found with `dpkg -S`).
# Usage: deb_test.sh BUILD_DIR PROJECT_VERSION   (after the build: cpack does not build)
set -euo pipefail
build_dir=$(realpath "$1") version=$2
work=$(mktemp -d /tmp/inferscope-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

arch=$(dpkg --print-architecture)
(cd "$build_dir" && cpack -G DEB -D CPACK_PACKAGE_DIRECTORY="$work/out" >"$work/cpack.log" 2>&1) ||
  { cat "$work/cpack.log"; fail "cpack -G DEB failed"; }
deb=$work/out/inferscope_${version}_${arch}.deb
[ -f "$deb" ] || { ls "$work/out"; fail "no $(basename "$deb")"; }
[ "$(dpkg-deb -f "$deb" Package)" = inferscope ] || fail "Package is not inferscope"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "Version is not $version"
depends=$(dpkg-deb -f "$deb" Depends)
# The package names of Depends, one a line (versions and alternatives' "|" dropped).
depends_names=$(tr ',|' '\n\n' <<<"$depends" | sed 's/(.*)//; s/^ *//; s/ *$//' | grep -v '^$')

root=$work/root
mkdir "$root"
dpkg -x "$deb" "$root"
(cd "$root" && find . ! -type d | sed 's|^\./|/|' | sort) >"$work/files"
expected=(
  /usr/bin/inferscope
  /usr/share/inferscope/topologies/inference-fleet.yaml
  /usr/lib/systemd/system/inferscope.service
  /usr/share/man/man1/inferscope.1
  /usr/include/inferscope/clients/cpp/publisher.h
  /usr/include/inferscope/clients/cpp/acked_publisher.h
  /usr/include/inferscope/clients/cpp/topics.h
  /usr/lib/libinferscope_client.a
  /usr/lib/cmake/inferscope/inferscope-config.cmake
  /usr/lib/cmake/inferscope/inferscope-config-version.cmake
  /usr/lib/cmake/inferscope/inferscope-targets.cmake
  /usr/lib/pkgconfig/inferscope-client.pc
  /usr/lib/python3/dist-packages/inferscope/__init__.py
  /usr/lib/python3/dist-packages/inferscope/py.typed
  /usr/lib/python3/dist-packages/inferscope_client.py
)
for f in "${expected[@]}"; do
  grep -qx "$f" "$work/files" || fail "the .deb lacks $f"
done
# Nothing outside the layout (no build tree, tests, benchmarks or __pycache__).
unexpected=$(grep -v -e '^/usr/bin/inferscope$' -e '^/usr/share/inferscope/topologies/' \
  -e '^/usr/lib/systemd/system/inferscope.service$' -e '^/usr/share/man/man1/inferscope.1$' \
  -e '^/usr/include/inferscope/clients/cpp/[a-z_]*\.h$' -e '^/usr/lib/libinferscope_client.a$' \
  -e '^/usr/lib/cmake/inferscope/' -e '^/usr/lib/pkgconfig/inferscope-client.pc$' \
  -e '^/usr/lib/python3/dist-packages/inferscope/[a-z_]*\.py$' \
  -e '^/usr/lib/python3/dist-packages/inferscope/py.typed$' \
  -e '^/usr/lib/python3/dist-packages/inferscope_client.py$' "$work/files" || true)
[ -z "$unexpected" ] || fail "unexpected files in the .deb: $unexpected"

file "$root/usr/bin/inferscope" | grep -q "ELF 64-bit" || fail "/usr/bin/inferscope is not an ELF binary"
"$root/usr/bin/inferscope" --version | grep -q "$version" || fail "--version does not name $version"
grep -qx "ExecStart=/usr/bin/inferscope run --topology /usr/share/inferscope/topologies/inference-fleet.yaml --state-dir /var/lib/inferscope/inference-fleet" \
  "$root/usr/lib/systemd/system/inferscope.service" || fail "the unit's ExecStart is not the packaged binary and topology"
"$root/usr/bin/inferscope" check-topology "$root/usr/share/inferscope/topologies/inference-fleet.yaml" >/dev/null ||
  fail "the packaged topology does not check"
(cd "$work" && PYTHONPATH="$root/usr/lib/python3/dist-packages" /usr/bin/python3 -c \
  "import inferscope, sys; sys.exit(inferscope.__version__ != '$version')") ||
  fail "the packaged Python package does not import or has another version"

# Depends: the Debian package of every shared library the binary links directly (its NEEDED
# entries, resolved to paths by ldd).
needed=$(readelf -d "$root/usr/bin/inferscope" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[ -n "$needed" ] || fail "no NEEDED entries in the binary"
for soname in $needed; do
  lib=$(ldd "$root/usr/bin/inferscope" | awk -v n="$soname" '$1 == n { print $3 }')
  [ -n "$lib" ] || fail "ldd does not resolve $soname"
  real=$(realpath "$lib")
  pkg=$(dpkg -S "$real" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null || true)
  pkg=${pkg%%:*}
  [ -n "$pkg" ] || fail "no Debian package owns $lib"
  # The package, or a name it Provides (libspdlog1.10 provides libspdlog1.10-fmt9, its shlibs name).
  names="$pkg $(dpkg-query -W -f='${Provides}' "$pkg" 2>/dev/null | sed 's/([^)]*)//g; s/,/ /g')"
  found=
  for name in $names; do
    grep -qxF "$name" <<<"$depends_names" && found=$name
  done
  [ -n "$found" ] || fail "Depends lacks $pkg (for $lib): $depends"
done
echo "deb test: ok ($(basename "$deb"), $(wc -l <"$work/files") files; Depends: $depends)"
