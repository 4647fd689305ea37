#include "clients/cpp/curve.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>

#include <zmq.hpp>

namespace inferscope::client {
namespace {

constexpr size_t kKeyLength = 40;

bool IsKey(const std::string& key) {
  uint8_t bytes[32];
  return key.size() == kKeyLength && zmq_z85_decode(bytes, key.c_str()) != nullptr;
}

}  // namespace

bool ReadCurveKeyFile(const std::string& path, std::string* key, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  std::string line;
  key->clear();
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    std::istringstream words(line);
    std::string first;
    std::string second;
    if (!(words >> first)) continue;
    words >> second;
    if (IsKey(first) && second.empty()) {
      if (!key->empty()) {
        *error = path + ":" + std::to_string(line_no) + ": a second key (a key file holds one)";
        return false;
      }
      *key = first;
    } else if (first.front() != '#') {
      *error = path + ":" + std::to_string(line_no) +
               ": expected a 40-character Z85 key on a line of its own";
      return false;
    }
  }
  if (key->empty()) {
    *error = path + ": no key";
    return false;
  }
  return true;
}

bool LoadCurveClientKeys(const std::string& secret_key_file,
                         const std::string& server_public_key_file, CurveClientKeys* keys,
                         std::string* error) {
  CurveClientKeys loaded;
  if (!ReadCurveKeyFile(secret_key_file, &loaded.secret_key, error) ||
      !ReadCurveKeyFile(server_public_key_file, &loaded.server_public_key, error)) {
    return false;
  }
  char pub[kKeyLength + 1] = {};
  if (zmq_curve_public(pub, loaded.secret_key.c_str()) != 0) {
    *error = secret_key_file + ": not a secret key: " + zmq_strerror(zmq_errno());
    return false;
  }
  loaded.public_key = pub;
  *keys = std::move(loaded);
  return true;
}

bool ApplyCurveClientKeys(zmq::socket_t& socket, const CurveClientKeys& keys, std::string* error) {
  if (zmq_has("curve") == 0) {
    *error = "this libzmq was built without CURVE (libsodium)";
    return false;
  }
  if (!IsKey(keys.server_public_key) || !IsKey(keys.secret_key)) {
    *error = "CurveZMQ needs the server's public key and this client's secret key (Z85, 40 chars)";
    return false;
  }
  std::string public_key = keys.public_key;
  if (public_key.empty()) {
    char pub[kKeyLength + 1] = {};
    if (zmq_curve_public(pub, keys.secret_key.c_str()) != 0) {
      *error = std::string("zmq_curve_public: ") + zmq_strerror(zmq_errno());
      return false;
    }
    public_key = pub;
  } else if (!IsKey(public_key)) {
    *error = "the client public key is not a 40-character Z85 key";
    return false;
  }
  try {
    socket.set(zmq::sockopt::curve_serverkey, keys.server_public_key);
    socket.set(zmq::sockopt::curve_publickey, public_key);
    socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  } catch (const zmq::error_t& e) {
    *error = std::string("setting the CurveZMQ keys: ") + e.what();
    return false;
  }
  return true;
}

}  // namespace inferscope::client
