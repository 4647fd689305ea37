#pragma once

#include <string>
#include <string_view>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "pipeline/status.h"

namespace inferscope {

// The process's log: spdlog's default logger, on stderr, configured once by main() from the global
// flags `--log-level` and `--log-format`.
//
// Formats: `text` (spdlog's default pattern, one line per record) and `json` (one JSON object per
// line: {"time": RFC 3339 UTC with ms, "level", "msg", plus the record's structured fields}, for
// log shippers). Nothing on a hot path logs per event; the status log (cli/status_log.h) is the
// periodic summary.

inline constexpr std::string_view kLogLevels = "trace, debug, info, warn, error, critical, off";
inline constexpr std::string_view kLogFormats = "text, json";

// Makes the default logger write to stderr, as every Unix tool's diagnostics: stdout carries a
// command's output (keygen's public key, query and report results), and `cmd >/dev/null` must not
// hide an error. main() calls it first.
void LogToStderr();

// Applies the level and format; InvalidArgument naming the allowed values when one is unknown.
Status ConfigureLogging(std::string_view level, std::string_view format);

// True when --log-format json is in effect.
bool JsonLogs();

// Logs one record: `text` is the line a person reads (the "msg" in JSON); in json format the
// object also carries `fields` (a JSON object, e.g. {"event": "status", "events_in_per_s": ...})
// at its top level, so a log shipper needs not parse the text.
void LogFields(spdlog::level::level_enum level, std::string_view text,
               const nlohmann::json& fields);

}  // namespace inferscope
