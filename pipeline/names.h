#pragma once

#include <cstddef>

namespace inferscope {

// The longest name the engine keeps, in bytes: instance, model, metric and publisher ids, rule
// names, and the patterns and globs that match them. The wire decoder enforces it at the source
// (an event with a longer name is rejected with `string_too_long`, a message with a longer
// publisher id with `bad_envelope`; sources may only lower it, through `max_string_bytes`), so
// nothing longer reaches the operators, the state store (whose keys give each name a 1-byte
// length: state/state_store.h) or the streams. The clients check it before sending.
inline constexpr size_t kMaxNameBytes = 255;

}  // namespace inferscope
