#include "pipeline/address.h"

#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <system_error>

namespace inferscope {
namespace {

// "'<text>'" — built by appending, since GCC 12 warns falsely (-Wrestrict) on "'" + std::string.
std::string Quoted(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '\'';
  out += text;
  out += '\'';
  return out;
}

// A decimal port in [min, 65535]; nullopt for anything else ("abc", "-1", "99999", "").
std::optional<uint16_t> ParsePort(std::string_view text, int min) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  int port = -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  if (port < min || port > 65535) return std::nullopt;
  return static_cast<uint16_t>(port);
}

// Splits "host:port" at the port's colon; an IPv6 host must be in brackets.
std::optional<std::string> SplitHostPort(std::string_view text, std::string_view* host,
                                         std::string_view* port) {
  size_t colon;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return "an IPv6 host needs a closing ']'";
    if (close + 1 >= text.size() || text[close + 1] != ':') return "expected ':<port>' after ']'";
    colon = close + 1;
  } else {
    colon = text.rfind(':');
    if (colon == std::string_view::npos) return "expected host:port";
    if (text.substr(0, colon).find(':') != std::string_view::npos)
      return "an IPv6 host must be in brackets, e.g. [::1]:8080";
  }
  *host = text.substr(0, colon);
  *port = text.substr(colon + 1);
  if (host->empty()) return "the host is empty";
  return std::nullopt;
}

}  // namespace

Result<HostPort> ParseHostPort(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (std::optional<std::string> problem = SplitHostPort(text, &host, &port)) {
    return Status::InvalidArgument(Quoted(text) + ": " + *problem + ", e.g. 127.0.0.1:8080");
  }
  std::optional<uint16_t> p = ParsePort(port, 0);
  if (!p) {
    return Status::InvalidArgument(Quoted(text) + ": port " + Quoted(port) +
                                   " is not a number in 0..65535 (0 picks a free port)");
  }
  HostPort out;
  out.host = std::string(host);
  if (out.host.size() > 2 && out.host.front() == '[')
    out.host = out.host.substr(1, out.host.size() - 2);
  out.port = *p;
  return out;
}

std::optional<std::string> ZmqEndpointProblem(std::string_view endpoint) {
  const std::string hint = " (expected tcp://host:port, ipc://path or inproc://name)";
  size_t scheme_end = endpoint.find("://");
  if (scheme_end == std::string_view::npos) return Quoted(endpoint) + " has no transport" + hint;
  std::string_view scheme = endpoint.substr(0, scheme_end);
  std::string_view address = endpoint.substr(scheme_end + 3);
  if (scheme == "inproc") {
    if (address.empty()) return "inproc:// needs a name";
    return std::nullopt;
  }
  if (scheme == "ipc") {
    if (address.empty()) return "ipc:// needs a path";
    if (address.size() > 107) return "ipc:// path is longer than 107 bytes (the socket path limit)";
    return std::nullopt;
  }
  if (scheme != "tcp") {
    return "unknown transport " + Quoted(scheme) + hint;
  }
  // libzmq accepts "tcp://source;host:port" for connects; the part that matters is after ';'.
  size_t semicolon = address.find(';');
  if (semicolon != std::string_view::npos) address = address.substr(semicolon + 1);
  std::string_view host;
  std::string_view port;
  if (std::optional<std::string> problem = SplitHostPort(address, &host, &port)) {
    return Quoted(endpoint) + ": " + *problem + ", e.g. tcp://127.0.0.1:5555";
  }
  if (port != "*" && !ParsePort(port, 0)) {
    return Quoted(endpoint) + ": port " + Quoted(port) +
           " is not a number in 0..65535 or '*' (0 and '*' pick a free port)";
  }
  return std::nullopt;
}

std::optional<std::string> StateDirProblem(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) return "the state path is empty";
  std::error_code ec;
  fs::path p(path);
  fs::file_status status = fs::status(p, ec);
  if (fs::exists(status)) {
    if (!fs::is_directory(status)) return Quoted(path) + " exists and is not a directory";
    if (::access(path.c_str(), W_OK | X_OK) != 0) return Quoted(path) + " is not writable";
    return std::nullopt;
  }
  fs::path ancestor = fs::absolute(p, ec).parent_path();
  while (!ancestor.empty() && !fs::exists(ancestor, ec)) {
    if (ancestor == ancestor.root_path()) break;
    ancestor = ancestor.parent_path();
  }
  if (!fs::is_directory(ancestor, ec)) {
    return Quoted(path) + " cannot be created: " + Quoted(ancestor.string()) +
           " is not a directory";
  }
  if (::access(ancestor.c_str(), W_OK | X_OK) != 0) {
    return Quoted(path) + " cannot be created: " + Quoted(ancestor.string()) + " is not writable";
  }
  return std::nullopt;
}

}  // namespace inferscope
