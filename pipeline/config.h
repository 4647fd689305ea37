#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <yaml-cpp/yaml.h>

#include "pipeline/status.h"

namespace inferscope {

// ConfigNode is a view of one YAML mapping of a topology (a stage's `options`, say) whose errors
// name the file, the line and the field: "topologies/x.yaml:12:7: sources[0].options.pane: expected
// a duration such as 10s".
//
// A builder makes the same nodes in code (YAML::Node) with file "<builder>" and no line numbers.
class ConfigNode {
 public:
  ConfigNode() : ConfigNode("<builder>", YAML::Node(YAML::NodeType::Map), "") {}
  ConfigNode(std::string file, YAML::Node node, std::string path);

  // Each getter returns the field's value, `default_value` when the field is absent (an error when
  // there is no default), or an InvalidArgument naming file, line and field when it has the wrong
  // type or is out of range.
  Result<std::string> GetString(std::string_view field,
                                std::optional<std::string> default_value = std::nullopt) const;
  Result<int64_t> GetInt(std::string_view field,
                         std::optional<int64_t> default_value = std::nullopt,
                         int64_t min = INT64_MIN, int64_t max = INT64_MAX) const;
  Result<double> GetDouble(std::string_view field,
                           std::optional<double> default_value = std::nullopt, double min = -1e308,
                           double max = 1e308) const;
  Result<bool> GetBool(std::string_view field,
                       std::optional<bool> default_value = std::nullopt) const;
  // A duration in milliseconds: "250ms", "10s", "5m", "1h", "7d", or a bare integer of
  // milliseconds.
  Result<int64_t> GetDurationMs(std::string_view field,
                                std::optional<int64_t> default_value = std::nullopt,
                                int64_t min_ms = 0) const;

  // A ZeroMQ endpoint (tcp://host:port, ipc://path, inproc://name), checked as
  // `ZmqEndpointProblem` does, so a typo fails at load time, not when the socket binds.
  Result<std::string> GetEndpoint(std::string_view field,
                                  std::optional<std::string> default_value = std::nullopt) const;

  bool Has(std::string_view field) const;
  // A child mapping (empty mapping when absent).
  Result<ConfigNode> Child(std::string_view field) const;
  // Fails on the first field not in `known`, so typos in option names are caught.
  Status CheckKnownFields(std::initializer_list<std::string_view> known) const;

  // An InvalidArgument "<file>:<line>:<col>: <path>.<field>: <message>", located at the field when
  // it exists, else at this node.
  Status Error(std::string_view field, std::string_view message) const;

  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }
  const YAML::Node& node() const { return node_; }

 private:
  std::string Location(const YAML::Node& at) const;
  std::string FieldPath(std::string_view field) const;

  std::string file_;
  YAML::Node node_;
  std::string path_;
};

// Options structs hold their defaults in-class; these read an optional field over the default in
// `*out` (kept when the field is absent), with the getters' range checks and file:line errors.
Status ReadDouble(const ConfigNode& node, std::string_view field, double* out, double min,
                  double max = 1e308);
Status ReadInt(const ConfigNode& node, std::string_view field, int64_t* out, int64_t min,
               int64_t max = INT64_MAX);
Status ReadDuration(const ConfigNode& node, std::string_view field, int64_t* out, int64_t min_ms);
// An optional section of the options (a mapping whose fields must all be in `known`), or nullopt
// when absent.
Result<std::optional<ConfigNode>> Section(const ConfigNode& node, std::string_view field,
                                          std::initializer_list<std::string_view> known);

// Parses "250ms", "10s", "5m", "1h", "7d" or a bare integer (milliseconds).
std::optional<int64_t> ParseDurationMs(std::string_view text);

}  // namespace inferscope
