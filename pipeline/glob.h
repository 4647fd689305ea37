#pragma once

#include <string_view>

namespace inferscope {

// `*` and `?` glob match over bytes: `*` matches any run of bytes (also none), `?` any one byte,
// anything else itself. Used by silences (alerting/silence.h) and by the publisher-id globs of
// authorised keys (auth/curve.h). Linear in practice (one backtrack point), no recursion.
bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace inferscope
