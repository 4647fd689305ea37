#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace inferscope {

// A table of records other than panes (one RocksDB column family) with its own key scheme, declared
// by the component that owns the records, next to its key scheme:
//
//   const RecordTable kSilencesTable("silences");  // state/silence_store.cc
//
// Every table declared when a StateStore opens exists in it, so adding a result kind that is
// stored adds a declaration beside its writer, not an entry in a central list. Declarations are
// namespace-scope objects (they register during static initialisation, before main); two tables
// with the same name, or a name that is not [a-z0-9_]+, abort at start with a message.
class RecordTable {
 public:
  explicit RecordTable(std::string_view name);
  RecordTable(const RecordTable&) = delete;
  RecordTable& operator=(const RecordTable&) = delete;

  std::string_view name() const { return name_; }
  // Dense, in declaration order: the table's place among the store's record families.
  size_t index() const { return index_; }

  // Every table declared so far, by index.
  static std::span<const RecordTable* const> All();

 private:
  std::string name_;
  size_t index_;
};

}  // namespace inferscope
