// `inferscope keygen`: a CurveZMQ key pair for an engine endpoint or a client (docs/PROTOCOL.md,
// "Security").

#include <iostream>

#include <spdlog/spdlog.h>

#include "auth/curve.h"
#include "cli/commands.h"

namespace inferscope {

int KeygenCommand(const KeygenArgs& args) {
  if (args.out.empty()) {
    spdlog::error("keygen: --out NAME is required");
    return 2;
  }
  // NAME is a path without extension: "keys/" would write the hidden files keys/.key and .pub.
  if (args.out.back() == '/') {
    spdlog::error(
        "keygen: --out {}: NAME is a file name without extension (e.g. {}engine), not a "
        "directory",
        args.out, args.out);
    return 2;
  }
  Result<CurveKeyPair> pair = GenerateCurveKeyPair();
  if (!pair.ok()) {
    spdlog::error("keygen: {}", pair.status().ToString());
    return 1;
  }
  Status written = WriteCurveKeyFiles(args.out, *pair, args.force);
  if (!written.ok()) {
    spdlog::error("keygen: {}", written.ToString());
    return 1;
  }
  // The public key on stdout, ready for an authorised-keys line.
  std::cout << pair->public_key << "\n";
  spdlog::info("keygen: wrote {}.key (secret, mode 0600) and {}.pub", args.out, args.out);
  return 0;
}

}  // namespace inferscope
