#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/status.h"

namespace inferscope {

class StateStore;
struct RecordWrite;

// How the records of a time-keyed table expire. Every key of such a table starts with the record's
// time as be64(milliseconds since the epoch), so records are in time order and "older than T" is a
// key range; StateStore::RunMaintenance deletes the records older than the table's retention
// (docs/RETENTION.md, "Record tables").
struct RecordExpiry {
  // Kept this long after the time in its key (default for the table; the topology's
  // `state.record_retention` overrides it). 0 keeps records forever.
  int64_t default_retention_ms = 0;
  // Optional: called for each record about to expire, before it is deleted, with the cutoff (the
  // records older than it expire). May append writes (deletes of records that only make sense
  // with it) to `writes`; they are applied in the same atomic batch as the expiry. Runs under the
  // store's record-write lock, so no record write interleaves between its reads and the batch.
  using Hook = Status (*)(const StateStore& store, std::string_view key, std::string_view value,
                          int64_t cutoff_ms, std::vector<RecordWrite>* writes);
  Hook on_expire = nullptr;
};

// A table of records other than panes (one RocksDB column family) with its own key scheme, declared
// by the component that owns the records, next to its key scheme:
//
//   const RecordTable kSilencesTable("silences");  // state/silence_store.cc
//
// Every table declared when a StateStore opens exists in it, so adding a result kind that is
// stored adds a declaration beside its writer, not an entry in a central list. Declarations are
// namespace-scope objects (they register during static initialisation, before main); two tables
// with the same name, or a name that is not [a-z0-9_]+, abort at start with a message.
//
// A table declared with a RecordExpiry is time-keyed (see there): its records expire. Records of
// other tables are kept until their owner deletes them.
class RecordTable {
 public:
  explicit RecordTable(std::string_view name);
  RecordTable(std::string_view name, RecordExpiry expiry);
  RecordTable(const RecordTable&) = delete;
  RecordTable& operator=(const RecordTable&) = delete;

  std::string_view name() const { return name_; }
  // Dense, in declaration order: the table's place among the store's record families.
  size_t index() const { return index_; }
  // Whether keys start with be64(ms) and records expire (declared with a RecordExpiry).
  bool time_keyed() const { return time_keyed_; }
  const RecordExpiry& expiry() const { return expiry_; }

  // Every table declared so far, by index.
  static std::span<const RecordTable* const> All();

 private:
  std::string name_;
  size_t index_;
  bool time_keyed_ = false;
  RecordExpiry expiry_;
};

}  // namespace inferscope
