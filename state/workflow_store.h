#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "pipeline/status.h"
#include "state/record_table.h"
#include "workflows/workflow.h"

namespace inferscope {

class StateStore;

// The WorkflowStore of an engine with state: workflows in the StateStore's `workflows` table
// (kWorkflowsTable), key the workflow id, value its JSON text (WorkflowToJson). Not time-keyed:
// WorkflowRegistry deletes terminal workflows after its retention and bounds their count.
//
// Concurrency: thread-safe (the StateStore is).
extern const RecordTable kWorkflowsTable;  // "workflows"

class StateWorkflowStore final : public WorkflowStore {
 public:
  // `store` must outlive this object.
  explicit StateWorkflowStore(StateStore* store) : store_(store) {}

  Status Scan(const std::function<bool(std::string_view, std::string_view)>& fn) const override;
  Status Put(std::string_view id, std::string json_text) override;
  Status Delete(std::string_view id) override;

 private:
  StateStore* store_;
};

}  // namespace inferscope
