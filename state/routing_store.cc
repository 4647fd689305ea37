#include "state/routing_store.h"

#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/coding.h"
#include "pipeline/json_text.h"
#include "routing/published.h"
#include "state/state_store.h"

namespace inferscope {

const RecordTable kRoutingWeightsTable("routing_weights");

std::string RoutingWeightsKey(std::string_view model, routing::Strategy strategy) {
  std::string key;
  AppendStr(&key, model);
  key.push_back(static_cast<char>(strategy));
  return key;
}

void AppendRoutingWeightsWrites(std::span<const routing::RoutingWeights> weights,
                                std::vector<RecordWrite>* writes) {
  writes->reserve(writes->size() + weights.size());
  for (const routing::RoutingWeights& w : weights) {
    writes->push_back({&kRoutingWeightsTable, RoutingWeightsKey(w.model, w.strategy),
                       ToJsonText(routing::WeightsToJson(w))});
  }
}

Status StoreRoutingWeights(StateStore& store, std::span<const routing::RoutingWeights> weights) {
  if (weights.empty()) return Status::Ok();
  std::vector<RecordWrite> writes;
  AppendRoutingWeightsWrites(weights, &writes);
  return store.WriteRecords(writes);
}

Result<std::optional<routing::RoutingWeights>> GetRoutingWeights(const StateStore& store,
                                                                 std::string_view model,
                                                                 routing::Strategy strategy) {
  Result<std::optional<std::string>> value =
      store.GetRecord(kRoutingWeightsTable, RoutingWeightsKey(model, strategy));
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::optional<routing::RoutingWeights>();
  Result<routing::RoutingWeights> w =
      routing::WeightsFromJson(nlohmann::json::parse(**value, nullptr, false));
  if (!w.ok()) return Status::Corruption("routing_weights record: " + w.status().message());
  return std::optional<routing::RoutingWeights>(std::move(w).value());
}

Status ScanRoutingWeights(const StateStore& store, std::string_view model,
                          const std::function<bool(const routing::RoutingWeights&)>& fn,
                          uint64_t* skipped) {
  std::string prefix;
  if (!model.empty()) AppendStr(&prefix, model);
  return store.ScanRecords(
      kRoutingWeightsTable, prefix, "", [&](std::string_view key, std::string_view value) {
        if (!prefix.empty() && key.substr(0, prefix.size()) != prefix) return false;
        Result<routing::RoutingWeights> w =
            routing::WeightsFromJson(nlohmann::json::parse(value, nullptr, false));
        if (!w.ok()) {
          if (skipped != nullptr) ++*skipped;
          return true;
        }
        return fn(*w);
      });
}

}  // namespace inferscope
