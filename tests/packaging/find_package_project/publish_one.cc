// Publishes one request outcome to an engine's acknowledged (`mode: router`) source through the
// installed C++ client and waits for the engine's acknowledgement.
// Usage: publish_one ENDPOINT
#include <iostream>
#include <string>

#include "clients/cpp/acked_publisher.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: publish_one ENDPOINT\n";
    return 2;
  }
  inferscope::client::AckedPublisherOptions options;
  options.endpoint = argv[1];
  options.publisher_id = "find-package-test";
  inferscope::client::AckedPublisher publisher(options);
  std::string error;
  if (!publisher.Connect(&error)) {
    std::cerr << "connect: " << error << "\n";
    return 1;
  }
  inferscope::client::RequestOutcome outcome;
  outcome.instance = "node-1";
  outcome.model = "m1";
  outcome.e2e_ms = 120.0;
  outcome.ttft_ms = 30.0;
  publisher.Request(outcome);
  if (!publisher.WaitAcked(30000)) {
    std::cerr << "not acknowledged: " << publisher.unacked() << " unacked, "
              << publisher.last_error() << "\n";
    return 1;
  }
  std::cout << "acknowledged seq " << publisher.acked_seq() << "\n";
  publisher.Close();
  return 0;
}
