#pragma once

// CurveZMQ client keys for the publisher clients and stream subscribers (docs/PROTOCOL.md,
// "Security"). Depends only on libzmq and cppzmq.

#include <string>

namespace zmq {
class socket_t;
}  // namespace zmq

namespace inferscope::client {

// The keys a client needs to connect to an engine endpoint that requires CurveZMQ. Each key is in
// Z85 (40 characters), as `inferscope keygen` writes them. All empty = plain ZeroMQ.
struct CurveClientKeys {
  std::string server_public_key;  // the endpoint's public key (the engine's NAME.pub)
  std::string secret_key;         // this client's secret key (its NAME.key)
  std::string public_key;         // this client's public key; derived from secret_key when empty

  bool enabled() const { return !server_public_key.empty() || !secret_key.empty(); }
};

// Reads a key file written by `inferscope keygen` (NAME.key or NAME.pub): the line holding a
// 40-character Z85 key; '#' lines are comments. False with `*error` set on failure.
bool ReadCurveKeyFile(const std::string& path, std::string* key, std::string* error);

// Reads `secret_key_file` (the client's NAME.key) and `server_public_key_file` (the engine's
// NAME.pub) into `*keys`, deriving the client's public key. False with `*error` set on failure.
bool LoadCurveClientKeys(const std::string& secret_key_file,
                         const std::string& server_public_key_file, CurveClientKeys* keys,
                         std::string* error);

// Makes `socket` (before it connects) a CurveZMQ client with `keys`. False with `*error` set when
// a key is missing or malformed, or libzmq lacks CURVE.
bool ApplyCurveClientKeys(zmq::socket_t& socket, const CurveClientKeys& keys, std::string* error);

}  // namespace inferscope::client
