#pragma once

// The one place where routing policies are registered by name (bench/routing/registry.cc). To
// evaluate a new policy (the learner), add a row to the table there; routing_eval runs every
// registered policy in every scenario.

#include <memory>
#include <span>
#include <string_view>

#include "bench/routing/policies.h"
#include "pipeline/status.h"
#include "sim/fleet.h"

namespace inferscope::bench::routing {

struct PolicyInfo {
  std::string_view name;
  std::string_view description;
  std::unique_ptr<sim::Router> (*make)(const PolicyContext& context);
  // Reads the fleet's true state (PolicyContext::utility): a reference, not ranked.
  bool oracle = false;
};

// Every registered policy, in the order of the results table.
std::span<const PolicyInfo> Policies();

// Whether `name` is a registered oracle (PolicyInfo::oracle).
bool IsOracle(std::string_view name);

// The policy `name`, built for `context`; InvalidArgument naming the known policies otherwise.
Result<std::unique_ptr<sim::Router>> MakePolicy(std::string_view name,
                                                const PolicyContext& context);

}  // namespace inferscope::bench::routing
