#pragma once

#include "alerting/silence.h"
#include "state/record_table.h"
#include "state/record_table_store.h"

namespace inferscope {

// The SilenceStore of an engine with state: silences in the StateStore's `silences` table
// (kSilencesTable), key the silence id, value its JSON text (SilenceToJson without
// "status").
extern const RecordTable kSilencesTable;  // "silences"
using StateSilenceStore = RecordTableStore<SilenceStore, kSilencesTable>;

}  // namespace inferscope
