#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace inferscope {

namespace utf8_internal {
// Validates [p, end) byte by byte. Out of line: the common case (ASCII names) never gets here.
bool IsValidUtf8Tail(const unsigned char* p, const unsigned char* end);
}  // namespace utf8_internal

// True when `s` is well-formed UTF-8 (RFC 3629, Unicode Table 3-7): no overlong encodings, no
// surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no truncated or stray continuation
// bytes. U+0000 and other control characters are valid. The empty string is valid.
//
// Anything this accepts, nlohmann::json serialises without throwing.
// Performance: ASCII is checked 8 bytes at a time, inline; no allocation.
inline bool IsValidUtf8(std::string_view s) {
  constexpr uint64_t kHigh8 = 0x8080808080808080ull;
  const char* const p = s.data();
  const size_t n = s.size();
  // Is any byte >= 0x80? Whole words, overlapping at the end, OR-ed together without branches.
  bool ascii;
  if (n >= 8) {
    uint64_t acc = 0;
    uint64_t w;
    for (size_t i = 0; i + 8 <= n; i += 8) {
      std::memcpy(&w, p + i, 8);
      acc |= w;
    }
    std::memcpy(&w, p + n - 8, 8);
    ascii = ((acc | w) & kHigh8) == 0;
  } else if (n >= 4) {
    uint32_t a;
    uint32_t b;
    std::memcpy(&a, p, 4);
    std::memcpy(&b, p + n - 4, 4);
    ascii = ((a | b) & 0x80808080u) == 0;
  } else {
    unsigned char acc = 0;
    for (size_t i = 0; i < n; ++i) acc |= static_cast<unsigned char>(p[i]);
    ascii = acc < 0x80;
  }
  if (ascii) [[likely]]
    return true;
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  return utf8_internal::IsValidUtf8Tail(b, b + n);
}

}  // namespace inferscope
