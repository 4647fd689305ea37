#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/status.h"
#include "routing/learner.h"
#include "state/record_table.h"
#include "state/state_store.h"

namespace inferscope {

class StateStore;

// Routing weights in the StateStore, shared by the sink that writes them (rocksdb_routing) and
// the query node that reads them (GET /v1/routing/weights). Values are JSON
// (routing::WeightsToJson).
//
//   routing_weights   key: str(model) u8(strategy)   value: JSON of the latest published weights
//
// One record per (model, strategy): the latest publication; key order groups a model's
// strategies. Records are kept until overwritten (the learner never forgets a model either).

extern const RecordTable kRoutingWeightsTable;  // "routing_weights"

std::string RoutingWeightsKey(std::string_view model, routing::Strategy strategy);

// Writes each publication as the latest of its (model, strategy), in one atomic WriteBatch.
Status StoreRoutingWeights(StateStore& store, std::span<const routing::RoutingWeights> weights);
// The record writes StoreRoutingWeights makes, appended to `*writes`.
void AppendRoutingWeightsWrites(std::span<const routing::RoutingWeights> weights,
                                std::vector<RecordWrite>* writes);
// The latest weights of (model, strategy); nullopt when none were stored.
Result<std::optional<routing::RoutingWeights>> GetRoutingWeights(const StateStore& store,
                                                                 std::string_view model,
                                                                 routing::Strategy strategy);
// Calls `fn` for every stored record of `model` (every model when `model` is empty), in key
// order, until it returns false. Undecodable records are skipped and counted in *skipped.
Status ScanRoutingWeights(const StateStore& store, std::string_view model,
                          const std::function<bool(const routing::RoutingWeights&)>& fn,
                          uint64_t* skipped = nullptr);

}  // namespace inferscope
