#pragma once

// Shared by the jetstream source (sources/) and JetStreamPublisher (clients/cpp/): the `url` list
// and the connection with failover. Header-only (needs libnats), so neither library depends on the
// other. Not installed.

#include <nats/nats.h>

#include <string>
#include <string_view>
#include <vector>

namespace inferscope::client {

// Splits a comma-separated list of NATS URLs ("nats://a:4222, nats://b:4222"), trimming spaces and
// tabs around each. False with `*error` set when the list is empty or any item is empty (",", " ",
// "a,,b", "a,"): libnats would otherwise fall back to nats://localhost:4222 without a word.
inline bool SplitNatsUrls(std::string_view urls, std::vector<std::string>* out,
                          std::string* error) {
  out->clear();
  size_t start = 0;
  while (true) {
    size_t end = urls.find(',', start);
    if (end == std::string_view::npos) end = urls.size();
    std::string_view url = urls.substr(start, end - start);
    const size_t first = url.find_first_not_of(" \t");
    url = first == std::string_view::npos
              ? std::string_view()
              : url.substr(first, url.find_last_not_of(" \t") + 1 - first);
    if (url.empty()) {
      *error = urls.find_first_not_of(" \t,") == std::string_view::npos
                   ? "no server URL (expected nats://host:port, or several comma-separated)"
                   : "an empty item in the comma-separated list '" + std::string(urls) + "'";
      out->clear();
      return false;
    }
    out->emplace_back(url);
    if (end == urls.size()) return true;
    start = end + 1;
  }
}

// Connects to the first of `urls` (comma-separated, see SplitNatsUrls) that answers, with
// reconnection to any of them (and to the servers the cluster announces) without limit:
// MaxReconnect -1 is unlimited in libnats, where the default (60 attempts, 2 s apart) closes the
// connection for good after two minutes without a server. A reconnect is tried every 250 ms per
// server. `adjust` (may be null) sets more options (callbacks) before connecting. NATS_INVALID_ARG
// for a bad list.
inline natsStatus ConnectWithFailover(natsConnection** conn, const std::string& urls,
                                      const char* name,
                                      natsStatus (*adjust)(natsOptions*, void*) = nullptr,
                                      void* closure = nullptr) {
  constexpr int64_t kReconnectWaitMs = 250;
  std::vector<std::string> servers;
  std::string error;
  if (!SplitNatsUrls(urls, &servers, &error)) return NATS_INVALID_ARG;
  std::vector<const char*> list;
  for (const std::string& s : servers) list.push_back(s.c_str());
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetServers(opts, list.data(), static_cast<int>(list.size()));
  if (s == NATS_OK && name != nullptr) s = natsOptions_SetName(opts, name);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, kReconnectWaitMs);
  if (s == NATS_OK && adjust != nullptr) s = adjust(opts, closure);
  if (s == NATS_OK) s = natsConnection_Connect(conn, opts);
  natsOptions_Destroy(opts);
  return s;
}

}  // namespace inferscope::client
