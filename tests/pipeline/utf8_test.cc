#include "pipeline/utf8.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/json_text.h"

namespace inferscope {
namespace {

// The definition, by decoding code points (RFC 3629): written independently of IsValidUtf8.
bool Reference(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    int more;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      more = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      more = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      more = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    for (int k = 1; k <= more; ++k) {
      if (i + k >= s.size() || (static_cast<uint8_t>(s[i + k]) & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3f);
    }
    const uint32_t min = more == 1 ? 0x80 : more == 2 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += static_cast<size_t>(more) + 1;
  }
  return true;
}

// Whether nlohmann::json's strict serialisation accepts `s` (it throws type_error.316 if not).
bool NlohmannAccepts(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

TEST(Utf8Test, KnownStrings) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("vllm-1"));
  EXPECT_TRUE(IsValidUtf8(std::string_view("a\0b", 3)));  // U+0000 is a character
  EXPECT_TRUE(IsValidUtf8("n\xc5\x93ud"));                // U+0153
  EXPECT_TRUE(IsValidUtf8("\xe6\xa8\xa1\xe5\x9e\x8b"));   // CJK
  EXPECT_TRUE(IsValidUtf8("\xef\xbf\xbd"));               // U+FFFD
  EXPECT_TRUE(IsValidUtf8("\xf0\x9f\x9a\x80"));           // U+1F680
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));           // U+10FFFF
  EXPECT_TRUE(IsValidUtf8("\xed\x9f\xbf"));               // U+D7FF
  EXPECT_TRUE(IsValidUtf8("\xee\x80\x80"));               // U+E000

  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\x80"));                  // stray continuation
  EXPECT_FALSE(IsValidUtf8("\xc3"));                  // truncated
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));              // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xc1\xbf"));              // overlong
  EXPECT_FALSE(IsValidUtf8("\xe0\x80\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xf0\x80\x80\xaf"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));          // U+D800, a surrogate
  EXPECT_FALSE(IsValidUtf8("\xed\xbf\xbf"));          // U+DFFF
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));      // U+110000
  EXPECT_FALSE(IsValidUtf8("\xf5\x80\x80\x80"));      // lead byte beyond F4
  EXPECT_FALSE(IsValidUtf8("\xf8\x88\x80\x80\x80"));  // 5-byte form
  EXPECT_FALSE(IsValidUtf8("\xc3\x28"));              // continuation missing
}

// A bad byte is found wherever it sits relative to the 8-byte words of the ASCII check, including
// the overlapping last word and the short-string paths.
TEST(Utf8Test, BadByteAtEveryPosition) {
  for (size_t len = 1; len <= 40; ++len) {
    for (size_t at = 0; at < len; ++at) {
      std::string s(len, 'a');
      s[at] = '\xff';
      EXPECT_FALSE(IsValidUtf8(s)) << "len " << len << " at " << at;
      s[at] = '\x7f';
      EXPECT_TRUE(IsValidUtf8(s)) << "len " << len << " at " << at;
      if (at + 1 < len) {
        s[at] = '\xc3';
        s[at + 1] = '\xa9';
        EXPECT_TRUE(IsValidUtf8(s)) << "len " << len << " at " << at;
      }
    }
  }
}

// Every string of 1, 2 and 3 bytes, against the definition.
TEST(Utf8Test, AllShortStringsMatchTheDefinition) {
  std::string s;
  for (int a = 0; a < 256; ++a) {
    s.assign(1, static_cast<char>(a));
    ASSERT_EQ(IsValidUtf8(s), Reference(s)) << a;
    for (int b = 0; b < 256; ++b) {
      s.assign({static_cast<char>(a), static_cast<char>(b)});
      ASSERT_EQ(IsValidUtf8(s), Reference(s)) << a << " " << b;
      s.push_back('\0');
      for (int c = 0; c < 256; ++c) {
        s[2] = static_cast<char>(c);
        if (IsValidUtf8(s) != Reference(s)) FAIL() << a << " " << b << " " << c;
      }
    }
  }
}

// Random strings built from interesting bytes, against the definition and against nlohmann: what
// IsValidUtf8 accepts, nlohmann serialises; what it rejects, nlohmann would throw on.
TEST(Utf8Test, RandomStringsMatchTheDefinitionAndNlohmann) {
  const uint8_t bytes[] = {'a',  'z',  0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf,
                           0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef,
                           0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xf8, 0xfe, 0xff};
  std::mt19937_64 rng(42);
  int valid = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string s(rng() % 24, 'x');
    for (char& c : s) {
      c = rng() % 3 == 0 ? static_cast<char>(bytes[rng() % std::size(bytes)])
                         : static_cast<char>(rng() % 128);
    }
    const bool want = Reference(s);
    ASSERT_EQ(IsValidUtf8(s), want) << ToJsonText(nlohmann::json(s));
    if (i % 10 == 0) {
      ASSERT_EQ(NlohmannAccepts(s), want);
    }
    valid += want;
  }
  EXPECT_GT(valid, 10000);  // both outcomes are exercised
  EXPECT_LT(valid, 190000);
}

TEST(JsonTextTest, ReplacesInvalidUtf8InsteadOfThrowing) {
  nlohmann::json j = {{"instance", std::string("vllm-\xff")}, {"key\xc3", 1.0}};
  EXPECT_THROW((void)j.dump(), nlohmann::json::type_error);
  const std::string text = ToJsonText(j);
  EXPECT_EQ(text, "{\"instance\":\"vllm-\xef\xbf\xbd\",\"key\xef\xbf\xbd\":1.0}");
  EXPECT_TRUE(IsValidUtf8(text));
  EXPECT_EQ(ToJsonText(nlohmann::json("n\xc5\x93ud")), "\"n\xc5\x93ud\"");
}

}  // namespace
}  // namespace inferscope
