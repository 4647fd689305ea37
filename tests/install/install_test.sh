#!/usr/bin/env bash
# `cmake --install` puts a working kit in place: the binary runs, a publisher program compiles and
# links against the installed C++ client through pkg-config alone, and Debian's python3 imports the
# installed Python client. Usage: install_test.sh BUILD_DIR
set -euo pipefail
build_dir=$1
prefix=$(mktemp -d /tmp/inferscope-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT

cmake --install "$build_dir" --prefix "$prefix" >/dev/null
"$prefix/bin/inferscope" --help | grep -q "check-topology"
"$prefix/bin/inferscope" check-topology "$prefix/share/inferscope/topologies/inference-fleet.yaml" >/dev/null
pc_dir=$(dirname "$(find "$prefix" -name inferscope-client.pc | head -1)")

cat >"$prefix/publish.cc" <<'CC'
#include <iostream>
#include <string>
#include "clients/cpp/publisher.h"
int main() {
  inferscope::client::PublisherOptions options;
  options.endpoint = "tcp://127.0.0.1:*";
  options.publisher_id = "install-test";
  options.socket = inferscope::client::PublisherOptions::SocketType::kPub;
  options.bind = true;
  inferscope::client::Publisher publisher(options);
  std::string error;
  if (!publisher.Connect(&error)) {
    std::cerr << error << "\n";
    return 1;
  }
  publisher.Gauge("node-1", "llama", "kv_cache_usage", 0.5);
  std::cout << "bound " << publisher.Endpoint() << "\n";
  publisher.Close();
  return 0;
}
CC
# shellcheck disable=SC2046
c++ "$prefix/publish.cc" -o "$prefix/publish" $(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs inferscope-client)
"$prefix/publish" | grep -q "bound tcp://127.0.0.1:"

PYTHONPATH="$prefix/lib/python3/dist-packages" /usr/bin/python3 -c "import inferscope, inferscope_client"
echo "install test: ok ($prefix)"
