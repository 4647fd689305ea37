#include "auth/curve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "pipeline/names.h"

namespace inferscope {
namespace {

constexpr size_t kZ85KeyLength = 40;
constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";
constexpr std::string_view kZapVersion = "1.0";
constexpr int64_t kLogIntervalNs = 1'000'000'000;  // at most one refusal log line per second

int64_t MonotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// Splits `line` at runs of blanks into at most `max` tokens; returns how many it found and sets
// `*rest` to what follows the last one.
size_t Tokens(std::string_view line, std::string_view* out, size_t max, std::string_view* rest) {
  size_t n = 0;
  size_t i = 0;
  while (n < max) {
    while (i < line.size() && IsSpace(line[i])) ++i;
    if (i == line.size()) break;
    size_t j = i;
    while (j < line.size() && !IsSpace(line[j])) ++j;
    out[n++] = line.substr(i, j - i);
    i = j;
  }
  while (i < line.size() && IsSpace(line[i])) ++i;
  *rest = line.substr(i);
  return n;
}

Result<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::IOError(path + ": read failed");
  return text.str();
}

// Writes `text` to the open `fd` with `mode`, fsyncs and closes it; errors name `path`.
Status WriteAndClose(int fd, const std::string& path, const std::string& text, mode_t mode) {
  // An existing file keeps its mode, and mkstemp creates 0600: set it.
  Status st = Status::Ok();
  if (::fchmod(fd, mode) != 0) {
    st = Status::IOError(path + ": chmod: " + std::strerror(errno));
  }
  size_t done = 0;
  while (st.ok() && done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      st = Status::IOError(path + ": write failed: " + std::strerror(errno));
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (st.ok() && ::fsync(fd) != 0) st = Status::IOError(path + ": fsync: " + std::strerror(errno));
  if (::close(fd) != 0 && st.ok()) st = Status::IOError(path + ": close: " + std::strerror(errno));
  return st;
}

// Creates `path` (O_EXCL: an existing file, or a symlink, is never written through), or with
// `overwrite` writes a new file beside it and renames it over `path`, so that a symlink there is
// replaced rather than followed (its target, possibly any file, is left alone) and the old file
// stays whole until the new one is complete.
Status WriteFile(const std::string& path, const std::string& text, mode_t mode, bool overwrite) {
  if (!overwrite) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
      if (errno == EEXIST) {
        return Status::InvalidArgument(path + ": exists (use --force to overwrite)");
      }
      return Status::IOError(path + ": cannot create: " + std::strerror(errno));
    }
    return WriteAndClose(fd, path, text, mode);
  }
  std::string temp = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) return Status::IOError(path + ": cannot create: " + std::strerror(errno));
  Status st = WriteAndClose(fd, path, text, mode);
  if (st.ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    st = Status::IOError(path + ": cannot replace: " + std::strerror(errno));
  }
  if (!st.ok()) ::unlink(temp.c_str());
  return st;
}

std::string ResolvePath(const ConfigNode& node, const std::string& path) {
  std::filesystem::path p(path);
  if (p.is_absolute() || node.file().empty() || node.file().front() == '<') return path;
  return (std::filesystem::path(node.file()).parent_path() / p).string();
}

}  // namespace

bool CurveAvailable() { return zmq_has("curve") != 0; }

Result<CurveKeyPair> GenerateCurveKeyPair() {
  if (!CurveAvailable()) return Status::Unavailable("libzmq was built without CURVE (libsodium)");
  char pub[kZ85KeyLength + 1] = {};
  char sec[kZ85KeyLength + 1] = {};
  if (zmq_curve_keypair(pub, sec) != 0) {
    return Status::Internal(std::string("zmq_curve_keypair: ") + zmq_strerror(zmq_errno()));
  }
  return CurveKeyPair{pub, sec};
}

Result<std::string> CurvePublicKey(std::string_view secret_key) {
  if (!IsZ85Key(secret_key)) return Status::InvalidArgument("not a 40-character Z85 key");
  const std::string secret(secret_key);
  char pub[kZ85KeyLength + 1] = {};
  if (zmq_curve_public(pub, secret.c_str()) != 0) {
    return Status::InvalidArgument(std::string("zmq_curve_public: ") + zmq_strerror(zmq_errno()));
  }
  return std::string(pub);
}

bool IsZ85Key(std::string_view key) {
  if (key.size() != kZ85KeyLength) return false;
  char text[kZ85KeyLength + 1];
  std::memcpy(text, key.data(), kZ85KeyLength);
  text[kZ85KeyLength] = '\0';
  uint8_t bytes[32];
  return zmq_z85_decode(bytes, text) != nullptr;
}

Status WriteCurveKeyFiles(const std::string& base, const CurveKeyPair& pair, bool overwrite) {
  const std::string secret_text =
      "# inferscope CurveZMQ secret key (Z85). Keep it private: whoever holds it can publish or\n"
      "# subscribe as this key. Public key: " +
      pair.public_key + "\n" + pair.secret_key + "\n";
  const std::string public_text =
      "# inferscope CurveZMQ public key (Z85)\n" + pair.public_key + "\n";
  // Without overwrite, both must be absent before either is written: a failure on the second
  // would leave a new secret key whose public key is not the .pub beside it.
  if (!overwrite) {
    for (const std::string& path : {base + ".key", base + ".pub"}) {
      struct stat st {};
      if (::lstat(path.c_str(), &st) == 0) {
        return Status::InvalidArgument(path + ": exists (use --force to overwrite)");
      }
    }
  }
  INFERSCOPE_RETURN_IF_ERROR(WriteFile(base + ".key", secret_text, 0600, overwrite));
  return WriteFile(base + ".pub", public_text, 0644, overwrite);
}

Result<std::string> ReadCurveKeyFile(const std::string& path) {
  Result<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  std::string key;
  int line_no = 0;
  std::string_view rest_of_file = *text;
  while (!rest_of_file.empty()) {
    const size_t nl = rest_of_file.find('\n');
    std::string_view line = rest_of_file.substr(0, nl);
    rest_of_file = nl == std::string_view::npos ? std::string_view() : rest_of_file.substr(nl + 1);
    ++line_no;
    std::string_view tokens[2];
    std::string_view rest;
    const size_t n = Tokens(line, tokens, 2, &rest);
    if (n == 0) continue;
    if (IsZ85Key(tokens[0]) && n == 1) {
      if (!key.empty()) {
        return Status::InvalidArgument(path + ":" + std::to_string(line_no) +
                                       ": a second key (a key file holds one)");
      }
      key.assign(tokens[0]);
      continue;
    }
    if (tokens[0].front() == '#') continue;
    return Status::InvalidArgument(path + ":" + std::to_string(line_no) +
                                   ": expected a 40-character Z85 key on a line of its own");
  }
  if (key.empty()) return Status::InvalidArgument(path + ": no key (expected a Z85 key line)");
  return key;
}

bool AuthorizedKeys::Entry::MayPublishAs(std::string_view publisher) const {
  for (const std::string& glob : publisher_globs) {
    if (GlobMatch(glob, publisher)) return true;
  }
  return false;
}

Result<std::shared_ptr<const AuthorizedKeys>> AuthorizedKeys::Parse(std::string_view text,
                                                                    const std::string& origin,
                                                                    bool require_globs) {
  auto keys = std::make_shared<AuthorizedKeys>();
  int line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    auto error = [&](const std::string& message) {
      return Status::InvalidArgument(origin + ":" + std::to_string(line_no) + ": " + message);
    };
    std::string_view tokens[2];
    std::string_view rest;
    const size_t n = Tokens(line, tokens, 2, &rest);
    if (n == 0) continue;
    if (!IsZ85Key(tokens[0])) {
      // A Z85 key may itself start with '#', so a comment is a line starting with '#' whose first
      // word is not a key.
      if (tokens[0].front() == '#') continue;
      return error("expected '<40-character Z85 public key> <publisher-id glob>[,<glob>...]'");
    }
    if (!rest.empty() && rest.front() != '#') {
      return error("unexpected '" + std::string(rest) +
                   "' (publisher-id globs are separated by commas, without blanks)");
    }
    Entry entry;
    entry.public_key.assign(tokens[0]);
    entry.line = line_no;
    if (n == 2 && tokens[1].front() != '#') {
      std::string_view globs = tokens[1];
      while (true) {
        const size_t comma = globs.find(',');
        std::string_view glob = globs.substr(0, comma);
        if (glob.empty() || glob.size() > kMaxNameBytes) {
          return error("empty or over-long (> " + std::to_string(kMaxNameBytes) +
                       " bytes) publisher-id glob");
        }
        entry.publisher_globs.emplace_back(glob);
        if (comma == std::string_view::npos) break;
        globs.remove_prefix(comma + 1);
      }
    } else if (n == 2) {
      rest = tokens[1];  // a trailing comment right after the key
    }
    if (require_globs && entry.publisher_globs.empty()) {
      return error(
          "no publisher-id glob after the key (list the ids this key may publish under; '*' "
          "allows any)");
    }
    if (keys->Find(entry.public_key) != nullptr) {
      return error("key listed twice (first on line " +
                   std::to_string(keys->Find(entry.public_key)->line) + ")");
    }
    std::string key = entry.public_key;
    keys->entries_.emplace(std::move(key), std::move(entry));
  }
  return std::shared_ptr<const AuthorizedKeys>(std::move(keys));
}

Result<std::shared_ptr<const AuthorizedKeys>> AuthorizedKeys::Load(const std::string& path,
                                                                   bool require_globs) {
  Result<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  return Parse(*text, path, require_globs);
}

const AuthorizedKeys::Entry* AuthorizedKeys::Find(std::string_view public_key) const {
  auto it = entries_.find(public_key);
  return it == entries_.end() ? nullptr : &it->second;
}

Status CurveServerOptions::Validate() const {
  if (!enabled()) return Status::Ok();
  if (!IsZ85Key(server_secret_key)) {
    return Status::InvalidArgument("curve: the server secret key is not a 40-character Z85 key");
  }
  if (authorized_keys == nullptr) {
    return Status::InvalidArgument("curve: an authorised-keys file is required");
  }
  if (!CurveAvailable()) {
    return Status::Unavailable("curve: libzmq was built without CURVE (libsodium)");
  }
  return Status::Ok();
}

Result<CurveServerOptions> ParseCurveServerOptions(const ConfigNode& parent, bool require_globs) {
  CurveServerOptions options;
  if (!parent.Has("curve")) return options;
  Result<ConfigNode> curve = parent.Child("curve");
  if (!curve.ok()) return curve.status();
  INFERSCOPE_RETURN_IF_ERROR(
      curve->CheckKnownFields({"server_secret_key_file", "authorized_keys_file"}));
  if (!CurveAvailable()) {
    return parent.Error("curve", "this libzmq was built without CURVE (libsodium)");
  }
  Result<std::string> secret_file = curve->GetString("server_secret_key_file");
  if (!secret_file.ok()) return secret_file.status();
  Result<std::string> keys_file = curve->GetString("authorized_keys_file");
  if (!keys_file.ok()) return keys_file.status();

  const std::string secret_path = ResolvePath(*curve, *secret_file);
  Result<std::string> secret = ReadCurveKeyFile(secret_path);
  if (!secret.ok()) return curve->Error("server_secret_key_file", secret.status().message());
  struct stat st {};
  if (::stat(secret_path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    spdlog::warn("{}: the secret key file is readable by others (mode {:o}); chmod 600 it",
                 secret_path, st.st_mode & 0777);
  }
  Result<std::string> pub = CurvePublicKey(*secret);
  if (!pub.ok()) return curve->Error("server_secret_key_file", pub.status().message());
  Result<std::shared_ptr<const AuthorizedKeys>> keys =
      AuthorizedKeys::Load(ResolvePath(*curve, *keys_file), require_globs);
  if (!keys.ok()) return curve->Error("authorized_keys_file", keys.status().message());
  options.server_secret_key = std::move(secret).value();
  options.server_public_key = std::move(pub).value();
  options.authorized_keys = std::move(keys).value();
  return options;
}

CurveServer::CurveServer(CurveServerOptions options, std::string what, MetricsRegistry* metrics,
                         std::string_view failures_metric, const Labels& labels)
    : options_(std::move(options)), what_(std::move(what)) {
  if (metrics != nullptr) {
    failures_ = metrics->GetCounter(
        failures_metric,
        "CurveZMQ handshakes refused: the client's public key is not in the authorised-keys file",
        labels);
  }
}

CurveServer::~CurveServer() { Stop(); }

Status CurveServer::Start(zmq::context_t& context) {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (!options_.enabled()) return Status::InvalidArgument(what_ + ": curve is not configured");
  // The stop pipe's name only has to be unique within the context.
  const std::string stop_endpoint =
      "inproc://inferscope-zap-stop-" + std::to_string(reinterpret_cast<uintptr_t>(this));
  try {
    zap_ = std::make_unique<zmq::socket_t>(context, zmq::socket_type::rep);
    zap_->set(zmq::sockopt::linger, 0);
    zap_->bind(kZapEndpoint);
    stop_recv_ = std::make_unique<zmq::socket_t>(context, zmq::socket_type::pair);
    stop_recv_->set(zmq::sockopt::linger, 0);
    stop_recv_->bind(stop_endpoint);
    stop_send_ = std::make_unique<zmq::socket_t>(context, zmq::socket_type::pair);
    stop_send_->set(zmq::sockopt::linger, 0);
    stop_send_->connect(stop_endpoint);
  } catch (const zmq::error_t& e) {
    zap_.reset();
    stop_recv_.reset();
    stop_send_.reset();
    return Status::IOError(what_ + ": cannot start the ZAP handler on " + kZapEndpoint + ": " +
                           e.what());
  }
  // The sockets move to the handler thread; starting it is the required memory barrier.
  thread_ = std::thread([this] { Serve(); });
  return Status::Ok();
}

void CurveServer::Configure(zmq::socket_t& socket) const {
  socket.set(zmq::sockopt::curve_server, true);
  socket.set(zmq::sockopt::curve_secretkey, options_.server_secret_key);
  // A domain is not needed for CURVE (libzmq always asks the ZAP handler), but names the endpoint
  // in ZAP requests.
  socket.set(zmq::sockopt::zap_domain, "inferscope");
}

void CurveServer::Stop() {
  if (thread_.joinable()) {
    try {
      stop_send_->send(zmq::str_buffer("stop"), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      spdlog::error("{}: cannot stop the ZAP handler: {}", what_, e.what());
    }
    thread_.join();
  }
  stop_send_.reset();
  stop_recv_.reset();
  zap_.reset();
}

void CurveServer::Serve() {
  std::vector<zmq::message_t> frames;
  zmq::pollitem_t items[] = {{zap_->handle(), 0, ZMQ_POLLIN, 0},
                             {stop_recv_->handle(), 0, ZMQ_POLLIN, 0}};
  try {
    while (true) {
      zmq::poll(items, 2, std::chrono::milliseconds(-1));
      if (items[1].revents & ZMQ_POLLIN) break;
      if ((items[0].revents & ZMQ_POLLIN) == 0) continue;
      frames.clear();
      bool more = true;
      while (more) {
        zmq::message_t frame;
        if (!zap_->recv(frame, zmq::recv_flags::dontwait)) break;
        more = frame.more();
        frames.push_back(std::move(frame));
      }
      Answer(frames);
    }
  } catch (const zmq::error_t& e) {
    if (e.num() != ETERM) spdlog::error("{}: ZAP handler stopped: {}", what_, e.what());
  }
}

void CurveServer::Answer(std::vector<zmq::message_t>& frames) {
  // Request (RFC 27): version, request id, domain, address, routing id, mechanism, credentials.
  std::string request_id = frames.size() > 1 ? frames[1].to_string() : std::string();
  std::string status = "400";
  std::string text = "bad ZAP request";
  std::string user_id;
  std::string address = frames.size() > 3 ? frames[3].to_string() : std::string();
  std::string refused_key;
  if (frames.size() >= 7 && frames[0].to_string_view() == kZapVersion &&
      frames[5].to_string_view() == "CURVE" && frames[6].size() == 32) {
    char z85[kZ85KeyLength + 1] = {};
    zmq_z85_encode(z85, static_cast<const uint8_t*>(frames[6].data()), 32);
    const AuthorizedKeys::Entry* entry = options_.authorized_keys->Find(z85);
    if (entry != nullptr) {
      status = "200";
      text = "OK";
      user_id = entry->public_key;
    } else {
      text = "client key not authorised";
      refused_key = z85;
    }
  } else if (frames.size() >= 6) {
    text = "mechanism " + frames[5].to_string() + " not allowed (CURVE required)";
  }
  if (status == "200") {
    admitted_.fetch_add(1, std::memory_order_relaxed);
  } else {
    failures_->Inc();
    const int64_t now = MonotonicNs();
    if (last_log_ns_ == 0 || now - last_log_ns_ >= kLogIntervalNs) {
      last_log_ns_ = now;
      spdlog::warn("{}: refused a CurveZMQ client from {}{}: {} ({} similar lines suppressed)",
                   what_, address.empty() ? "?" : address,
                   refused_key.empty() ? "" : " with key " + refused_key, text, suppressed_logs_);
      suppressed_logs_ = 0;
    } else {
      ++suppressed_logs_;
    }
  }
  // Reply: version, request id, status code, status text, user id, metadata.
  zap_->send(zmq::buffer(kZapVersion), zmq::send_flags::sndmore);
  zap_->send(zmq::buffer(request_id), zmq::send_flags::sndmore);
  zap_->send(zmq::buffer(status), zmq::send_flags::sndmore);
  zap_->send(zmq::buffer(text), zmq::send_flags::sndmore);
  zap_->send(zmq::buffer(user_id), zmq::send_flags::sndmore);
  zap_->send(zmq::const_buffer(nullptr, 0), zmq::send_flags::none);
}

}  // namespace inferscope
