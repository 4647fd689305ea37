#pragma once

// Internal to query/: the cache of rendered answers behind QueryServer's cacheable routes.

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pipeline/metrics.h"
#include "state/state_store.h"

namespace inferscope {

// What a cacheable handler's answer depends on besides the request and the store's view
// (StateStore::ViewVersion): the watermark only through the range it lies in, the clock only
// through the time its answer starts to change (a bucket of the range expires).
struct CacheValidity {
  int64_t watermark_from = INT64_MIN;  // the answer holds for a watermark in [from, until)
  int64_t watermark_until = INT64_MAX;
  int64_t clock_until_ms = INT64_MAX;  // ... and a clock before this
  // The body's first member is "as_of": the watermark; a cached body gets the current one.
  bool splice_as_of = false;
  // The answer reads only panes and buckets that start before this (and the series index and the
  // tier plan): a later view whose changes all start at or after it answers the same
  // (StateStore::EarliestChangeSince). INT64_MAX: any change of the view may alter it.
  int64_t data_until_ms = INT64_MAX;
};

// ResponseCache keeps the rendered 200 answers of read routes (summary, series) so that a repeated
// request costs a lookup instead of store reads and JSON rendering.
//
// Correctness: an entry is stored with the ViewVersion read before its answer was computed, and is
// served only while the store's ViewVersion is still that number — or a later one whose changes
// since it all start at or after the entry's data_until_ms (StateStore::EarliestChangeSince; the
// entry then moves to that version) —, the watermark lies in the entry's CacheValidity range and
// the clock is before its clock_until_ms; its "as_of" then gets the current watermark. So a hit
// answers what the handler would answer now (the view can only have been newer than the version
// when the answer was read, and every change after that version is checked against the answer's
// data range).
// Keys are built by the caller (the route, the path captures, the query parameters in order, the
// caller's scopes: QueryServer).
// Bounds: at most `max_bytes` of keys, bodies and a fixed per-entry overhead; the least recently
// used entries are evicted first (counted). Entries of an older view are not swept: they are
// replaced by the next answer to their key or evicted.
// Concurrency: thread-safe; one mutex held for the lookup and the LRU update only (bodies are
// shared and copied outside it).
class ResponseCache {
 public:
  // The view a lookup is made in.
  struct View {
    uint64_t version = 0;  // StateStore::ViewVersion
    int64_t watermark_ms = 0;
    int64_t now_ms = 0;
    // Asked what changed between an entry's version and this one; null: only the same version
    // matches.
    const StateStore* store = nullptr;
  };

  // Per-entry bookkeeping counted against max_bytes besides the key and the body.
  static constexpr size_t kEntryOverheadBytes = 160;

  // `max_bytes` > 0. Registers inferscope_query_cache_* in `metrics` (must outlive the cache).
  ResponseCache(size_t max_bytes, MetricsRegistry* metrics);
  ~ResponseCache();
  ResponseCache(const ResponseCache&) = delete;
  ResponseCache& operator=(const ResponseCache&) = delete;

  // The cached answer to `key` valid in `view` (its "as_of" spliced) into `*body`; false (and
  // *body untouched) when there is none.
  bool Lookup(std::string_view key, const View& view, std::string* body);
  // Stores `body`, the answer to `key` computed at ViewVersion `version` (read before computing
  // it). Ignored when it would not fit, when an entry of a newer version is stored, or when
  // splice_as_of is set and the body does not start with {"as_of":<integer>.
  void Insert(std::string_view key, uint64_t version, const CacheValidity& validity,
              std::string_view body);

  size_t entries() const;
  size_t bytes() const;

 private:
  struct Entry {
    std::string key;
    uint64_t version = 0;
    CacheValidity validity;
    // The body, without the "as_of" value when splice_as_of: that goes at `splice_at`.
    std::shared_ptr<const std::string> body;
    size_t splice_at = 0;
    size_t charge = 0;  // bytes counted against max_bytes
  };
  using Lru = std::list<Entry>;  // most recently used first

  const size_t max_bytes_;
  MetricsRegistry* metrics_;
  Counter* hits_ = nullptr;
  Counter* misses_ = nullptr;   // no entry for the key
  Counter* stale_ = nullptr;    // an entry of another view, watermark range or clock
  Counter* carried_ = nullptr;  // an entry of an earlier view still valid in the lookup's
  Counter* evictions_ = nullptr;
  Counter* too_large_ = nullptr;

  mutable std::mutex mu_;
  Lru lru_;
  // Keys point into the entries of lru_ (list nodes do not move).
  std::unordered_map<std::string_view, Lru::iterator> index_;
  size_t bytes_ = 0;
};

}  // namespace inferscope
