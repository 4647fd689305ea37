#include "state/record_table.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace inferscope {
namespace {

std::vector<const RecordTable*>& Declared() {
  static std::vector<const RecordTable*> tables;  // constructed on first use: init-order safe
  return tables;
}

[[noreturn]] void Die(std::string_view name, const char* why) {
  std::fprintf(stderr, "record table \"%.*s\": %s\n", static_cast<int>(name.size()), name.data(),
               why);
  std::abort();
}

}  // namespace

RecordTable::RecordTable(std::string_view name) : name_(name), index_(Declared().size()) {
  if (name.empty()) Die(name, "the name is empty");
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
      Die(name, "a name is [a-z0-9_]+");
    }
  }
  // The store's own families (state/state_store.cc) and the rollup tiers' prefix are taken.
  if (name == "default" || name == "panes" || name == "series" || name == "meta" ||
      name.rfind("rollup_", 0) == 0) {
    Die(name, "the name is reserved by the state store");
  }
  for (const RecordTable* t : Declared()) {
    if (t->name() == name) Die(name, "declared twice");
  }
  Declared().push_back(this);
}

RecordTable::RecordTable(std::string_view name, RecordExpiry expiry) : RecordTable(name) {
  if (expiry.default_retention_ms < 0) Die(name, "a retention is >= 0");
  time_keyed_ = true;
  expiry_ = expiry;
}

std::span<const RecordTable* const> RecordTable::All() { return Declared(); }

}  // namespace inferscope
