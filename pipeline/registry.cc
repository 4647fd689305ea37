#include "pipeline/registry.h"

namespace inferscope {
namespace {

template <typename T, typename Map>
Result<std::unique_ptr<T>> Create(const Map& map, std::string_view kind, std::string_view type,
                                  const ConfigNode& options) {
  auto it = map.find(type);
  if (it == map.end())
    return Status::NotFound("unknown " + std::string(kind) + " type '" + std::string(type) + "'");
  return it->second.factory(options);
}

template <typename Map>
std::string JoinNames(const Map& map) {
  std::string out;
  for (const auto& [name, entry] : map) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

}  // namespace

void Registry::AddSource(std::string name, std::string description, Factory<Source> factory) {
  sources_[std::move(name)] = {std::move(description), std::move(factory)};
}
void Registry::AddOperator(std::string name, std::string description, Factory<Operator> factory) {
  operators_[std::move(name)] = {std::move(description), std::move(factory)};
}
void Registry::AddSink(std::string name, std::string description, Factory<Sink> factory) {
  sinks_[std::move(name)] = {std::move(description), std::move(factory)};
}

Result<std::unique_ptr<Source>> Registry::CreateSource(std::string_view type,
                                                       const ConfigNode& options) const {
  return Create<Source>(sources_, "source", type, options);
}
Result<std::unique_ptr<Operator>> Registry::CreateOperator(std::string_view type,
                                                           const ConfigNode& options) const {
  return Create<Operator>(operators_, "operator", type, options);
}
Result<std::unique_ptr<Sink>> Registry::CreateSink(std::string_view type,
                                                   const ConfigNode& options) const {
  return Create<Sink>(sinks_, "sink", type, options);
}

std::vector<Registry::Entry> Registry::List() const {
  std::vector<Entry> out;
  for (const auto& [name, r] : sources_) out.push_back({"source", name, r.description});
  for (const auto& [name, r] : operators_) out.push_back({"operator", name, r.description});
  for (const auto& [name, r] : sinks_) out.push_back({"sink", name, r.description});
  return out;
}

std::string Registry::Names(std::string_view kind) const {
  if (kind == "source") return JoinNames(sources_);
  if (kind == "operator") return JoinNames(operators_);
  return JoinNames(sinks_);
}

}  // namespace inferscope
