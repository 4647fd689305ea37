#include "sources/msgpack_cursor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <msgpack.hpp>

namespace inferscope::wire {
namespace {

template <typename T>
std::string Pack(const T& v) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, v);
  return std::string(buf.data(), buf.size());
}

TEST(MsgpackCursorTest, ReadsScalarsOfEveryEncoding) {
  struct Case {
    std::string bytes;
    Value::Type type;
    uint64_t u = 0;
    int64_t i = 0;
  };
  const std::vector<Case> cases = {
      {Pack(uint64_t{5}), Value::kUint, 5},
      {Pack(uint64_t{200}), Value::kUint, 200},
      {Pack(uint64_t{60'000}), Value::kUint, 60'000},
      {Pack(uint64_t{4'000'000'000}), Value::kUint, 4'000'000'000},
      {Pack(uint64_t{1} << 40), Value::kUint, uint64_t{1} << 40},
      {Pack(int64_t{-3}), Value::kInt, 0, -3},
      {Pack(int64_t{-100}), Value::kInt, 0, -100},
      {Pack(int64_t{-30'000}), Value::kInt, 0, -30'000},
      {Pack(int64_t{-3'000'000'000}), Value::kInt, 0, -3'000'000'000},
      {std::string("\xd0\x05", 2), Value::kUint, 5},  // int8 holding a non-negative value
  };
  for (const Case& c : cases) {
    MsgpackCursor cursor(c.bytes);
    Value v;
    ASSERT_TRUE(cursor.ReadValue(v, 0));
    EXPECT_EQ(v.type, c.type);
    if (c.type == Value::kUint) {
      EXPECT_EQ(v.u, c.u);
    } else {
      EXPECT_EQ(v.i, c.i);
    }
    EXPECT_EQ(cursor.consumed(), c.bytes.size());
    EXPECT_EQ(cursor.stop(), MsgpackCursor::Stop::kNone);
  }
  // The cursor reads the bytes in place: they must outlive it.
  Value d;
  const std::string f64_bytes = Pack(2.5);
  MsgpackCursor f64(f64_bytes);
  ASSERT_TRUE(f64.ReadValue(d, 0));
  EXPECT_EQ(d.type, Value::kFloat);
  EXPECT_EQ(d.d, 2.5);
  const std::string f32_bytes = Pack(1.5f);
  MsgpackCursor f32(f32_bytes);
  ASSERT_TRUE(f32.ReadValue(d, 0));
  EXPECT_EQ(d.d, 1.5);
  for (size_t len : {size_t{3}, size_t{40}, size_t{300}, size_t{70'000}}) {
    const std::string s(len, 'x');
    const std::string bytes = Pack(s);
    MsgpackCursor str(bytes);
    ASSERT_TRUE(str.ReadValue(d, 0));
    EXPECT_EQ(d.type, Value::kStr);
    EXPECT_EQ(d.str(), s);
  }
}

TEST(MsgpackCursorTest, ContainersAndOtherTypesAreSkippedWhole) {
  const std::map<std::string, std::vector<int>> nested = {{"a", {1, 2, 3}}, {"b", {}}};
  const std::string bytes = Pack(nested) + Pack(msgpack::type::nil_t()) + Pack(true);
  MsgpackCursor cursor(bytes);
  Value v;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(cursor.ReadValue(v, 0));
    EXPECT_EQ(v.type, Value::kOther);
  }
  EXPECT_EQ(cursor.consumed(), bytes.size());
}

TEST(MsgpackCursorTest, HeadersAndStrings) {
  const std::string bytes = Pack(std::map<std::string, int>{{"k", 1}});
  MsgpackCursor cursor(bytes);
  uint32_t n = 0;
  EXPECT_EQ(cursor.ArrayHeader(n), MsgpackCursor::kNo);  // cursor unchanged
  ASSERT_EQ(cursor.MapHeader(n), MsgpackCursor::kYes);
  EXPECT_EQ(n, 1u);
  const uint8_t* s = nullptr;
  uint32_t len = 0;
  ASSERT_EQ(cursor.Str(s, len), MsgpackCursor::kYes);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(s), len), "k");
  EXPECT_EQ(cursor.Str(s, len), MsgpackCursor::kNo);  // an integer follows
  Value v;
  ASSERT_TRUE(cursor.ReadValue(v, 1));
  EXPECT_EQ(v.u, 1u);
  EXPECT_EQ(cursor.Left(), 0u);
  EXPECT_EQ(cursor.MapHeader(n), MsgpackCursor::kFailed);
  EXPECT_EQ(cursor.stop(), MsgpackCursor::Stop::kTruncated);
}

TEST(MsgpackCursorTest, StopsOnTruncatedInvalidAndTooDeep) {
  const std::string full = Pack(std::vector<std::string>{"abc", "defgh"});
  for (size_t cut = 0; cut < full.size(); ++cut) {
    MsgpackCursor cursor(std::string_view(full).substr(0, cut));
    EXPECT_FALSE(cursor.Skip(0)) << cut;
    EXPECT_EQ(cursor.stop(), MsgpackCursor::Stop::kTruncated) << cut;
  }
  const std::string reserved("\x92\x01\xc1", 3);  // 0xc1 is never used
  MsgpackCursor invalid(reserved);
  EXPECT_FALSE(invalid.Skip(0));
  EXPECT_EQ(invalid.stop(), MsgpackCursor::Stop::kInvalid);
  EXPECT_EQ(invalid.stopped_at(), 2u);

  // 32 nested arrays are fine at the top level; 33 are too deep.
  const std::string deep32 = std::string(31, '\x91') + std::string("\x90", 1);
  MsgpackCursor ok(deep32);
  EXPECT_TRUE(ok.Skip(0));
  const std::string deep33 = std::string(32, '\x91') + std::string("\x90", 1);
  MsgpackCursor too_deep(deep33);
  EXPECT_FALSE(too_deep.Skip(0));
  EXPECT_EQ(too_deep.stop(), MsgpackCursor::Stop::kTooDeep);
}

TEST(MsgpackCursorTest, CallersMayStopTheWalk) {
  const std::string bytes = Pack(uint64_t{1});
  MsgpackCursor cursor(bytes);
  EXPECT_FALSE(cursor.Fail(MsgpackCursor::Stop::kRefused));
  EXPECT_EQ(cursor.stop(), MsgpackCursor::Stop::kRefused);
  EXPECT_EQ(cursor.stopped_at(), 0u);
}

}  // namespace
}  // namespace inferscope::wire
