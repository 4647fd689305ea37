#pragma once

// Reader of the Azure LLM inference trace format (Azure Public Dataset, 2023): a CSV
// `TIMESTAMP,ContextTokens,GeneratedTokens` with a header line, CRLF or LF line ends, timestamps
// `YYYY-MM-DD HH:MM:SS[.fffffff]` (UTC, up to 7 fraction digits) in non-decreasing order.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/status.h"

namespace inferscope::sim {

struct TraceRecord {
  int64_t time_us = 0;            // since the Unix epoch (the trace's 100 ns digits rounded down)
  uint32_t context_tokens = 0;    // >= 1: the prompt
  uint32_t generated_tokens = 0;  // >= 1: the output
};

// Parses a whole trace. `name` is the file name used in errors, which read
// "<name>:<line>: <what>" (lines counted from 1, the header being line 1). A malformed line
// (field count, timestamp, token counts that are not integers in 1..2^31, a timestamp earlier
// than the line before) fails the whole parse: a replay of a damaged trace would mislead.
Result<std::vector<TraceRecord>> ParseAzureTrace(std::string_view text, std::string_view name);

// Reads and parses the file at `path` (errors name it).
Result<std::vector<TraceRecord>> ReadAzureTrace(const std::string& path);

}  // namespace inferscope::sim
