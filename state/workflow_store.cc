#include "state/workflow_store.h"

#include <optional>
#include <span>

#include "state/state_store.h"

namespace inferscope {

const RecordTable kWorkflowsTable("workflows");

Status StateWorkflowStore::Scan(
    const std::function<bool(std::string_view, std::string_view)>& fn) const {
  return store_->ScanRecords(kWorkflowsTable, "", "", fn);
}

Status StateWorkflowStore::Put(std::string_view id, std::string json_text) {
  RecordWrite w{&kWorkflowsTable, std::string(id), std::move(json_text)};
  return store_->WriteRecords(std::span<const RecordWrite>(&w, 1));
}

Status StateWorkflowStore::Delete(std::string_view id) {
  RecordWrite w{&kWorkflowsTable, std::string(id), std::nullopt};
  return store_->WriteRecords(std::span<const RecordWrite>(&w, 1));
}

}  // namespace inferscope
