#include "tests/nats_server.h"

#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

namespace inferscope::testing {

std::string NatsServer::Binary() {
  for (const char* path :
       {"/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return "";
}

NatsServer::NatsServer(const TempDir& dir, const std::string& name) {
  const std::string root = dir.str() + "/" + name;
  std::filesystem::create_directories(root + "/ports");
  log_ = root + "/server.log";
  const std::string binary = Binary();
  if (binary.empty()) return;
  process_ = std::make_unique<Subprocess>(
      std::vector<std::string>{binary, "-js", "-sd", root + "/data", "-a", "127.0.0.1", "-p", "-1",
                               "--ports_file_dir", root + "/ports"},
      log_);
  // The ports file appears once the server listens.
  WaitFor([&] {
    if (!process_->Running()) return true;
    for (const auto& entry : std::filesystem::directory_iterator(root + "/ports")) {
      const nlohmann::json ports = nlohmann::json::parse(ReadFile(entry.path()), nullptr, false);
      if (ports.is_object() && ports.contains("nats") && ports["nats"].is_array() &&
          !ports["nats"].empty()) {
        url_ = ports["nats"][0].get<std::string>();
        return true;
      }
    }
    return false;
  });
}

}  // namespace inferscope::testing
