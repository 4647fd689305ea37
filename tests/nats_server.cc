#include "tests/nats_server.h"

#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace inferscope::testing {
namespace {

// A loopback TCP port nothing listens on, bound by `*fd` (0 on failure): the caller keeps it bound
// while choosing other ports (no duplicates) and closes it just before the server binds it.
int FreeLoopbackPort(int* fd_out) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  *fd_out = fd;
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  return port;
}

// The first `kind` URL ("nats": client, "monitoring") in the ports files of `ports_dir`, or "".
std::string ClientUrl(const std::string& ports_dir, const char* kind = "nats") {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(ports_dir, ec)) {
    const nlohmann::json ports = nlohmann::json::parse(ReadFile(entry.path()), nullptr, false);
    if (ports.is_object() && ports.contains(kind) && ports[kind].is_array() &&
        !ports[kind].empty()) {
      return ports[kind][0].get<std::string>();
    }
  }
  return "";
}

// True when a JetStream API request through `urls` is answered (the meta leader is elected).
bool JetStreamAnswers(const std::string& urls) {
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  bool ok = false;
  if (natsConnection_ConnectTo(&conn, urls.c_str()) == NATS_OK &&
      natsConnection_JetStream(&js, conn, nullptr) == NATS_OK) {
    jsAccountInfo* info = nullptr;
    if (js_GetAccountInfo(&info, js, nullptr, nullptr) == NATS_OK) {
      ok = true;
      jsAccountInfo_Destroy(info);
    }
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (conn != nullptr) natsConnection_Destroy(conn);
  return ok;
}

}  // namespace

std::string NatsServer::Binary() {
  for (const char* path :
       {"/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return "";
}

NatsServer::NatsServer(const TempDir& dir, const std::string& name) {
  root_ = dir.str() + "/" + name;
  const std::string& root = root_;
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
    url_ = ClientUrl(root + "/ports");
    return !url_.empty();
  });
}

bool NatsServer::Restart() {
  if (process_ == nullptr || url_.empty()) return false;
  const std::string port = url_.substr(url_.rfind(':') + 1);
  process_->Signal(SIGKILL);
  process_->Wait();
  std::filesystem::remove_all(root_ + "/ports");
  std::filesystem::create_directories(root_ + "/ports");
  process_ = std::make_unique<Subprocess>(
      std::vector<std::string>{Binary(), "-js", "-sd", root_ + "/data", "-a", "127.0.0.1", "-p",
                               port, "--ports_file_dir", root_ + "/ports"},
      log_);
  return WaitFor([&] { return !process_->Running() || !ClientUrl(root_ + "/ports").empty(); }) &&
         process_->Running();
}

int NatsCluster::Index(const std::string& name) {
  for (int i = 0; i < kServers; ++i) {
    if (Name(i) == name) return i;
  }
  return -1;
}

std::string NatsCluster::Log() const {
  std::string out;
  for (int i = 0; i < kServers; ++i) {
    const std::string log = root_ + "/" + Name(i) + "/server.log";
    out.append("--- ").append(Name(i)).append(" (").append(log).append(")\n");
    out.append(ReadFile(log));
  }
  return out;
}

NatsCluster::NatsCluster(const TempDir& dir, const std::string& name)
    : root_(dir.str() + "/" + name) {
  // A route port taken by another process between its choice and the server's bind fails the
  // start: tried once more with fresh ports.
  for (int attempt = 0; attempt < 2 && urls_.empty(); ++attempt) Start(attempt);
}

void NatsCluster::Start(int attempt) {
  const std::string binary = NatsServer::Binary();
  if (binary.empty()) return;
  for (int i = 0; i < kServers; ++i) {
    if (process_[i] != nullptr) {
      process_[i]->Signal(SIGKILL);
      process_[i]->Wait();
      process_[i].reset();
    }
    url_[i].clear();
    monitor_[i].clear();
  }
  int route_port[kServers];
  int fd[kServers];
  bool ok = true;
  for (int i = 0; i < kServers; ++i) {
    route_port[i] = FreeLoopbackPort(&fd[i]);
    ok = ok && route_port[i] != 0;
  }
  std::string routes;
  for (int i = 0; i < kServers; ++i) {
    if (i > 0) routes.append(", ");
    routes.append("nats-route://127.0.0.1:");
    routes.append(std::to_string(route_port[i]));
  }
  for (int i = 0; i < kServers; ++i) {
    const std::string home = root_ + "/" + Name(i);
    std::filesystem::remove_all(home + "/ports");
    std::filesystem::create_directories(home + "/ports");
    std::ofstream(home + "/server.conf")
        << "server_name: " << Name(i) << "\n"
        << "listen: 127.0.0.1:-1\n"
        << "http: 127.0.0.1:-1\n"
        << "ports_file_dir: \"" << home << "/ports\"\n"
        << "jetstream { store_dir: \"" << home << "/data\" }\n"
        << "cluster {\n  name: inferscope-test\n  listen: 127.0.0.1:" << route_port[i]
        << "\n  routes: [" << routes << "]\n}\n";
  }
  for (int i = 0; i < kServers; ++i) {
    if (fd[i] >= 0) ::close(fd[i]);
  }
  if (!ok) return;
  for (int i = 0; i < kServers; ++i) {
    const std::string home = root_ + "/" + Name(i);
    if (attempt > 0) std::filesystem::remove_all(home + "/data");
    process_[i] = std::make_unique<Subprocess>(
        std::vector<std::string>{binary, "-c", home + "/server.conf"}, home + "/server.log");
  }
  for (int i = 0; i < kServers; ++i) {
    WaitFor([&] {
      if (!process_[i]->Running()) return true;
      url_[i] = ClientUrl(root_ + "/" + Name(i) + "/ports");
      monitor_[i] = ClientUrl(root_ + "/" + Name(i) + "/ports", "monitoring");
      return !url_[i].empty() && !monitor_[i].empty();
    });
    if (url_[i].empty()) return;
  }
  const std::string all = url_[0] + "," + url_[1] + "," + url_[2];
  // Routes connect and the meta leader is elected within seconds; generous on a loaded machine.
  if (WaitFor([&] { return JetStreamAnswers(all); }, std::chrono::seconds(60))) urls_ = all;
}

}  // namespace inferscope::testing
