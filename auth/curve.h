#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "pipeline/config.h"
#include "pipeline/glob.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"
#include "pipeline/string_hash.h"

namespace inferscope {

// CurveZMQ (RFC 26) for the endpoints the engine binds: key files, the authorised-keys file and
// the ZAP handler (RFC 27) that admits the clients whose public key is listed.
// docs/PROTOCOL.md, "Security", is the user-facing description.

// True when libzmq was built with CURVE (libsodium), as Debian's is.
bool CurveAvailable();

// A CurveZMQ key pair, each key in Z85 (40 characters).
struct CurveKeyPair {
  std::string public_key;
  std::string secret_key;
};

// A fresh key pair (zmq_curve_keypair). Unavailable when libzmq lacks CURVE.
Result<CurveKeyPair> GenerateCurveKeyPair();
// The public key of a Z85 secret key (zmq_curve_public). InvalidArgument when it is not one.
Result<std::string> CurvePublicKey(std::string_view secret_key);
// True when `key` is 40 Z85 characters that decode to 32 bytes.
bool IsZ85Key(std::string_view key);

// Writes `<base>.key` (the secret key, mode 0600, created without ever being readable by others)
// and `<base>.pub` (the public key). Both hold one Z85 key on a line of its own after '#' comment
// lines. Without `overwrite`, fails with InvalidArgument ("exists") when either file exists,
// before writing any. With `overwrite`, each file is written beside its path and renamed over it:
// a symlink there is replaced, never written through.
Status WriteCurveKeyFiles(const std::string& base, const CurveKeyPair& pair, bool overwrite);
// Reads a key file: the one line holding a 40-character Z85 key; blank lines and lines starting
// with '#' (that are not a key) are ignored. Errors name the file and line.
Result<std::string> ReadCurveKeyFile(const std::string& path);

// AuthorizedKeys is a parsed authorised-keys file: one client public key per line, each with the
// publisher ids it may publish under:
//
//   # comment lines start with '#'; blank lines are ignored
//   <40-character Z85 public key> <glob>[,<glob>...]   # optional trailing comment
//
// Globs as in silences (GlobMatch): '*' any run of bytes, '?' one byte, anything else itself.
// Immutable once loaded, so the ZAP thread and a source thread may read it concurrently.
class AuthorizedKeys {
 public:
  struct Entry {
    std::string public_key;  // Z85; also the ZAP User-Id of connections made with this key
    std::vector<std::string> publisher_globs;
    int line = 0;
    // True when `publisher` matches one of the globs.
    bool MayPublishAs(std::string_view publisher) const;
  };

  // `require_globs`: every key must list at least one publisher-id glob (ingest); otherwise the
  // globs are optional and unused (stream subscribers). `origin` names the text in errors.
  static Result<std::shared_ptr<const AuthorizedKeys>> Parse(std::string_view text,
                                                             const std::string& origin,
                                                             bool require_globs);
  static Result<std::shared_ptr<const AuthorizedKeys>> Load(const std::string& path,
                                                            bool require_globs);

  // The entry of a Z85 public key (the User-Id), or null. No allocation.
  const Entry* Find(std::string_view public_key) const;
  size_t size() const { return entries_.size(); }

 private:
  std::unordered_map<std::string, Entry, StringHash, std::equal_to<>> entries_;
};

// The `curve` option of a bound ZeroMQ endpoint (a zmq source, a stream sink):
//   curve: {server_secret_key_file: FILE, authorized_keys_file: FILE}
// Relative file names are resolved against the topology file's folder.
struct CurveServerOptions {
  std::string server_secret_key;  // Z85; empty = CURVE off (plain ZeroMQ, no authentication)
  std::string server_public_key;  // derived from the secret key (for logs and tests)
  std::shared_ptr<const AuthorizedKeys> authorized_keys;  // required when CURVE is on

  bool enabled() const { return !server_secret_key.empty(); }
  Status Validate() const;
};

// Parses `parent`'s `curve` field (absent: CURVE off), reading both key files now, so that
// check-topology reports a missing or malformed file. `require_globs` as in AuthorizedKeys::Parse.
Result<CurveServerOptions> ParseCurveServerOptions(const ConfigNode& parent, bool require_globs);

// CurveServer makes one bound socket a CurveZMQ server and runs its ZAP handler: a REP socket on
// inproc://zeromq.zap.01 in the socket's context, served by a thread of its own, that admits a
// client whose public key is in the authorised-keys file (status 200, User-Id = the Z85 key) and
// refuses every other one (status 400; counted and logged, rate-limited).
//
// Lifecycle: Start (before the server socket binds; the context must have no other ZAP handler),
// Configure the socket, bind it; Stop (or the destructor) before the context is closed.
// Concurrency: Start/Configure/Stop from one thread; the handler thread only reads the immutable
// AuthorizedKeys and bumps atomic counters.
class CurveServer {
 public:
  // `what` names the endpoint in logs ("source ingest"). `metrics` may be null; otherwise
  // `<metric_prefix>_auth_failures_total{stage}` counts refused handshakes.
  CurveServer(CurveServerOptions options, std::string what, MetricsRegistry* metrics,
              std::string_view failures_metric, const Labels& labels);
  ~CurveServer();
  CurveServer(const CurveServer&) = delete;
  CurveServer& operator=(const CurveServer&) = delete;

  Status Start(zmq::context_t& context);
  // Sets ZMQ_CURVE_SERVER, the secret key and the ZAP domain on `socket` (throws zmq::error_t).
  void Configure(zmq::socket_t& socket) const;
  void Stop();

  const AuthorizedKeys& authorized_keys() const { return *options_.authorized_keys; }
  uint64_t failures() const { return failures_->value(); }
  uint64_t admitted() const { return admitted_.load(std::memory_order_relaxed); }

 private:
  void Serve();
  // Answers one ZAP request already received into `frames`.
  void Answer(std::vector<zmq::message_t>& frames);

  const CurveServerOptions options_;
  const std::string what_;
  Counter own_failures_;
  Counter* failures_ = &own_failures_;
  std::atomic<uint64_t> admitted_{0};
  std::unique_ptr<zmq::socket_t> zap_;
  std::unique_ptr<zmq::socket_t> stop_send_;
  std::unique_ptr<zmq::socket_t> stop_recv_;
  std::thread thread_;
  int64_t last_log_ns_ = 0;  // handler thread only
  uint64_t suppressed_logs_ = 0;
};

}  // namespace inferscope
