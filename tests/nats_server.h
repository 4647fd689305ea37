#pragma once

#include <memory>
#include <string>

#include "tests/test_util.h"

namespace inferscope::testing {

// A real nats-server with JetStream (Debian's nats-server 2.9) as a subprocess: on 127.0.0.1, on a
// port it chooses itself and reports in a ports file (no port race), storing in a directory of
// `dir`. The destructor kills it.
class NatsServer {
 public:
  // Starts the server; url() is empty (and Log() says why) when it did not come up.
  explicit NatsServer(const TempDir& dir, const std::string& name = "nats");
  // "nats://127.0.0.1:<port>", or empty when the server is not up.
  const std::string& url() const { return url_; }
  std::string Log() const { return ReadFile(log_); }
  Subprocess& process() { return *process_; }
  // Kills the server (SIGKILL, also when stopped) and starts it again on the same client port and
  // data directory; true once it listens again.
  bool Restart();

  // The path of the nats-server binary, or empty when it is not installed.
  static std::string Binary();

 private:
  std::string root_;
  std::string log_;
  std::string url_;
  std::unique_ptr<Subprocess> process_;
};

// A 3-server NATS cluster with JetStream (real nats-server processes, named n1, n2, n3) on
// 127.0.0.1: client ports chosen by each server and read back from its ports file, route ports
// chosen free (all bound together until the configurations are written, then closed) since each
// server's routes name the others'; a start that fails is tried once more with fresh ports. Each
// server stores in a directory of `dir`. The constructor returns once every server listens and the
// cluster has a JetStream meta leader (JetStream API requests are answered); the destructor kills
// them.
class NatsCluster {
 public:
  static constexpr int kServers = 3;
  explicit NatsCluster(const TempDir& dir, const std::string& name = "cluster");
  // Every client URL, comma-separated (the source's and the publisher's `url`); empty when the
  // cluster did not come up (Log() says why).
  const std::string& urls() const { return urls_; }
  // The client URL of server i (0..2), "" when it did not come up.
  const std::string& url(int i) const { return url_[i]; }
  // The monitoring URL of server i ("http://127.0.0.1:<port>": /connz, /jsz), "" when unknown.
  const std::string& monitor(int i) const { return monitor_[i]; }
  // Server i's name, "n<i+1>".
  static std::string Name(int i) { return std::string("n").append(std::to_string(i + 1)); }
  // The index of the server named `name`, or -1.
  static int Index(const std::string& name);
  Subprocess& process(int i) { return *process_[i]; }
  // Every server's log.
  std::string Log() const;

 private:
  void Start(int attempt);

  std::string root_;
  std::string urls_;
  std::string url_[kServers];
  std::string monitor_[kServers];
  std::unique_ptr<Subprocess> process_[kServers];
};

}  // namespace inferscope::testing
