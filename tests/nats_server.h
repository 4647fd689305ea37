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

  // The path of the nats-server binary, or empty when it is not installed.
  static std::string Binary();

 private:
  std::string log_;
  std::string url_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace inferscope::testing
