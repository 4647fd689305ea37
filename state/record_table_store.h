#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "pipeline/status.h"
#include "state/record_table.h"
#include "state/state_store.h"

namespace inferscope {

// An id → JSON-text store over one record table of the StateStore: the shape of the stores the
// registries persist through (SilenceStore, WorkflowStore), implemented once. `Interface` declares
// Scan, Put and Delete as pure virtuals; `kTable` is the owner's table declaration.
//
// On a read-only store (a secondary: the query node) Scan reads what the engine committed, Put
// answers the store's FailedPrecondition, and Delete does nothing and answers OK: the registries
// delete what their retention dropped when they Load, and the engine's registry deletes the same
// records from the store itself.
//
// Concurrency: thread-safe (the StateStore is).
template <typename Interface, const RecordTable& kTable>
class RecordTableStore final : public Interface {
 public:
  // `store` must outlive this object.
  explicit RecordTableStore(StateStore* store) : store_(store) {}

  Status Scan(const std::function<bool(std::string_view, std::string_view)>& fn) const override {
    return store_->ScanRecords(kTable, "", "", fn);
  }
  Status Put(std::string_view id, std::string json_text) override {
    return Write(RecordWrite{&kTable, std::string(id), std::move(json_text)});
  }
  Status Delete(std::string_view id) override {
    if (store_->read_only()) return Status::Ok();
    return Write(RecordWrite{&kTable, std::string(id), std::nullopt});
  }

 private:
  Status Write(const RecordWrite& w) {
    return store_->WriteRecords(std::span<const RecordWrite>(&w, 1));
  }

  StateStore* store_;
};

}  // namespace inferscope
