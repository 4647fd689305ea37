#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

// A bounds-checked cursor over MessagePack bytes, the reading half of the wire decoder
// (sources/wire_decoder.cc). Header-only and inline on purpose: the decoder's per-event loops call
// these primitives for every key and value (about 1,000 instructions per event in total), so they
// must inline into them exactly as they did when they were members of the decoder.

namespace inferscope::wire {

// Big-endian loads (msgpack) and little-endian loads (key matching, hashing) from unaligned bytes.
static_assert(std::endian::native == std::endian::little,
              "the loads below assume a little-endian host");
inline uint16_t LoadBe16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return __builtin_bswap16(v);
}
inline uint32_t LoadBe32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}
inline uint64_t LoadBe64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return __builtin_bswap64(v);
}
inline uint64_t LoadLe64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t LoadLe32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// One scalar as it appeared on the wire. Negative integers are kInt; non-negative ones are kUint
// whatever their msgpack width or signedness. kOther: nil, bool, bin, ext or a container. Only the
// member that `type` names is meaningful.
struct Value {
  enum Type : uint8_t { kUint, kInt, kFloat, kStr, kOther };
  Type type = kOther;
  uint32_t len = 0;  // kStr
  union {
    uint64_t u = 0;  // kUint
    int64_t i;       // kInt
    double d;        // kFloat
    const char* s;   // kStr
  };
  std::string_view str() const { return {s, len}; }

  void SetUint(uint64_t v) {
    type = kUint;
    u = v;
  }
  // Non-negative values become kUint.
  void SetInt(int64_t v) {
    if (v >= 0) {
      SetUint(static_cast<uint64_t>(v));
    } else {
      type = kInt;
      i = v;
    }
  }
};

// MsgpackCursor reads one MessagePack byte string front to back: headers, whole scalars, and
// whole values of any shape skipped without recursion.
//
// Every read checks the bytes left first. A failed check stops the cursor (stop() says why, and
// stopped_at() where) with the verdict and at the stream position a generic msgpack parser would
// give: truncated input, the reserved byte 0xc1, or nesting deeper than kMaxDepth. Callers may
// stop it themselves for a limit of their own (Fail(Stop::kRefused)). After a stop, results are
// meaningless and the caller unwinds.
//
// Hot loops that have checked enough bytes ahead may read through pos()/end() themselves and move
// the cursor with set_pos() (the decoder's event-map fast path does).
// Concurrency: a value type; one per decode.
class MsgpackCursor {
 public:
  // Deeper nesting stops the cursor (kTooDeep). The top-level value is at depth 1.
  static constexpr int kMaxDepth = 32;

  enum class Stop : uint8_t {
    kNone,
    kTruncated,  // the bytes end inside a value
    kInvalid,    // the reserved byte 0xc1
    kTooDeep,    // nesting deeper than kMaxDepth
    kRefused,    // the caller stopped the walk (Fail) for a limit of its own
  };
  // What a typed read found: the type asked for (kYes, cursor past it), another type (kNo,
  // cursor unchanged), or a stop (kFailed).
  enum Got : uint8_t { kYes, kNo, kFailed };

  explicit MsgpackCursor(std::string_view bytes)
      : begin_(reinterpret_cast<const uint8_t*>(bytes.data())),
        p_(begin_),
        end_(begin_ + bytes.size()) {}

  Stop stop() const { return stop_; }
  size_t stopped_at() const { return stopped_at_; }
  size_t consumed() const { return static_cast<size_t>(p_ - begin_); }
  size_t Left() const { return static_cast<size_t>(end_ - p_); }
  const uint8_t* pos() const { return p_; }
  const uint8_t* end() const { return end_; }
  void set_pos(const uint8_t* p) { p_ = p; }

  // Stops the cursor; always false, so that callers can `return Fail(...)`.
  bool Fail(Stop why) {
    stop_ = why;
    stopped_at_ = consumed();
    return false;
  }
  // True when at least `n` bytes are left; else stops (truncated).
  bool Need(uint64_t n) { return Left() >= n || Fail(Stop::kTruncated); }

  // A map header: kYes with its pair count.
  Got MapHeader(uint32_t& n) {
    if (!Need(1)) return kFailed;
    const uint8_t b = *p_;
    if ((b & 0xf0) == 0x80) {
      n = b & 0x0f;
      p_ += 1;
      return kYes;
    }
    if (b == 0xde) {
      if (!Need(3)) return kFailed;
      n = LoadBe16(p_ + 1);
      p_ += 3;
      return kYes;
    }
    if (b == 0xdf) {
      if (!Need(5)) return kFailed;
      n = LoadBe32(p_ + 1);
      p_ += 5;
      return kYes;
    }
    return kNo;
  }

  // An array header: kYes with its element count.
  Got ArrayHeader(uint32_t& n) {
    if (!Need(1)) return kFailed;
    const uint8_t b = *p_;
    if ((b & 0xf0) == 0x90) {
      n = b & 0x0f;
      p_ += 1;
      return kYes;
    }
    if (b == 0xdc) {
      if (!Need(3)) return kFailed;
      n = LoadBe16(p_ + 1);
      p_ += 3;
      return kYes;
    }
    if (b == 0xdd) {
      if (!Need(5)) return kFailed;
      n = LoadBe32(p_ + 1);
      p_ += 5;
      return kYes;
    }
    return kNo;
  }

  // A whole str: kYes with its bytes (pointing into the input).
  Got Str(const uint8_t*& s, uint32_t& n) {
    if (!Need(1)) return kFailed;
    const uint8_t b = *p_;
    uint32_t header;
    if ((b & 0xe0) == 0xa0) {
      n = b & 0x1f;
      header = 1;
    } else if (b == 0xd9) {
      if (!Need(2)) return kFailed;
      n = p_[1];
      header = 2;
    } else if (b == 0xda) {
      if (!Need(3)) return kFailed;
      n = LoadBe16(p_ + 1);
      header = 3;
    } else if (b == 0xdb) {
      if (!Need(5)) return kFailed;
      n = LoadBe32(p_ + 1);
      header = 5;
    } else {
      return kNo;
    }
    if (!Need(uint64_t{header} + n)) return kFailed;
    s = p_ + header;
    p_ += header + n;
    return kYes;
  }

  // Reads the value at the cursor into `v`: a scalar, or kOther for nil/bool/bin/ext and for a
  // container, which is skipped. `depth`: the containers enclosing the value. False on a stop.
  [[gnu::always_inline]] bool ReadValue(Value& v, int depth) {
    if (!Need(1)) return false;
    const uint8_t b = *p_;
    if (b <= 0x7f) {  // positive fixint
      v.type = Value::kUint;
      v.u = b;
      p_ += 1;
      return true;
    }
    if ((b & 0xe0) == 0xa0) {  // fixstr
      const uint32_t n = b & 0x1f;
      if (!Need(1 + uint64_t{n})) return false;
      v.type = Value::kStr;
      v.s = reinterpret_cast<const char*>(p_ + 1);
      v.len = n;
      p_ += 1 + n;
      return true;
    }
    if (b >= 0xe0) {  // negative fixint
      v.type = Value::kInt;
      v.i = static_cast<int8_t>(b);
      p_ += 1;
      return true;
    }
    switch (b) {
      case 0xcb:  // float64
        if (!Need(9)) return false;
        v.type = Value::kFloat;
        v.d = std::bit_cast<double>(LoadBe64(p_ + 1));
        p_ += 9;
        return true;
      case 0xca:  // float32
        if (!Need(5)) return false;
        v.type = Value::kFloat;
        v.d = static_cast<double>(std::bit_cast<float>(LoadBe32(p_ + 1)));
        p_ += 5;
        return true;
      case 0xcc:  // uint8..64
        if (!Need(2)) return false;
        v.SetUint(p_[1]);
        p_ += 2;
        return true;
      case 0xcd:
        if (!Need(3)) return false;
        v.SetUint(LoadBe16(p_ + 1));
        p_ += 3;
        return true;
      case 0xce:
        if (!Need(5)) return false;
        v.SetUint(LoadBe32(p_ + 1));
        p_ += 5;
        return true;
      case 0xcf:
        if (!Need(9)) return false;
        v.SetUint(LoadBe64(p_ + 1));
        p_ += 9;
        return true;
      case 0xd0:  // int8..64: non-negative values are unsigned
        if (!Need(2)) return false;
        v.SetInt(static_cast<int8_t>(p_[1]));
        p_ += 2;
        return true;
      case 0xd1:
        if (!Need(3)) return false;
        v.SetInt(static_cast<int16_t>(LoadBe16(p_ + 1)));
        p_ += 3;
        return true;
      case 0xd2:
        if (!Need(5)) return false;
        v.SetInt(static_cast<int32_t>(LoadBe32(p_ + 1)));
        p_ += 5;
        return true;
      case 0xd3:
        if (!Need(9)) return false;
        v.SetInt(static_cast<int64_t>(LoadBe64(p_ + 1)));
        p_ += 9;
        return true;
      case 0xd9:
      case 0xda:
      case 0xdb: {
        const uint8_t* s = nullptr;
        uint32_t n = 0;
        if (Str(s, n) == kFailed) return false;
        v.type = Value::kStr;
        v.s = reinterpret_cast<const char*>(s);
        v.len = n;
        return true;
      }
      default:
        v.type = Value::kOther;
        return Skip(depth);
    }
  }

  // Skips one whole value of any type; `depth`: the containers enclosing it. Iterative: the stack
  // holds, per open container, the values left in its parent. False on a stop.
  [[gnu::noinline]] bool Skip(int depth) {
    std::array<uint64_t, kMaxDepth + 1> parent_left;
    int open = 0;
    uint64_t left = 1;
    for (;;) {
      while (left == 0) {
        if (open == 0) return true;
        left = parent_left[--open];
      }
      --left;
      const int64_t children = SkipHeader();
      if (children == kScalar) continue;
      if (children == kBroken) return false;
      if (depth + open + 1 > kMaxDepth) return Fail(Stop::kTooDeep);
      parent_left[open++] = left;
      left = static_cast<uint64_t>(children);
    }
  }

 private:
  // Skips one header at the cursor: a whole scalar (returns kScalar), or a container's header
  // (returns how many values it holds, keys and values for a map). kBroken on a stop.
  static constexpr int64_t kScalar = -1;
  static constexpr int64_t kBroken = -2;
  int64_t SkipHeader() {
    if (!Need(1)) return kBroken;
    const uint8_t b = *p_;
    uint64_t size = 1;  // of a scalar, header included
    if (b <= 0x7f || b >= 0xe0) {
      size = 1;
    } else if (b <= 0x8f) {
      p_ += 1;
      return 2 * int64_t{b & 0x0f};
    } else if (b <= 0x9f) {
      p_ += 1;
      return b & 0x0f;
    } else if (b <= 0xbf) {
      size = 1 + uint64_t{b & 0x1fu};
    } else {
      switch (b) {
        case 0xc0:  // nil, false, true
        case 0xc2:
        case 0xc3:
          size = 1;
          break;
        case 0xc1:
          Fail(Stop::kInvalid);
          return kBroken;
        case 0xc4:  // bin8, str8
        case 0xd9:
          if (!Need(2)) return kBroken;
          size = 2 + uint64_t{p_[1]};
          break;
        case 0xc5:  // bin16, str16
        case 0xda:
          if (!Need(3)) return kBroken;
          size = 3 + uint64_t{LoadBe16(p_ + 1)};
          break;
        case 0xc6:  // bin32, str32
        case 0xdb:
          if (!Need(5)) return kBroken;
          size = 5 + uint64_t{LoadBe32(p_ + 1)};
          break;
        case 0xc7:  // ext8/16/32: length, type byte, data
          if (!Need(2)) return kBroken;
          size = 3 + uint64_t{p_[1]};
          break;
        case 0xc8:
          if (!Need(3)) return kBroken;
          size = 4 + uint64_t{LoadBe16(p_ + 1)};
          break;
        case 0xc9:
          if (!Need(5)) return kBroken;
          size = 6 + uint64_t{LoadBe32(p_ + 1)};
          break;
        case 0xca:  // float32, uint32, int32
        case 0xce:
        case 0xd2:
          size = 5;
          break;
        case 0xcb:  // float64, uint64, int64
        case 0xcf:
        case 0xd3:
          size = 9;
          break;
        case 0xcc:  // uint8, int8
        case 0xd0:
          size = 2;
          break;
        case 0xcd:  // uint16, int16
        case 0xd1:
          size = 3;
          break;
        case 0xd4:  // fixext 1/2/4/8/16: type byte, data
          size = 3;
          break;
        case 0xd5:
          size = 4;
          break;
        case 0xd6:
          size = 6;
          break;
        case 0xd7:
          size = 10;
          break;
        case 0xd8:
          size = 18;
          break;
        case 0xdc:  // array16/32
          if (!Need(3)) return kBroken;
          p_ += 3;
          return LoadBe16(p_ - 2);
        case 0xdd:
          if (!Need(5)) return kBroken;
          p_ += 5;
          return LoadBe32(p_ - 4);
        case 0xde:  // map16/32
          if (!Need(3)) return kBroken;
          p_ += 3;
          return 2 * int64_t{LoadBe16(p_ - 2)};
        case 0xdf:
          if (!Need(5)) return kBroken;
          p_ += 5;
          return 2 * int64_t{LoadBe32(p_ - 4)};
      }
    }
    if (!Need(size)) return kBroken;
    p_ += size;
    return kScalar;
  }

  const uint8_t* const begin_;
  const uint8_t* p_;
  const uint8_t* const end_;
  Stop stop_ = Stop::kNone;
  size_t stopped_at_ = 0;
};

}  // namespace inferscope::wire
