#include "query/response_log.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <system_error>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace inferscope {

ResponseLog* ResponseLog::FromEnvironment() {
  static ResponseLog* const log = []() -> ResponseLog* {
    const char* dir = std::getenv("INFERSCOPE_API_RECORD_DIR");
    if (dir == nullptr || *dir == '\0') return nullptr;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    const std::string path = std::string(dir) + "/api-" + std::to_string(getpid()) + ".jsonl";
    FILE* file = std::fopen(path.c_str(), "a");
    if (file == nullptr) {
      spdlog::warn("INFERSCOPE_API_RECORD_DIR: cannot open {}; responses are not recorded", path);
      return nullptr;
    }
    spdlog::info("recording every API response to {} (INFERSCOPE_API_RECORD_DIR)", path);
    // Lives until exit, so servers stopped late (static destruction order) can still record.
    static ResponseLog instance(file);
    return &instance;
  }();
  return log;
}

void ResponseLog::Record(std::string_view method, const std::string* route, std::string_view path,
                         int status, std::string_view content_type, std::string_view body) {
  nlohmann::json line = {{"method", method},
                         {"route", route != nullptr ? nlohmann::json(*route) : nlohmann::json()},
                         {"path", path},
                         {"status", status},
                         {"content_type", content_type},
                         {"body", body}};
  const std::string text =
      line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> lock(mu_);
  if (records_ >= kMaxRecords) {
    ++dropped_;
    return;
  }
  ++records_;
  std::fwrite(text.data(), 1, text.size(), file_);
  std::fflush(file_);
}

ResponseLog::~ResponseLog() {
  std::lock_guard<std::mutex> lock(mu_);
  if (dropped_ > 0) std::fprintf(file_, "{\"dropped\": %zu}\n", dropped_);
  std::fclose(file_);
}

}  // namespace inferscope
