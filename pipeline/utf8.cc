#include "pipeline/utf8.h"

namespace inferscope::utf8_internal {

bool IsValidUtf8Tail(const unsigned char* p, const unsigned char* end) {
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    // Well-formed sequences (Unicode Table 3-7): the lead byte fixes the length and the range of
    // the second byte; further bytes are 80..BF.
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;  // range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;  // no overlongs
      if (c == 0xed) hi = 0x9f;  // no surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c == 0xf0) lo = 0x90;  // no overlongs
      if (c == 0xf4) hi = 0x8f;  // nothing above U+10FFFF
    } else {
      return false;  // 80..C1 (continuation or overlong lead), F5..FF
    }
    if (static_cast<size_t>(end - p) < len) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (size_t i = 2; i < len; ++i) {
      if ((p[i] & 0xc0) != 0x80) return false;
    }
    p += len;
  }
  return true;
}

}  // namespace inferscope::utf8_internal
