#include "query/response_cache.h"

#include <charconv>
#include <iterator>
#include <utility>

namespace inferscope {
namespace {

constexpr std::string_view kAsOfPrefix = "{\"as_of\":";
constexpr std::string_view kLookups = "inferscope_query_cache_lookups_total";
constexpr std::string_view kLookupsHelp =
    "Lookups of the query node's response cache, by result (hit; miss: no entry; stale: an entry "
    "of an earlier view, watermark range or clock, recomputed)";

}  // namespace

ResponseCache::ResponseCache(size_t max_bytes, MetricsRegistry* metrics)
    : max_bytes_(max_bytes), metrics_(metrics) {
  hits_ = metrics_->GetCounter(kLookups, kLookupsHelp, {{"result", "hit"}});
  misses_ = metrics_->GetCounter(kLookups, kLookupsHelp, {{"result", "miss"}});
  stale_ = metrics_->GetCounter(kLookups, kLookupsHelp, {{"result", "stale"}});
  carried_ = metrics_->GetCounter(
      "inferscope_query_cache_carried_total",
      "Cached answers found valid in a newer view of the store (no change since touched their "
      "range), kept and served");
  evictions_ = metrics_->GetCounter(
      "inferscope_query_cache_evictions_total",
      "Entries evicted from the response cache to stay within its size (least recently used)");
  too_large_ = metrics_->GetCounter(
      "inferscope_query_cache_uncached_total",
      "Answers not cached because one alone would exceed the response cache's size");
  metrics_->AddCallbackGauge(
      "inferscope_query_cache_entries", "Answers held by the response cache", {},
      [this] { return static_cast<double>(entries()); }, this);
  metrics_->AddCallbackGauge(
      "inferscope_query_cache_bytes",
      "Bytes the response cache holds (keys, bodies and a fixed overhead per entry)", {},
      [this] { return static_cast<double>(bytes()); }, this);
  metrics_->GetGauge("inferscope_query_cache_max_bytes", "Size limit of the response cache")
      ->Set(static_cast<double>(max_bytes_));
}

ResponseCache::~ResponseCache() { metrics_->RemoveCallbacks(this); }

bool ResponseCache::Lookup(std::string_view key, const View& view, std::string* body) {
  std::shared_ptr<const std::string> found;
  size_t splice_at = 0;
  bool splice = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end()) {
      misses_->Inc();
      return false;
    }
    Entry& e = *it->second;
    const CacheValidity& v = e.validity;
    if (view.watermark_ms < v.watermark_from || view.watermark_ms >= v.watermark_until ||
        view.now_ms >= v.clock_until_ms) {
      stale_->Inc();
      return false;
    }
    if (e.version != view.version) {
      // An entry of an earlier view answers in this one when nothing changed since touched its
      // range; it then belongs to this view (a later lookup needs no question).
      if (e.version > view.version || view.store == nullptr ||
          view.store->EarliestChangeSince(e.version, view.version) < v.data_until_ms) {
        stale_->Inc();
        return false;
      }
      e.version = view.version;
      carried_->Inc();
    }
    lru_.splice(lru_.begin(), lru_, it->second);
    found = e.body;
    splice_at = e.splice_at;
    splice = v.splice_as_of;
  }
  hits_->Inc();
  if (!splice) {
    body->assign(*found);
    return true;
  }
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), view.watermark_ms);
  const std::string_view as_of(digits, static_cast<size_t>(end - digits));
  body->clear();
  body->reserve(found->size() + as_of.size());
  body->append(*found, 0, splice_at);
  body->append(as_of);
  body->append(*found, splice_at, std::string::npos);
  return true;
}

void ResponseCache::Insert(std::string_view key, uint64_t version, const CacheValidity& validity,
                           std::string_view body) {
  size_t splice_at = 0;
  std::string stored;
  if (validity.splice_as_of) {
    if (body.substr(0, kAsOfPrefix.size()) != kAsOfPrefix) return;
    size_t end = kAsOfPrefix.size();
    if (end < body.size() && body[end] == '-') ++end;
    const size_t digits = end;
    while (end < body.size() && body[end] >= '0' && body[end] <= '9') ++end;
    if (end == digits) return;
    splice_at = kAsOfPrefix.size();
    stored.reserve(body.size() - (end - splice_at));
    stored.append(body.substr(0, splice_at));
    stored.append(body.substr(end));
  } else {
    stored.assign(body);
  }
  const size_t charge = key.size() + stored.size() + kEntryOverheadBytes;
  if (charge > max_bytes_) {
    too_large_->Inc();
    return;
  }
  auto shared = std::make_shared<const std::string>(std::move(stored));
  // Evicted entries' bodies are released after the lock.
  Lru evicted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      if (it->second->version > version) return;  // a newer answer is stored
      evicted.splice(evicted.end(), lru_, it->second);
      bytes_ -= evicted.back().charge;
      index_.erase(it);
    }
    while (bytes_ + charge > max_bytes_ && !lru_.empty()) {
      auto last = std::prev(lru_.end());
      index_.erase(std::string_view(last->key));
      bytes_ -= last->charge;
      evicted.splice(evicted.end(), lru_, last);
      evictions_->Inc();
    }
    lru_.push_front(
        Entry{std::string(key), version, validity, std::move(shared), splice_at, charge});
    index_.emplace(std::string_view(lru_.front().key), lru_.begin());
    bytes_ += charge;
  }
}

size_t ResponseCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_.size();
}

size_t ResponseCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

}  // namespace inferscope
