#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pipeline/status.h"

namespace inferscope {

// Checks of the addresses and paths a topology names, so that `check-topology` refuses what `run`
// could not use instead of failing only when the engine binds or opens it.

// A host and a TCP port, as `query.listen` and `--listen` take them ("127.0.0.1:8080",
// "[::1]:8080", "0.0.0.0:0"). Port 0 asks the system for a free port.
struct HostPort {
  std::string host;
  uint16_t port = 0;
};

// Parses "host:port": a non-empty host (an IPv6 host in brackets) and a decimal port in
// [0, 65535]. The error says what is wrong and what would be right.
Result<HostPort> ParseHostPort(std::string_view text);

// What is wrong with a ZeroMQ endpoint, or nullopt when it is usable:
//   tcp://<host>:<port>   host a name, an IPv4 address, `*`, or an IPv6 address in brackets;
//                         port a decimal in [0, 65535] or `*` (0 and `*`: any free port)
//   ipc://<path>          a non-empty path (at most 107 bytes, the sun_path limit)
//   inproc://<name>       a non-empty name
// Interface names and source addresses (`tcp://eth0;host:port`) are accepted as libzmq takes them.
std::optional<std::string> ZmqEndpointProblem(std::string_view endpoint);

// What is wrong with `path` as a state directory, or nullopt: it must be a directory when it
// exists; otherwise its nearest existing ancestor must be a writable directory (the engine creates
// the rest).
std::optional<std::string> StateDirProblem(const std::string& path);

}  // namespace inferscope
