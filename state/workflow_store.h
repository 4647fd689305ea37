#pragma once

#include "state/record_table.h"
#include "state/record_table_store.h"
#include "workflows/workflow.h"

namespace inferscope {

// The WorkflowStore of an engine with state: workflows in the StateStore's `workflows` table
// (kWorkflowsTable), key the workflow id, value its JSON text (WorkflowToJson). Not time-keyed:
// WorkflowRegistry deletes terminal workflows after its retention and bounds their count.
extern const RecordTable kWorkflowsTable;  // "workflows"
using StateWorkflowStore = RecordTableStore<WorkflowStore, kWorkflowsTable>;

}  // namespace inferscope
