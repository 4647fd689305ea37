#include "pipeline/executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <unordered_set>

#include "pipeline/thread_name.h"

namespace inferscope {
namespace {

constexpr std::string_view kResultsOutHelp = "Results an operator emitted, by kind";

Counter* ResultsOut(MetricsRegistry& m, const std::string& stage, KindId kind) {
  return m.GetCounter("inferscope_stage_results_out_total", kResultsOutHelp,
                      {{"stage", stage}, {"kind", std::string(KindName(kind))}});
}

// `older` then `newer`, as one WriteBatch would apply them (the newer write of a key wins), with
// each key once so that repeated failures do not grow what is carried.
std::vector<CheckpointRecord> MergeRecords(std::vector<CheckpointRecord> older,
                                           std::vector<CheckpointRecord> newer) {
  if (older.empty()) return newer;
  if (newer.empty()) return older;
  std::unordered_set<std::string> replaced;
  for (const CheckpointRecord& w : newer) replaced.insert(w.key);
  std::vector<CheckpointRecord> out;
  out.reserve(older.size() + newer.size());
  for (CheckpointRecord& w : older) {
    if (replaced.count(w.key) == 0) out.push_back(std::move(w));
  }
  for (CheckpointRecord& w : newer) out.push_back(std::move(w));
  return out;
}

// Per source, the sequence numbers of `older` and `newer` (newer wins per publisher).
std::vector<std::vector<AppliedSequence>> MergeApplied(
    std::vector<std::vector<AppliedSequence>> older,
    std::vector<std::vector<AppliedSequence>> newer) {
  if (older.size() < newer.size()) older.resize(newer.size());
  for (size_t i = 0; i < newer.size(); ++i) {
    for (const AppliedSequence& a : newer[i]) {
      auto it = std::find_if(older[i].begin(), older[i].end(),
                             [&](const AppliedSequence& o) { return o.publisher == a.publisher; });
      if (it != older[i].end()) {
        *it = a;
      } else {
        older[i].push_back(a);
      }
    }
  }
  return older;
}

}  // namespace

struct Executor::SourceSlot {
  std::string name;
  std::unique_ptr<Source> source;
  uint32_t index = 0;
  bool opened = false;
};

struct Executor::OperatorSlot {
  std::string name;
  std::unique_ptr<Operator> op;
  std::vector<uint32_t> inputs;    // source indexes
  std::vector<size_t> downstream;  // indexes of operators reading this one's results
  std::vector<size_t> consumers;   // sink indexes
  Counter* events_in = nullptr;
  // inferscope_stage_results_out_total{stage, kind} by kind id; created at Start for the declared
  // kinds (and on first sight for an undeclared one, with a warning).
  std::array<Counter*, kMaxResultKinds> results_out{};
  Counter* errors = nullptr;
  bool opened = false;
};

struct Executor::SinkSlot {
  SinkSlot(std::string n, std::unique_ptr<Sink> s, size_t capacity)
      : name(std::move(n)), sink(std::move(s)), queue(capacity) {}
  std::string name;
  std::unique_ptr<Sink> sink;
  BoundedQueue<OutputBatchPtr> queue;
  Counter* batches_in = nullptr;
  // inferscope_sink_results_total{stage, kind} by kind id, for the kinds the sink accepts.
  std::array<Counter*, kMaxResultKinds> results_in{};
  Counter* errors = nullptr;
  Histogram* write_seconds = nullptr;
  bool opened = false;
  // A Write failed (sink thread; barrier sinks only): its results were not delivered, so no later
  // checkpoint may be written either (a restart must replay from before them). Sticky.
  bool failed_delivery = false;
  // The last result batch pushed (operator thread): once it is released, the sink has written
  // everything routed before it (see SweepStrings).
  std::weak_ptr<const OutputBatch> last_pushed;
  std::weak_ptr<const OutputBatch> fence;  // last_pushed at the previous string sweep
};

// The SourceOutput a source thread sees: the shared pool and operator queue, stamped with the
// source's index so the operator thread knows which operators read the batch.
class Executor::Output final : public SourceOutput {
 public:
  Output(Executor& exec, uint32_t source) : exec_(exec), source_(source) {}

  EventBatchPtr Acquire() override {
    while (!exec_.stop_sources_.load(std::memory_order_relaxed)) {
      if (auto batch = exec_.free_batches_.PopFor(std::chrono::milliseconds(100))) {
        return std::move(*batch);
      }
    }
    return nullptr;
  }

  bool Emit(EventBatchPtr batch) override {
    batch->source = source_;
    if (exec_.operator_queue_.Push(batch)) return true;
    Release(std::move(batch));
    return false;
  }

  bool TryEmit(EventBatchPtr& batch) override {
    batch->source = source_;
    return exec_.operator_queue_.TryPush(batch);
  }

  void Release(EventBatchPtr batch) override {
    if (!batch) return;
    batch->Clear();
    // The pool never holds more than it started with, so this push cannot block.
    exec_.free_batches_.TryPush(batch);
  }

 private:
  Executor& exec_;
  uint32_t source_;
};

Executor::Executor(EngineSettings settings, StageContext base)
    : settings_(settings),
      base_(std::move(base)),
      free_batches_(settings.batch_pool),
      operator_queue_(settings.queue_capacity) {}

Executor::~Executor() { Stop(); }

void Executor::AddSource(std::string name, std::unique_ptr<Source> source) {
  auto slot = std::make_unique<SourceSlot>();
  slot->name = std::move(name);
  slot->source = std::move(source);
  slot->index = static_cast<uint32_t>(sources_.size());
  sources_.push_back(std::move(slot));
}

void Executor::AddOperator(std::string name, std::unique_ptr<Operator> op,
                           const std::vector<std::string>& inputs) {
  auto slot = std::make_unique<OperatorSlot>();
  slot->name = std::move(name);
  slot->op = std::move(op);
  size_t index = operators_.size();
  for (const auto& input : inputs) {
    for (const auto& s : sources_) {
      if (s->name == input) slot->inputs.push_back(s->index);
    }
    for (auto& o : operators_) {
      if (o->name == input) o->downstream.push_back(index);
    }
  }
  operators_.push_back(std::move(slot));
}

void Executor::AddSink(std::string name, std::unique_ptr<Sink> sink,
                       const std::vector<std::string>& inputs) {
  size_t index = sinks_.size();
  sinks_.push_back(
      std::make_unique<SinkSlot>(std::move(name), std::move(sink), settings_.sink_queue_capacity));
  for (const auto& input : inputs) {
    for (auto& op : operators_) {
      if (op->name == input) op->consumers.push_back(index);
    }
  }
}

StageContext Executor::ContextFor(const std::string& name) const {
  StageContext ctx = base_;
  ctx.name = name;
  return ctx;
}

Status Executor::Start() {
  if (running_.load()) return Status::Internal("executor already started");
  // Before anything is opened: a wiring mistake leaves nothing to undo.
  INFERSCOPE_RETURN_IF_ERROR(CheckEdges());
  MetricsRegistry& m = *base_.metrics;
  batches_in_ = m.GetCounter("inferscope_operator_queue_batches_total",
                             "Event batches taken off the operator queue");
  events_in_ =
      m.GetCounter("inferscope_operator_queue_events_total", "Events taken off the operator queue");
  operator_step_seconds_ = m.GetHistogram("inferscope_operator_step_seconds",
                                          "Time the operator thread spends on one batch");
  m.AddCallbackGauge(
      "inferscope_queue_depth", "Batches waiting in a queue", {{"queue", "operators"}},
      [this] { return static_cast<double>(operator_queue_.size()); }, this);
  m.AddCallbackGauge(
      "inferscope_queue_capacity", "Capacity of a queue in batches", {{"queue", "operators"}},
      [this] { return static_cast<double>(operator_queue_.capacity()); }, this);
  m.AddCallbackGauge(
      "inferscope_batch_pool_free", "Event batches free in the pool", {},
      [this] { return static_cast<double>(free_batches_.size()); }, this);
  if (base_.interner != nullptr) {
    const Interner* interner = base_.interner;
    m.AddCallbackGauge(
        "inferscope_interner_strings",
        "Names currently interned (instance, model, metric, publisher)", {},
        [interner] { return static_cast<double>(interner->size()); }, this);
    m.AddCallbackGauge(
        "inferscope_interner_reclaimed_strings",
        "Names reclaimed because nothing held them (total)", {},
        [interner] { return static_cast<double>(interner->reclaimed()); }, this);
    m.AddCallbackGauge(
        "inferscope_interner_refused_strings",
        "New names refused (total): the table was full, or the publisher's share of it was",
        {{"reason", "full"}}, [interner] { return static_cast<double>(interner->refused_full()); },
        this);
    m.AddCallbackGauge(
        "inferscope_interner_refused_strings",
        "New names refused (total): the table was full, or the publisher's share of it was",
        {{"reason", "publisher_share"}},
        [interner] { return static_cast<double>(interner->refused_share()); }, this);
  }

  for (size_t i = 0; i < settings_.batch_pool; ++i) {
    auto batch = std::make_unique<EventBatch>();
    batch->events.reserve(settings_.batch_reserve);
    free_batches_.TryPush(batch);
  }

  auto fail = [this](const std::string& stage, const Status& st) {
    Status out = st.WithContext("opening stage '" + stage + "'");
    for (auto& s : sources_) {
      if (s->opened) s->source->Close();
    }
    for (auto& s : sinks_) {
      if (s->opened) s->sink->Close();
    }
    base_.metrics->RemoveCallbacks(this);
    return out;
  };
  // Sinks first so that a sink's endpoint is bound before any result can reach it; sources last so
  // that nothing is accepted before the stages behind them are ready.
  for (auto& s : sinks_) {
    Labels l{{"stage", s->name}};
    s->batches_in =
        m.GetCounter("inferscope_sink_batches_total", "Result batches a sink received", l);
    s->sink->Accepts().ForEach([&](KindId kind) {
      s->results_in[kind] =
          m.GetCounter("inferscope_sink_results_total", "Results a sink received, by kind",
                       {{"stage", s->name}, {"kind", std::string(KindName(kind))}});
    });
    s->errors =
        m.GetCounter("inferscope_stage_errors_total", "Non-OK results returned by a stage", l);
    s->write_seconds =
        m.GetHistogram("inferscope_sink_write_seconds", "Time a sink spends on one batch", l);
    SinkSlot* slot = s.get();
    m.AddCallbackGauge(
        "inferscope_queue_depth", "Batches waiting in a queue", {{"queue", s->name}},
        [slot] { return static_cast<double>(slot->queue.size()); }, this);
    m.AddCallbackGauge(
        "inferscope_queue_capacity", "Capacity of a queue in batches", {{"queue", s->name}},
        [cap = settings_.sink_queue_capacity] { return static_cast<double>(cap); }, this);
    Status st = s->sink->Open(ContextFor(s->name));
    if (!st.ok()) return fail(s->name, st);
    s->opened = true;
    if (s->sink->WritesCheckpoints() && checkpoint_sink_ == nullptr) checkpoint_sink_ = s.get();
    if (s->sink->NeedsCheckpointBarrier() && !s->sink->WritesCheckpoints()) {
      barrier_sinks_.push_back(s.get());
    }
  }
  if (settings_.checkpoint_interval_ms == 0) checkpoint_sink_ = nullptr;
  checkpoints_ = m.GetCounter("inferscope_checkpoints_total", "Checkpoints made durable");
  checkpoints_failed_ = m.GetCounter("inferscope_checkpoints_failed_total",
                                     "Checkpoints never durable (an operator failed, or the sink "
                                     "gave the write up); their content goes into the next one");
  checkpoints_unchanged_ =
      m.GetCounter("inferscope_checkpoints_unchanged_total",
                   "Checkpoints not written because nothing had changed since the previous one");
  checkpoint_skipped_ = m.GetCounter("inferscope_checkpoints_skipped_total",
                                     "Checkpoint intervals skipped because the previous checkpoint "
                                     "was not durable yet");
  checkpoint_seconds_ = m.GetHistogram("inferscope_checkpoint_seconds",
                                       "Time from taking a checkpoint to its being durable");
  checkpoint_build_seconds_ = m.GetHistogram("inferscope_checkpoint_build_seconds",
                                             "Operator-thread time spent collecting a checkpoint");
  checkpoint_last_durable_ =
      m.GetGauge("inferscope_checkpoint_last_durable_timestamp_seconds",
                 "Wall-clock time the last checkpoint became durable (0: none since start)");
  checkpoint_records_ =
      m.GetGauge("inferscope_checkpoint_records", "Records written by the last checkpoint");
  checkpoint_bytes_ =
      m.GetGauge("inferscope_checkpoint_bytes", "Bytes written by the last checkpoint");
  checkpoint_bytes_total_ =
      m.GetCounter("inferscope_checkpoint_bytes_total",
                   "Bytes of checkpoint records (keys and values) handed to the state sink");
  applied_.assign(sources_.size(), {});
  checkpointed_.assign(sources_.size(), {});
  for (auto& o : operators_) {
    Labels l{{"stage", o->name}};
    o->events_in = m.GetCounter("inferscope_stage_events_in_total", "Events a stage received", l);
    o->op->Emits().ForEach(
        [&](KindId kind) { o->results_out[kind] = ResultsOut(m, o->name, kind); });
    o->errors =
        m.GetCounter("inferscope_stage_errors_total", "Non-OK results returned by a stage", l);
    Status st = o->op->Open(ContextFor(o->name));
    if (!st.ok()) return fail(o->name, st);
    o->opened = true;
  }
  for (auto& s : sources_) {
    Status st = s->source->Open(ContextFor(s->name));
    if (!st.ok()) return fail(s->name, st);
    s->opened = true;
  }
  if (Status st = RestoreStages(); !st.ok()) return fail("restore", st);

  manual_clock_ = dynamic_cast<const ManualClock*>(base_.clock) != nullptr;
  stop_sources_.store(false);
  running_.store(true);
  for (auto& s : sinks_) sink_threads_.emplace_back([this, slot = s.get()] { SinkLoop(*slot); });
  operator_thread_ = std::thread([this] { OperatorLoop(); });
  for (auto& s : sources_)
    source_threads_.emplace_back([this, slot = s.get()] { SourceLoop(*slot); });
  return Status::Ok();
}

void Executor::SourceLoop(SourceSlot& slot) {
  SetThreadName("src-" + slot.name);
  Output out(*this, slot.index);
  Status st = slot.source->Run(out, stop_sources_);
  if (!st.ok()) {
    stage_failures_.fetch_add(1);
    spdlog::error("source '{}' stopped: {}", slot.name, st.ToString());
  }
}

Status Executor::CheckEdges() const {
  const KindSet events = KindSet::Of<kind::Event>();
  for (const auto& o : operators_) {
    if (!o->inputs.empty() && !o->op->Reads().Has<kind::Event>()) {
      return Status::InvalidArgument("operator '" + o->name +
                                     "' cannot read the events of a source: it reads " +
                                     o->op->Reads().Names());
    }
    const KindSet emits = o->op->Emits();
    for (size_t d : o->downstream) {
      const KindSet reads = operators_[d]->op->Reads();
      if (emits.Intersect(reads.Without(events)).empty()) {
        return Status::InvalidArgument("operator '" + operators_[d]->name +
                                       "' cannot read the results of operator '" + o->name +
                                       "': it reads " + reads.Names() + ", '" + o->name +
                                       "' emits " + emits.Names());
      }
    }
    for (size_t c : o->consumers) {
      const KindSet accepts = sinks_[c]->sink->Accepts();
      if (emits.Intersect(accepts).empty()) {
        return Status::InvalidArgument(
            "sink '" + sinks_[c]->name + "' cannot read the results of operator '" + o->name +
            "': it accepts " + accepts.Names() + ", '" + o->name + "' emits " + emits.Names());
      }
    }
  }
  return Status::Ok();
}

Status Executor::RestoreStages() {
  if (base_.checkpoints == nullptr) return Status::Ok();
  for (auto& o : operators_) {
    Status st = o->op->Restore(*base_.checkpoints->Reader("op", o->name));
    if (!st.ok()) return st.WithContext("restoring operator '" + o->name + "'");
  }
  for (auto& s : sources_) {
    Status st = s->source->Restore(*base_.checkpoints->Reader("src", s->name));
    if (!st.ok()) return st.WithContext("restoring source '" + s->name + "'");
  }
  return Status::Ok();
}

void Executor::TakeCheckpoint() {
  const int64_t started = base_.clock->MonotonicNs();
  auto checkpoint = std::make_shared<PendingCheckpoint>();
  checkpoint->id = next_checkpoint_id_++;
  checkpoint->started_ns = started;
  for (auto& o : operators_) {
    CheckpointCollector writer("op", o->name, &checkpoint->records);
    Status st = o->op->Checkpoint(writer);
    if (!st.ok()) {
      // A checkpoint without this operator's state would restore it wrongly: skip it altogether,
      // keeping what the operators before it wrote (their changed marks are cleared).
      o->errors->Inc();
      checkpoints_failed_->Inc();
      spdlog::error("operator '{}' checkpoint: {}", o->name, st.ToString());
      Carry(std::move(checkpoint->records), {}, /*older=*/false);
      checkpoint_in_flight_.store(false);
      return;
    }
  }
  checkpoint->applied.resize(sources_.size());
  for (size_t i = 0; i < sources_.size(); ++i) {
    CheckpointCollector writer("src", sources_[i]->name, &checkpoint->records);
    for (const auto& [publisher, a] : applied_[i]) {
      auto [it, inserted] = checkpointed_[i].try_emplace(publisher, a);
      if (!inserted && it->second.incarnation == a.incarnation && it->second.seq == a.seq) {
        continue;  // unchanged since the last checkpoint
      }
      it->second = a;
      checkpoint->applied[i].push_back(a);
      writer.Put(base_.interner->Name(publisher), EncodeAppliedSequence(a));
    }
  }
  {
    std::lock_guard<std::mutex> lock(carried_mu_);
    if (checkpoint->records.empty() && carried_records_.empty() && carried_applied_.empty() &&
        std::all_of(checkpoint->applied.begin(), checkpoint->applied.end(),
                    [](const auto& a) { return a.empty(); })) {
      // Nothing changed since the previous checkpoint: writing an empty one would only cost a
      // synced write (an idle engine would do one every interval).
      checkpoints_unchanged_->Inc();
      checkpoint_in_flight_.store(false);
      return;
    }
    if (!carried_records_.empty() || !carried_applied_.empty()) {
      checkpoint->records =
          MergeRecords(std::move(carried_records_), std::move(checkpoint->records));
      checkpoint->applied =
          MergeApplied(std::move(carried_applied_), std::move(checkpoint->applied));
      carried_records_.clear();
      carried_applied_.clear();
      carried_pending_.store(false);
    }
  }
  size_t bytes = 0;
  for (const CheckpointRecord& w : checkpoint->records)
    bytes += w.key.size() + (w.value ? w.value->size() : 0);
  checkpoint_records_->Set(static_cast<double>(checkpoint->records.size()));
  checkpoint_bytes_->Set(static_cast<double>(bytes));
  checkpoint_bytes_total_->Inc(bytes);
  checkpoint->on_durable = [this](const PendingCheckpoint& c) { CheckpointDurable(c); };
  checkpoint->on_failed = [this](const PendingCheckpoint& c) { CheckpointFailed(c); };
  checkpoint_build_seconds_->Observe(static_cast<double>(base_.clock->MonotonicNs() - started) *
                                     1e-9);
  auto batch = std::make_shared<OutputBatch>();
  batch->checkpoint = std::move(checkpoint);
  OutputBatchPtr shared = std::move(batch);
  if (barrier_sinks_.empty()) {
    // Behind every result routed so far: once the sink reaches it, everything before is written.
    checkpoint_sink_->queue.Push(shared);
    return;
  }
  // First every barrier sink must have delivered what was routed to it before now; the last one
  // to pass the barrier hands the checkpoint to the checkpoint sink (still behind every result
  // routed before it, so its records are written after them).
  auto barrier = std::make_shared<CheckpointBarrier>();
  barrier->remaining.store(static_cast<int>(barrier_sinks_.size()));
  barrier->on_passed = [this, shared](bool delivered) mutable {
    if (delivered) {
      OutputBatchPtr item = shared;
      if (checkpoint_sink_->queue.Push(item)) return;
    } else {
      spdlog::warn("checkpoint {} not written: a sink that must deliver its results first failed",
                   shared->checkpoint->id);
    }
    CheckpointFailed(*shared->checkpoint);
  };
  for (SinkSlot* s : barrier_sinks_) {
    auto b = std::make_shared<OutputBatch>();
    b->barrier = barrier;
    OutputBatchPtr item = std::move(b);
    if (!s->queue.Push(item)) barrier->Pass(false);
  }
}

void Executor::Carry(std::vector<CheckpointRecord> records,
                     std::vector<std::vector<AppliedSequence>> applied, bool older) {
  std::lock_guard<std::mutex> lock(carried_mu_);
  if (older) {
    carried_records_ = MergeRecords(std::move(records), std::move(carried_records_));
    carried_applied_ = MergeApplied(std::move(applied), std::move(carried_applied_));
  } else {
    carried_records_ = MergeRecords(std::move(carried_records_), std::move(records));
    carried_applied_ = MergeApplied(std::move(carried_applied_), std::move(applied));
  }
  // Only when something is carried: a flag left set with nothing to clear it would make every
  // interval look changed (an idle engine would wake and collect a checkpoint forever).
  if (!carried_records_.empty() || !carried_applied_.empty()) carried_pending_.store(true);
}

void Executor::CheckpointDurable(const PendingCheckpoint& checkpoint) {
  checkpoint_seconds_->Observe(
      static_cast<double>(base_.clock->MonotonicNs() - checkpoint.started_ns) * 1e-9);
  checkpoints_->Inc();
  checkpoint_last_durable_->Set(static_cast<double>(base_.clock->NowMs()) / 1000.0);
  for (size_t i = 0; i < sources_.size() && i < checkpoint.applied.size(); ++i) {
    if (!checkpoint.applied[i].empty())
      sources_[i]->source->OnCheckpointDurable(checkpoint.applied[i]);
  }
  if (checkpoint_observer_) checkpoint_observer_(checkpoint);
  checkpoint_in_flight_.store(false);
}

void Executor::CheckpointFailed(const PendingCheckpoint& checkpoint) {
  checkpoints_failed_->Inc();
  // Taken before anything carried now (nothing is taken while it is in flight, but the last one
  // at shutdown): its records are the older ones.
  Carry(checkpoint.records, checkpoint.applied, /*older=*/true);
  checkpoint_in_flight_.store(false);
  operator_queue_.Wake();  // a sleeping operator thread would not retry it until the next step
}

void Executor::RunOperators(const EventBatch& batch) {
  if (!batch.sequences.empty() && batch.source < applied_.size()) {
    auto& applied = applied_[batch.source];
    for (const AppliedSequence& a : batch.sequences) applied[a.publisher] = a;
  }
  for (auto& o : operators_) {
    if (std::find(o->inputs.begin(), o->inputs.end(), batch.source) == o->inputs.end()) continue;
    o->events_in->Inc(batch.events.size());
    OutputBatch out;
    Status st = o->op->Process(batch, out);
    if (!st.ok()) {
      o->errors->Inc();
      spdlog::warn("operator '{}': {}", o->name, st.ToString());
    }
    Route(*o, out);
  }
}

bool Executor::SweepStrings() {
  if (base_.interner == nullptr) return true;
  // A name released before the previous sweep may still be named by results routed before it:
  // sweep only once every sink has written those (a sink that is behind postpones the sweep).
  for (auto& s : sinks_) {
    if (!s->fence.expired()) return false;
  }
  const size_t reclaimed = base_.interner->Sweep();
  if (reclaimed > 0) spdlog::info("interner: reclaimed {} unused names", reclaimed);
  for (auto& s : sinks_) s->fence = s->last_pushed;
  return true;
}

bool Executor::RunTimers(int64_t now_ms) {
  bool ran = false;
  for (auto& o : operators_) {
    if (o->op->NextTimerMs(now_ms) > now_ms) continue;
    ran = true;
    OutputBatch out;
    Status st = o->op->OnTimer(now_ms, out);
    if (!st.ok()) {
      o->errors->Inc();
      spdlog::warn("operator '{}' timer: {}", o->name, st.ToString());
    }
    Route(*o, out);
  }
  return ran;
}

int64_t Executor::NextWakeNs(int64_t now_ns, int64_t next_timer_ns, int64_t next_checkpoint_ns,
                             int64_t next_sweep_ns, bool changed) const {
  int64_t due = INT64_MAX;
  const int64_t now_ms = base_.clock->NowMs();
  int64_t timer_ms = Operator::kNoTimer;
  for (const auto& o : operators_) timer_ms = std::min(timer_ms, o->op->NextTimerMs(now_ms));
  if (timer_ms != Operator::kNoTimer) {
    // Clamped so that a timer far ahead cannot overflow; it is asked for again after every step.
    const int64_t ahead_ms = std::clamp<int64_t>(timer_ms - now_ms, 0, 86'400'000);
    due = std::max(next_timer_ns, now_ns + ahead_ms * 1'000'000);
  }
  if (checkpoint_sink_ != nullptr && changed) due = std::min(due, next_checkpoint_ns);
  if (settings_.string_sweep_interval_ms > 0) due = std::min(due, next_sweep_ns);
  // A test's ManualClock only moves when the test says so, never while this thread waits: look at
  // it every tick, as if timers were due.
  if (manual_clock_) {
    due = std::min(due, now_ns + settings_.timer_interval_ms * 1'000'000);
  }
  return due;
}

void Executor::Route(OperatorSlot& op, OutputBatch& out) {
  const KindSet kinds = out.kinds();
  if (kinds.empty() && out.checkpoint == nullptr) return;
  kinds.ForEach([&](KindId kind) {
    Counter*& counter = op.results_out[kind];
    if (counter == nullptr) {
      spdlog::warn("operator '{}' emitted {} results, which its Emits() does not declare", op.name,
                   KindName(kind));
      counter = ResultsOut(*base_.metrics, op.name, kind);
    }
    counter->Inc(out.Count(kind));
  });
  // Chained operators see the results first, on this thread (declaration order keeps it acyclic).
  for (size_t d : op.downstream) {
    OperatorSlot& next = *operators_[d];
    OutputBatch next_out;
    next_out.watermark_ms = out.watermark_ms;
    Status st = next.op->ProcessResults(out, next_out);
    if (!st.ok()) {
      next.errors->Inc();
      spdlog::warn("operator '{}': {}", next.name, st.ToString());
    }
    Route(next, next_out);
  }
  if (op.consumers.empty()) return;
  auto shared = std::make_shared<const OutputBatch>(std::move(out));
  for (size_t index : op.consumers) {
    OutputBatchPtr copy = shared;
    sinks_[index]->last_pushed = shared;
    // Blocks while the sink is behind: results are never dropped; back-pressure reaches the
    // sources.
    sinks_[index]->queue.Push(copy);
  }
}

void Executor::OperatorLoop() {
  SetThreadName("operators");
  const int64_t tick_ns = settings_.timer_interval_ms * 1'000'000;
  const int64_t start_ns = base_.clock->MonotonicNs();
  int64_t next_timer_ns = start_ns + tick_ns;  // timers run at most once per tick
  int64_t next_checkpoint_ns = start_ns + settings_.checkpoint_interval_ms * 1'000'000;
  int64_t next_sweep_ns = start_ns + settings_.string_sweep_interval_ms * 1'000'000;
  // Whether a step ran since the last checkpoint: if none did, nothing can have changed, and the
  // thread sleeps past the checkpoint interval instead of waking to find nothing to write.
  bool changed = false;
  while (true) {
    // Sleep until input, the earliest timer an operator asked for, or a checkpoint or sweep due;
    // with none of these, until input (or Stop) arrives.
    const int64_t wait_from_ns = base_.clock->MonotonicNs();
    const int64_t due_ns = NextWakeNs(wait_from_ns, next_timer_ns, next_checkpoint_ns,
                                      next_sweep_ns, changed || carried_pending_.load());
    std::optional<EventBatchPtr> item = due_ns == INT64_MAX
                                            ? operator_queue_.Pop()
                                            : operator_queue_.PopFor(std::chrono::nanoseconds(
                                                  std::max<int64_t>(due_ns - wait_from_ns, 0)));
    if (item) {
      EventBatchPtr batch = std::move(*item);
      int64_t start = base_.clock->MonotonicNs();
      batches_in_->Inc();
      events_in_->Inc(batch->events.size());
      RunOperators(*batch);
      operator_step_seconds_->Observe(static_cast<double>(base_.clock->MonotonicNs() - start) *
                                      1e-9);
      batch->Clear();
      free_batches_.TryPush(batch);
      changed = true;
    } else if (operator_queue_.closed()) {
      break;
    }
    int64_t now_ns = base_.clock->MonotonicNs();
    if (now_ns >= next_timer_ns) {
      if (RunTimers(base_.clock->NowMs())) {
        changed = true;
        next_timer_ns = now_ns + tick_ns;
      }
    }
    if (settings_.string_sweep_interval_ms > 0 && now_ns >= next_sweep_ns) {
      // A sink that is behind postpones the sweep by a tick (not to the next step: an idle
      // thread would spin).
      next_sweep_ns =
          now_ns + (SweepStrings() ? settings_.string_sweep_interval_ms * 1'000'000 : tick_ns);
    }
    // A checkpoint that was never durable is retried at the next interval, step or not.
    if (carried_pending_.load()) changed = true;
    if (checkpoint_sink_ != nullptr && now_ns >= next_checkpoint_ns && changed) {
      next_checkpoint_ns = now_ns + settings_.checkpoint_interval_ms * 1'000'000;
      if (checkpoint_in_flight_.exchange(true)) {
        checkpoint_skipped_->Inc();
      } else {
        TakeCheckpoint();
        changed = false;
      }
    }
  }
  // A last checkpoint of the open state before operators flush it: a restart restores the open
  // panes, and the flushed (partial) results are replaced once they complete.
  // Abandon: neither (the engine lost the right to run; cli/node.h).
  const bool abandon = abandon_.load();
  if (checkpoint_sink_ != nullptr && !abandon) {
    checkpoint_in_flight_.store(true);
    TakeCheckpoint();
  }
  for (auto& o : operators_) {
    OutputBatch out;
    Status st = o->op->Close(out);
    if (!st.ok()) spdlog::warn("operator '{}' close: {}", o->name, st.ToString());
    if (!abandon) Route(*o, out);
  }
}

void Executor::SinkLoop(SinkSlot& slot) {
  SetThreadName("sink-" + slot.name);
  while (std::optional<OutputBatchPtr> item = slot.queue.Pop()) {
    const OutputBatch& batch = **item;
    if (batch.barrier != nullptr) {
      batch.barrier->Pass(!slot.failed_delivery);
      continue;
    }
    slot.batches_in->Inc();
    batch.kinds().ForEach([&](KindId kind) {
      if (Counter* c = slot.results_in[kind]) c->Inc(batch.Count(kind));
    });
    int64_t start = base_.clock->MonotonicNs();
    Status st = slot.sink->Write(batch);
    slot.write_seconds->Observe(static_cast<double>(base_.clock->MonotonicNs() - start) * 1e-9);
    if (!st.ok()) {
      slot.errors->Inc();
      slot.failed_delivery = true;
      spdlog::error("sink '{}': {}", slot.name, st.ToString());
    }
  }
  Status st = slot.sink->Flush();
  if (!st.ok()) spdlog::error("sink '{}' flush: {}", slot.name, st.ToString());
}

void Executor::StopThreads() {
  // A sink holding a failed write would otherwise hold the drain (and, through back-pressure, the
  // operator thread and the sources) forever.
  for (auto& s : sinks_) s->sink->Interrupt();
  stop_sources_.store(true);
  for (auto& s : sources_) s->source->Interrupt();
  for (auto& t : source_threads_) t.join();
  source_threads_.clear();
  operator_queue_.Close();
  if (operator_thread_.joinable()) operator_thread_.join();
  // The sinks that pass checkpoint barriers drain first: the last of them to pass the final
  // checkpoint's barrier hands it to the checkpoint sink, whose queue must still be open.
  for (SinkSlot* s : barrier_sinks_) s->queue.Close();
  for (size_t i = 0; i < sinks_.size(); ++i) {
    if (i < sink_threads_.size() && sink_threads_[i].joinable() &&
        std::find(barrier_sinks_.begin(), barrier_sinks_.end(), sinks_[i].get()) !=
            barrier_sinks_.end()) {
      sink_threads_[i].join();
    }
  }
  for (auto& s : sinks_) s->queue.Close();
  for (auto& t : sink_threads_) {
    if (t.joinable()) t.join();
  }
  sink_threads_.clear();
}

void Executor::Stop() {
  if (!running_.exchange(false)) return;
  StopThreads();
  for (auto& s : sources_) s->source->Close();
  for (auto& s : sinks_) s->sink->Close();
  base_.metrics->RemoveCallbacks(this);
}

std::string Executor::Endpoint(const std::string& stage) const {
  for (const auto& s : sources_) {
    if (s->name == stage) return s->source->Endpoint();
  }
  for (const auto& s : sinks_) {
    if (s->name == stage) return s->sink->Endpoint();
  }
  return {};
}

std::vector<std::pair<std::string, std::string>> Executor::Endpoints() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& s : sources_) {
    if (auto e = s->source->Endpoint(); !e.empty()) out.emplace_back(s->name, e);
  }
  for (const auto& s : sinks_) {
    if (auto e = s->sink->Endpoint(); !e.empty()) out.emplace_back(s->name, e);
  }
  return out;
}

}  // namespace inferscope
