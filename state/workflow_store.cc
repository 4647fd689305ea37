#include "state/workflow_store.h"

namespace inferscope {

const RecordTable kWorkflowsTable("workflows");

}  // namespace inferscope
