#pragma once

#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

namespace inferscope {

// The compact JSON text of `j`, never throwing on strings that are not valid UTF-8: their bad
// bytes are written as U+FFFD (nlohmann's error_handler_t::replace) instead of raising
// type_error.316. Names and messages come from publishers, files and HTTP clients; every
// serialisation of such data in the engine (sinks, checkpoints, stores, HTTP replies, the CLI)
// goes through here, so no input can make a serialisation throw on a pipeline thread.
inline std::string ToJsonText(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A JSON number, or null when `v` is NaN or infinite (JSON has no such numbers).
inline nlohmann::json JsonNumberOrNull(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
}

}  // namespace inferscope
