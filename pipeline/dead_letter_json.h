#pragma once

#include <nlohmann/json.hpp>

#include "pipeline/summary.h"

namespace inferscope {

class Interner;

// The JSON form of a dead letter (the event in wire-protocol field names, plus "pub", "reason" and
// "watermark_ms"), as the rocksdb_state sink stores it and the jetstream_results sink publishes it.
nlohmann::json DeadLetterJson(const DeadLetter& dead_letter, const Interner& names);

}  // namespace inferscope
