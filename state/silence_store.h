#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "alerting/silence.h"
#include "pipeline/status.h"
#include "state/record_table.h"

namespace inferscope {

class StateStore;

// The SilenceStore of an engine with state: silences in the StateStore's `silences` table
// (kSilencesTable), key the silence id, value its JSON text (SilenceToJson without
// "status").
//
// Concurrency: thread-safe (the StateStore is).
extern const RecordTable kSilencesTable;  // "silences"

class StateSilenceStore final : public SilenceStore {
 public:
  // `store` must outlive this object.
  explicit StateSilenceStore(StateStore* store) : store_(store) {}

  Status Scan(const std::function<bool(std::string_view, std::string_view)>& fn) const override;
  Status Put(std::string_view id, std::string json_text) override;
  Status Delete(std::string_view id) override;

 private:
  StateStore* store_;
};

}  // namespace inferscope
