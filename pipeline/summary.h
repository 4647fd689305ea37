#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "alerting/alert.h"
#include "pipeline/event.h"
#include "pipeline/result_kind.h"
#include "values/aggregate.h"

namespace inferscope {

struct PendingCheckpoint;  // pipeline/checkpoint.h
struct CheckpointBarrier;  // pipeline/checkpoint.h

// A series is one metric of one model on one instance.
struct SeriesKey {
  StringId instance = 0;
  StringId model = 0;
  StringId metric = 0;
  bool operator==(const SeriesKey&) const = default;
};

// Hash of a series given as (instance << 32 | model, metric), for the operators' open-addressing
// tables: the metric is spread by a golden-ratio multiply, then MurmurHash3's 64-bit finalizer
// mixes every bit into the high bits the tables index with.
inline uint64_t SeriesHash(uint64_t instance_model, uint32_t metric) {
  uint64_t h = instance_model ^ (static_cast<uint64_t>(metric) * 0x9E3779B97F4A7C15ULL);
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDULL;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ULL;
  h ^= h >> 33;
  return h;
}

// The aggregate of one series over [start_ms, end_ms), emitted when a window closes.
struct WindowSummary {
  SeriesKey series;
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  int64_t max_event_time_ms = 0;  // latest event time that contributed
  // True when this replaces a result emitted before for the same series and interval (late events
  // within the allowed lateness arrived); consumers upsert.
  bool update = false;
  // Early summaries (kind::EarlySummary) only: the event time up to which the still open pane
  // [start_ms, end_ms) has been observed (a slice boundary, <= end_ms); 0 otherwise.
  int64_t observed_until_ms = 0;
  Aggregate agg;
};

// An event that could not be applied after it was accepted by a source (for example, it arrived
// after its pane's allowed lateness). Kept with its reason so nothing is dropped silently.
struct DeadLetter {
  Event event;
  std::string_view reason;   // a static string, e.g. "too_late"
  int64_t watermark_ms = 0;  // the operator's watermark when the event was refused
};

namespace kind {
// The built-in result kinds (pipeline/result_kind.h). A kind of another module is declared next to
// its value type, in that module.
struct PaneSummary {
  using Value = ::inferscope::WindowSummary;
  static constexpr std::string_view kName = "pane_summary";
  static constexpr std::string_view kDescription =
      "A fired (or updated) event-time pane of one series (window_aggregate)";
};
struct EarlySummary {
  using Value = ::inferscope::WindowSummary;
  static constexpr std::string_view kName = "early_summary";
  static constexpr std::string_view kDescription =
      "The still open pane of one series as observed so far (window_aggregate early_slice)";
};
struct WindowSummary {
  using Value = ::inferscope::WindowSummary;
  static constexpr std::string_view kName = "window_summary";
  static constexpr std::string_view kDescription =
      "A sliding window of one series merged from panes (sliding_window)";
};
struct Alert {
  using Value = ::inferscope::Alert;
  static constexpr std::string_view kName = "alert";
  static constexpr std::string_view kDescription = "An alert state change (alerting/alert.h)";
};
struct DeadLetter {
  using Value = ::inferscope::DeadLetter;
  static constexpr std::string_view kName = "dead_letter";
  static constexpr std::string_view kDescription =
      "An accepted event that could not be applied, with its reason";
};
}  // namespace kind

// What operators emit and sinks consume: one vector per result kind, plus the step's watermark
// and (for the checkpoint sink only) a checkpoint. One batch per operator-thread step; shared
// read-only by every sink it fans out to.
//
// Per-kind access is O(1): the kind's dense id indexes an inline array of vectors (no map, no
// allocation until a kind's vector grows). Vectors keep their capacity across Clear(), so an
// operator that reuses a batch allocates nothing in steady state.
class OutputBatch {
 public:
  OutputBatch() = default;
  ~OutputBatch() { Reset(); }
  OutputBatch(OutputBatch&& other) noexcept { MoveFrom(other); }
  OutputBatch& operator=(OutputBatch&& other) noexcept {
    if (this != &other) {
      Reset();
      MoveFrom(other);
    }
    return *this;
  }
  OutputBatch(const OutputBatch& other) { CopyFrom(other); }
  OutputBatch& operator=(const OutputBatch& other) {
    if (this != &other) {
      Reset();
      CopyFrom(other);
    }
    return *this;
  }

  // The results of kind K (empty when there are none).
  template <typename K>
  std::span<const typename K::Value> Get() const {
    const KindId id = KindOf<K>();
    if (!present_.Has(id)) return {};
    return *Vec<typename K::Value>(id);
  }
  // The vector of kind K, created empty on first use; for producers that append many results.
  template <typename K>
  std::vector<typename K::Value>& Mutable() {
    using V = typename K::Value;
    const KindId id = KindOf<K>();
    if (!present_.Has(id)) {
      new (slots_[id].bytes) std::vector<V>();
      ops_[id] = &kSlotOps<V>;
      present_.Add(id);
    }
    return *Vec<V>(id);
  }
  template <typename K>
  void Add(typename K::Value value) {
    Mutable<K>().push_back(std::move(value));
  }
  template <typename K, typename... Args>
  typename K::Value& Emplace(Args&&... args) {
    return Mutable<K>().emplace_back(std::forward<Args>(args)...);
  }

  // Results of kind `id` in this batch.
  size_t Count(KindId id) const { return present_.Has(id) ? ops_[id]->size(slots_[id].bytes) : 0; }
  // Kinds with at least one result.
  KindSet kinds() const {
    KindSet out;
    present_.ForEach([&](KindId id) {
      if (ops_[id]->size(slots_[id].bytes) > 0) out.Add(id);
    });
    return out;
  }
  // No results of any kind and no checkpoint.
  bool empty() const { return kinds().empty() && checkpoint == nullptr && barrier == nullptr; }
  // Drops every result, keeping the vectors' capacity, and the checkpoint and watermark.
  void Clear() {
    present_.ForEach([&](KindId id) { ops_[id]->clear(slots_[id].bytes); });
    checkpoint.reset();
    barrier.reset();
    watermark_ms = 0;
  }

  // Set on the batches the executor sends to checkpoint-writing sinks (and on nothing else).
  std::shared_ptr<const PendingCheckpoint> checkpoint;
  // Set on the batches the executor sends to sinks that need a checkpoint barrier
  // (Sink::NeedsCheckpointBarrier; such a batch carries nothing else).
  std::shared_ptr<CheckpointBarrier> barrier;
  int64_t watermark_ms = 0;  // the emitting operator's watermark after this step

 private:
  // Type-erased operations on one kind's std::vector<Value>.
  struct SlotOps {
    void (*destroy)(void* v);
    void (*move)(void* to, void* from);  // move-constructs into raw storage
    void (*copy)(void* to, const void* from);
    void (*clear)(void* v);
    size_t (*size)(const void* v);
  };
  template <typename V>
  static constexpr SlotOps kSlotOps = {
      [](void* v) { static_cast<std::vector<V>*>(v)->~vector(); },
      [](void* to, void* from) {
        new (to) std::vector<V>(std::move(*static_cast<std::vector<V>*>(from)));
      },
      [](void* to, const void* from) {
        new (to) std::vector<V>(*static_cast<const std::vector<V>*>(from));
      },
      [](void* v) { static_cast<std::vector<V>*>(v)->clear(); },
      [](const void* v) { return static_cast<const std::vector<V>*>(v)->size(); },
  };
  // Raw storage for one std::vector (the same size and alignment whatever its element type).
  struct Slot {
    alignas(std::vector<char>) unsigned char bytes[sizeof(std::vector<char>)];
  };

  template <typename V>
  std::vector<V>* Vec(KindId id) {
    static_assert(sizeof(std::vector<V>) == sizeof(Slot) &&
                  alignof(std::vector<V>) <= alignof(Slot));
    return std::launder(reinterpret_cast<std::vector<V>*>(slots_[id].bytes));
  }
  template <typename V>
  const std::vector<V>* Vec(KindId id) const {
    return std::launder(reinterpret_cast<const std::vector<V>*>(slots_[id].bytes));
  }
  void Reset() {
    present_.ForEach([&](KindId id) { ops_[id]->destroy(slots_[id].bytes); });
    present_ = {};
  }
  void MoveFrom(OutputBatch& other) {
    other.present_.ForEach([&](KindId id) {
      other.ops_[id]->move(slots_[id].bytes, other.slots_[id].bytes);
      ops_[id] = other.ops_[id];
    });
    present_ = other.present_;
    checkpoint = std::move(other.checkpoint);
    barrier = std::move(other.barrier);
    watermark_ms = other.watermark_ms;
  }
  void CopyFrom(const OutputBatch& other) {
    other.present_.ForEach([&](KindId id) {
      other.ops_[id]->copy(slots_[id].bytes, other.slots_[id].bytes);
      ops_[id] = other.ops_[id];
    });
    present_ = other.present_;
    checkpoint = other.checkpoint;
    barrier = other.barrier;
    watermark_ms = other.watermark_ms;
  }

  KindSet present_;                      // kinds whose vector is constructed (possibly empty)
  const SlotOps* ops_[kMaxResultKinds];  // valid where present_ has the id
  Slot slots_[kMaxResultKinds];          // constructed where present_ has the id
};

using OutputBatchPtr = std::shared_ptr<const OutputBatch>;

}  // namespace inferscope
