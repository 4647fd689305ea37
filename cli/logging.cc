#include "cli/logging.h"

#include <time.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <spdlog/formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "pipeline/json_text.h"

namespace inferscope {
namespace {

bool g_json = false;
// The structured fields of the record being logged by this thread (LogFields), read by the JSON
// formatter; the default logger is synchronous, so it formats on the logging thread.
thread_local const nlohmann::json* t_fields = nullptr;

std::string Rfc3339Ms(std::chrono::system_clock::time_point tp) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count();
  const time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

// One JSON object per record: time, level, msg, then the LogFields fields.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    nlohmann::json j = {{"time", Rfc3339Ms(msg.time)},
                        {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                                              spdlog::level::to_string_view(msg.level).size())},
                        {"msg", std::string(msg.payload.data(), msg.payload.size())}};
    if (t_fields != nullptr && t_fields->is_object()) {
      for (const auto& [key, value] : t_fields->items()) {
        if (!j.contains(key)) j[key] = value;
      }
    }
    const std::string text = ToJsonText(j);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

Status ConfigureLogging(std::string_view level, std::string_view format) {
  static const char* const kLevels[] = {"trace", "debug",    "info", "warn",
                                        "error", "critical", "off"};
  bool known = false;
  for (const char* l : kLevels) known = known || level == l;
  if (!known) {
    return Status::InvalidArgument("--log-level: expected one of " + std::string(kLogLevels) +
                                   ", got '" + std::string(level) + "'");
  }
  if (format != "text" && format != "json") {
    return Status::InvalidArgument("--log-format: expected one of " + std::string(kLogFormats) +
                                   ", got '" + std::string(format) + "'");
  }
  spdlog::set_level(spdlog::level::from_str(std::string(level)));
  g_json = format == "json";
  if (g_json) spdlog::default_logger()->set_formatter(std::make_unique<JsonFormatter>());
  return Status::Ok();
}

void LogToStderr() {
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "", std::make_shared<spdlog::sinks::stderr_color_sink_mt>()));
}

bool JsonLogs() { return g_json; }

void LogFields(spdlog::level::level_enum level, std::string_view text,
               const nlohmann::json& fields) {
  if (!spdlog::should_log(level)) return;
  if (g_json) t_fields = &fields;
  spdlog::log(level, "{}", text);
  t_fields = nullptr;
}

}  // namespace inferscope
