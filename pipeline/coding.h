#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "pipeline/int_math.h"

namespace inferscope {

// Byte encodings shared by the stored value types (values/: DDSketch, Aggregate), the state
// store's keys (state/) and checkpoint records (pipeline/checkpoint.h, operators). Every Get* reads
// from the front of `*in`, advances it, and returns false instead of reading past its end.

// LEB128 varint: 7 bits per byte, least significant group first.
inline void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

inline bool GetVarint(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0, i = 0; i < 10; ++i, shift += 7) {
    if (in->empty()) return false;
    const auto byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    if (i == 9 && byte > 1) return false;  // more than 64 bits
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}
// A zigzag-encoded signed varint (int_math.h's ZigZag).
inline bool GetZigZag(std::string_view* in, int64_t* v) {
  uint64_t u = 0;
  if (!GetVarint(in, &u)) return false;
  *v = UnZigZag(u);
  return true;
}

// A double as its 8 IEEE-754 bytes, little-endian.
inline void PutDouble(std::string* out, double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(bits >> (8 * i)));
}

inline bool GetDouble(std::string_view* in, double* d) {
  if (in->size() < 8) return false;
  uint64_t bits = 0;
  for (int i = 0; i < 8; ++i)
    bits |= static_cast<uint64_t>(static_cast<uint8_t>((*in)[i])) << (8 * i);
  in->remove_prefix(8);
  std::memcpy(d, &bits, sizeof(bits));
  return true;
}

// str(x): a 1-byte length followed by the bytes. Names are at most 255 bytes (callers check the
// length first; truncation here only guards the encoding), so a key prefix of str()s selects one
// series exactly.
inline void AppendStr(std::string* out, std::string_view s) {
  size_t n = std::min<size_t>(s.size(), 255);
  out->push_back(static_cast<char>(n));
  out->append(s.data(), n);
}
inline bool GetStr(std::string_view* in, std::string_view* out) {
  if (in->empty()) return false;
  const size_t n = static_cast<unsigned char>((*in)[0]);
  if (in->size() < 1 + n) return false;
  *out = in->substr(1, n);
  in->remove_prefix(1 + n);
  return true;
}
// A varint length, then that many bytes (for fields longer than str()'s 255 bytes).
inline bool GetLengthPrefixed(std::string_view* in, std::string_view* out) {
  uint64_t n = 0;
  if (!GetVarint(in, &n) || n > in->size()) return false;
  *out = in->substr(0, n);
  in->remove_prefix(n);
  return true;
}
// The length of the `n` str()s at the front of `key` (a series key is three: instance, model,
// metric), or npos when they do not fit.
inline size_t StrsLength(std::string_view key, int n) {
  std::string_view rest = key, name;
  for (int i = 0; i < n; ++i) {
    if (!GetStr(&rest, &name)) return std::string_view::npos;
  }
  return key.size() - rest.size();
}

// be64(v): big-endian, so that byte order is numeric order (times in keys sort in time order).
inline void AppendBigEndian64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out->push_back(static_cast<char>((v >> shift) & 0xff));
}
// `v` as 16 lowercase hex digits (ids and fingerprints in the API and the streams).
inline std::string Hex64(uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<size_t>(i)] = kDigits[v & 0xF];
  return out;
}
// Reads be64 from the first 8 bytes of `in` (which must have them).
inline uint64_t ReadBigEndian64(std::string_view in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}
// ordered64(v): be64 of a signed value with its sign bit flipped, so that byte order is signed
// order (pane numbers in checkpoint keys sort in pane order, negative ones first).
inline void AppendOrdered64(std::string* out, int64_t v) {
  AppendBigEndian64(out, static_cast<uint64_t>(v) ^ (uint64_t{1} << 63));
}
// Reads ordered64 from the first 8 bytes of `in` (which must have them).
inline int64_t ReadOrdered64(std::string_view in) {
  return static_cast<int64_t>(ReadBigEndian64(in) ^ (uint64_t{1} << 63));
}

}  // namespace inferscope
