#include "pipeline/result_kind.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace inferscope {
namespace {

struct KindEntry {
  std::string_view name;
  std::string_view description;
  const void* tag = nullptr;
};

struct KindTable {
  std::mutex mu;
  std::array<KindEntry, kMaxResultKinds> entries;
  size_t size = 0;
};

KindTable& Table() {
  static KindTable table;
  return table;
}

[[noreturn]] void Die(const std::string& message) {
  // A kind declaration mistake (a duplicate name, too many kinds) is a programming error found at
  // the kind's first use; nothing could run correctly past it.
  std::fprintf(stderr, "inferscope: result kinds: %s\n", message.c_str());
  std::abort();
}

}  // namespace

namespace kind_internal {

KindId Intern(std::string_view name, std::string_view description, const void* tag) {
  KindTable& t = Table();
  std::lock_guard<std::mutex> lock(t.mu);
  for (size_t i = 0; i < t.size; ++i) {
    if (t.entries[i].name != name) continue;
    if (t.entries[i].tag != tag) {
      Die("two kinds are declared with the name '" + std::string(name) + "'");
    }
    return static_cast<KindId>(i);
  }
  if (name.empty()) Die("a kind is declared with an empty name");
  if (t.size == kMaxResultKinds) {
    Die("more than " + std::to_string(kMaxResultKinds) + " kinds (declaring '" + std::string(name) +
        "'); raise kMaxResultKinds");
  }
  t.entries[t.size] = {name, description, tag};
  return static_cast<KindId>(t.size++);
}

}  // namespace kind_internal

std::string_view KindName(KindId id) {
  KindTable& t = Table();
  std::lock_guard<std::mutex> lock(t.mu);
  return id < t.size ? t.entries[id].name : std::string_view();
}

std::string_view KindDescription(KindId id) {
  KindTable& t = Table();
  std::lock_guard<std::mutex> lock(t.mu);
  return id < t.size ? t.entries[id].description : std::string_view();
}

std::vector<KindId> KnownKinds() {
  KindTable& t = Table();
  std::lock_guard<std::mutex> lock(t.mu);
  std::vector<KindId> out;
  for (size_t i = 0; i < t.size; ++i) out.push_back(static_cast<KindId>(i));
  return out;
}

std::string KindSet::Names() const {
  if (empty()) return "nothing";
  std::string out;
  ForEach([&](KindId id) {
    if (!out.empty()) out += ", ";
    out += KindName(id);
  });
  return out;
}

}  // namespace inferscope
