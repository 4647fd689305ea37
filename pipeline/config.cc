#include "pipeline/config.h"

#include "pipeline/address.h"

#include <charconv>
#include <cmath>

namespace inferscope {

ConfigNode::ConfigNode(std::string file, YAML::Node node, std::string path)
    : file_(std::move(file)), node_(std::move(node)), path_(std::move(path)) {}

std::string ConfigNode::Location(const YAML::Node& at) const {
  std::string out = file_;
  YAML::Mark mark = at.Mark();
  if (mark.line >= 0) {
    out += ':';
    out += std::to_string(mark.line + 1);
    out += ':';
    out += std::to_string(mark.column + 1);
  }
  return out;
}

std::string ConfigNode::FieldPath(std::string_view field) const {
  if (path_.empty()) return std::string(field);
  if (field.empty()) return path_;
  return path_ + "." + std::string(field);
}

Status ConfigNode::Error(std::string_view field, std::string_view message) const {
  YAML::Node at = node_;
  // reset(), not operator=: assigning to a YAML::Node writes through to the node it refers to,
  // which would replace this mapping with the field's value.
  if (!field.empty() && node_.IsMap() && node_[std::string(field)])
    at.reset(node_[std::string(field)]);
  return Status::InvalidArgument(Location(at) + ": " + FieldPath(field) + ": " +
                                 std::string(message));
}

bool ConfigNode::Has(std::string_view field) const {
  return node_.IsMap() && static_cast<bool>(node_[std::string(field)]);
}

Result<ConfigNode> ConfigNode::Child(std::string_view field) const {
  if (!Has(field)) return ConfigNode(file_, YAML::Node(YAML::NodeType::Map), FieldPath(field));
  YAML::Node child = node_[std::string(field)];
  if (!child.IsMap()) return Error(field, "expected a mapping");
  return ConfigNode(file_, child, FieldPath(field));
}

Status ConfigNode::CheckKnownFields(std::initializer_list<std::string_view> known) const {
  if (!node_.IsDefined() || node_.IsNull()) return Status::Ok();
  if (!node_.IsMap()) return Error("", "expected a mapping");
  for (const auto& kv : node_) {
    std::string key = kv.first.Scalar();
    bool found = false;
    for (std::string_view k : known) found = found || k == key;
    if (!found) {
      std::string allowed;
      for (std::string_view k : known) {
        if (!allowed.empty()) allowed += ", ";
        allowed += k;
      }
      return Status::InvalidArgument(Location(kv.first) + ": " + FieldPath(key) +
                                     ": unknown field (known: " + allowed + ")");
    }
  }
  return Status::Ok();
}

Result<std::string> ConfigNode::GetString(std::string_view field,
                                          std::optional<std::string> default_value) const {
  if (!Has(field)) {
    if (default_value) return *default_value;
    return Error(field, "required field is missing");
  }
  YAML::Node v = node_[std::string(field)];
  if (!v.IsScalar()) return Error(field, "expected a string");
  return v.Scalar();
}

Result<std::string> ConfigNode::GetEndpoint(std::string_view field,
                                            std::optional<std::string> default_value) const {
  Result<std::string> endpoint = GetString(field, std::move(default_value));
  if (!endpoint.ok()) return endpoint.status();
  if (std::optional<std::string> problem = ZmqEndpointProblem(*endpoint))
    return Error(field, *problem);
  return endpoint;
}

Result<int64_t> ConfigNode::GetInt(std::string_view field, std::optional<int64_t> default_value,
                                   int64_t min, int64_t max) const {
  if (!Has(field)) {
    if (default_value) return *default_value;
    return Error(field, "required field is missing");
  }
  YAML::Node v = node_[std::string(field)];
  const std::string& s = v.IsScalar() ? v.Scalar() : std::string();
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (!v.IsScalar() || ec != std::errc() || ptr != s.data() + s.size()) {
    return Error(field, "expected an integer, got '" + s + "'");
  }
  if (out < min || out > max) {
    return Error(field, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                            ", got " + s);
  }
  return out;
}

Result<double> ConfigNode::GetDouble(std::string_view field, std::optional<double> default_value,
                                     double min, double max) const {
  if (!Has(field)) {
    if (default_value) return *default_value;
    return Error(field, "required field is missing");
  }
  YAML::Node v = node_[std::string(field)];
  const std::string& s = v.IsScalar() ? v.Scalar() : std::string();
  double out = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (!v.IsScalar() || ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(out)) {
    return Error(field, "expected a number, got '" + s + "'");
  }
  if (out < min || out > max) {
    return Error(field, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                            ", got " + s);
  }
  return out;
}

Result<bool> ConfigNode::GetBool(std::string_view field, std::optional<bool> default_value) const {
  if (!Has(field)) {
    if (default_value) return *default_value;
    return Error(field, "required field is missing");
  }
  YAML::Node v = node_[std::string(field)];
  const std::string s = v.IsScalar() ? v.Scalar() : std::string();
  if (s == "true" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "no" || s == "off") return false;
  return Error(field, "expected true or false, got '" + s + "'");
}

std::optional<int64_t> ParseDurationMs(std::string_view text) {
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || n < 0) return std::nullopt;
  std::string_view unit(ptr, text.data() + text.size() - ptr);
  int64_t scale = 0;
  if (unit.empty() || unit == "ms") {
    scale = 1;
  } else if (unit == "s") {
    scale = 1000;
  } else if (unit == "m") {
    scale = 60'000;
  } else if (unit == "h") {
    scale = 3'600'000;
  } else if (unit == "d") {
    scale = 86'400'000;
  } else {
    return std::nullopt;
  }
  if (n > INT64_MAX / scale) return std::nullopt;
  return n * scale;
}

Result<int64_t> ConfigNode::GetDurationMs(std::string_view field,
                                          std::optional<int64_t> default_value,
                                          int64_t min_ms) const {
  if (!Has(field)) {
    if (default_value) return *default_value;
    return Error(field, "required field is missing");
  }
  YAML::Node v = node_[std::string(field)];
  std::string s = v.IsScalar() ? v.Scalar() : std::string();
  std::optional<int64_t> ms = v.IsScalar() ? ParseDurationMs(s) : std::nullopt;
  if (!ms) return Error(field, "expected a duration such as 500ms, 10s, 5m or 1h, got '" + s + "'");
  if (*ms < min_ms) {
    return Error(field, "must be at least " + std::to_string(min_ms) + "ms, got '" + s + "'");
  }
  return *ms;
}

Status ReadDouble(const ConfigNode& node, std::string_view field, double* out, double min,
                  double max) {
  Result<double> v = node.GetDouble(field, *out, min, max);
  if (!v.ok()) return v.status();
  *out = *v;
  return Status::Ok();
}

Status ReadInt(const ConfigNode& node, std::string_view field, int64_t* out, int64_t min,
               int64_t max) {
  Result<int64_t> v = node.GetInt(field, *out, min, max);
  if (!v.ok()) return v.status();
  *out = *v;
  return Status::Ok();
}

Status ReadDuration(const ConfigNode& node, std::string_view field, int64_t* out, int64_t min_ms) {
  Result<int64_t> v = node.GetDurationMs(field, *out, min_ms);
  if (!v.ok()) return v.status();
  *out = *v;
  return Status::Ok();
}

Result<std::optional<ConfigNode>> Section(const ConfigNode& node, std::string_view field,
                                          std::initializer_list<std::string_view> known) {
  if (!node.Has(field)) return std::optional<ConfigNode>();
  if (!node.node()[std::string(field)].IsMap()) return node.Error(field, "expected a mapping");
  Result<ConfigNode> child = node.Child(field);
  if (!child.ok()) return child.status();
  INFERSCOPE_RETURN_IF_ERROR(child->CheckKnownFields(known));
  return std::optional<ConfigNode>(std::move(child).value());
}

}  // namespace inferscope
