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
// A write that fails is not held: its error is returned (the registries answer the API request
// with it) after one reopen-and-retry (see Write).
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
  // A failed write is not held (the API request that made it is answered with the error), but it
  // is tried once more: the store reopens itself first (StateStore::Resume), so one transient
  // failure costs nothing.
  Status Write(const RecordWrite& w) {
    const std::span<const RecordWrite> writes(&w, 1);
    Status s = store_->WriteRecords(writes);
    if (s.ok() || s.code() == Status::Code::kInvalidArgument ||
        s.code() == Status::Code::kFailedPrecondition) {
      return s;
    }
    return store_->WriteRecords(writes);
  }

  StateStore* store_;
};

}  // namespace inferscope
