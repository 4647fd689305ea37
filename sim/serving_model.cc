#include "sim/serving_model.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace inferscope::sim {

std::string_view ErrorName(RequestError error) {
  switch (error) {
    case RequestError::kNone:
      return "";
    case RequestError::kTimeout:
      return "timeout";
    case RequestError::kServerError:
      return "server_error";
    case RequestError::kClientError:
      return "client_error";
    case RequestError::kRateLimited:
      return "rate_limited";
  }
  return "other";
}

std::string_view CategoryName(Category category) {
  switch (category) {
    case Category::kChat:
      return "chat";
    case Category::kCode:
      return "code";
    case Category::kVision:
      return "vision";
    case Category::kCount:
      break;
  }
  return "other";
}

std::string_view GaugeName(Gauge gauge) {
  static constexpr std::string_view kNames[] = {
      "num_requests_running", "num_requests_waiting",  "kv_cache_usage",
      "num_preemptions",      "prefix_cache_hit_rate", "generation_tokens_per_s",
      "prompt_tokens_per_s",  "max_num_seqs",          "kv_cache_capacity_tokens",
  };
  static_assert(std::size(kNames) == static_cast<size_t>(Gauge::kCount));
  return kNames[static_cast<size_t>(gauge)];
}

Status ServingParams::Validate() const {
  auto positive = [](double v) { return std::isfinite(v) && v > 0; };
  auto non_negative = [](double v) { return std::isfinite(v) && v >= 0; };
  if (!positive(step_base_ms)) return Status::InvalidArgument("step_base_ms must be > 0");
  if (!non_negative(step_per_seq_ms) || !non_negative(step_per_kv_token_ms) ||
      !non_negative(prefill_per_token_ms)) {
    return Status::InvalidArgument(
        "step_per_seq_ms, step_per_kv_token_ms and prefill_per_token_ms must be >= 0");
  }
  if (block_tokens == 0) return Status::InvalidArgument("block_tokens must be >= 1");
  if (kv_capacity_tokens < static_cast<int64_t>(block_tokens) ||
      kv_capacity_tokens / block_tokens > std::numeric_limits<uint32_t>::max()) {
    return Status::InvalidArgument(
        "kv_capacity_tokens must be at least one block and < 2^32 blocks");
  }
  if (max_num_seqs == 0) return Status::InvalidArgument("max_num_seqs must be >= 1");
  if (max_num_batched_tokens < max_num_seqs) {
    return Status::InvalidArgument("max_num_batched_tokens must be >= max_num_seqs");
  }
  if (max_model_len < 2) return Status::InvalidArgument("max_model_len must be >= 2");
  if (max_waiting == 0) return Status::InvalidArgument("max_waiting must be >= 1");
  if (!(watermark >= 0 && watermark < 1)) {
    return Status::InvalidArgument("watermark must be in [0, 1)");
  }
  if (!(prefix_hit_mean >= 0 && prefix_hit_mean < 1)) {
    return Status::InvalidArgument("prefix_hit_mean must be in [0, 1)");
  }
  if (!positive(prefix_hit_concentration)) {
    return Status::InvalidArgument("prefix_hit_concentration must be > 0");
  }
  if (!(error_probability >= 0 && error_probability <= 1)) {
    return Status::InvalidArgument("error_probability must be in [0, 1]");
  }
  if (!non_negative(error_latency_ms)) {
    return Status::InvalidArgument("error_latency_ms must be >= 0");
  }
  if (!positive(timeout_s)) return Status::InvalidArgument("timeout_s must be > 0");
  return Status::Ok();
}

Status InstanceOptions::Validate() const {
  if (name.empty() || name.size() > 255) {
    return Status::InvalidArgument("instance name must be 1..255 bytes");
  }
  if (model.empty() || model.size() > 255) {
    return Status::InvalidArgument("instance " + name + ": model must be 1..255 bytes");
  }
  auto price = [](double v) { return std::isfinite(v) && v >= 0; };
  if (!price(input_price_per_1k) || !price(output_price_per_1k)) {
    return Status::InvalidArgument("instance " + name + ": prices must be >= 0");
  }
  for (double q : quality) {
    if (!(q >= 0 && q <= 1)) {
      return Status::InvalidArgument("instance " + name + ": quality must be in [0, 1]");
    }
  }
  if (!(std::isfinite(quality_concentration) && quality_concentration > 0)) {
    return Status::InvalidArgument("instance " + name + ": quality_concentration must be > 0");
  }
  return params.Validate().WithContext("instance " + name);
}

void ServingInstance::Ring::Grow() {
  std::vector<uint32_t> bigger(std::max<size_t>(16, buf_.size() * 2));
  for (size_t i = 0; i < size_; ++i) bigger[i] = buf_[(head_ + i) % buf_.size()];
  buf_ = std::move(bigger);
  head_ = 0;
}

void ServingInstance::Ring::PushBack(uint32_t v) {
  if (size_ == buf_.size()) Grow();
  buf_[(head_ + size_) % buf_.size()] = v;
  ++size_;
}

void ServingInstance::Ring::PushFront(uint32_t v) {
  if (size_ == buf_.size()) Grow();
  head_ = (head_ + buf_.size() - 1) % buf_.size();
  buf_[head_] = v;
  ++size_;
}

void ServingInstance::Ring::PopFront() {
  head_ = (head_ + 1) % buf_.size();
  --size_;
}

ServingInstance::ServingInstance(InstanceOptions options, uint32_t index, OutcomeSink* sink)
    : options_(std::move(options)),
      index_(index),
      sink_(sink),
      rng_(options_.seed),
      quality_rng_(options_.seed ^ 0x9E3779B97F4A7C15ULL) {
  eff_ = EffectiveAt(0);
  running_.reserve(options_.params.max_num_seqs);
}

ServingInstance::Effective ServingInstance::EffectiveAt(SimMs t) const {
  const ServingParams& p = options_.params;
  double kv = 1, slots = 1, slow = 1;
  bool prefix = p.prefix_caching;
  for (const Fault& f : faults_) {
    if (!f.ActiveAt(t)) continue;
    switch (f.kind) {
      case FaultKind::kKvCacheSmall:
        kv *= f.factor;
        break;
      case FaultKind::kSlotLimitLow:
        slots *= f.factor;
        break;
      case FaultKind::kSlowGpu:
        slow *= f.factor;
        break;
      case FaultKind::kPrefixCacheOff:
        prefix = false;
        break;
      case FaultKind::kLatencyDrift:
        slow *= 1 + (f.factor - 1) * (t - f.start_ms) / (f.end_ms - f.start_ms);
        break;
      case FaultKind::kBrownout:
        slow *= 1 + 10 * f.factor;
        break;
      case FaultKind::kErrorBurst:
      case FaultKind::kLoadDouble:
      case FaultKind::kDown:
      case FaultKind::kPriceChange:
      case FaultKind::kQualityDrop:
      case FaultKind::kFlapping:
        break;
    }
  }
  Effective e;
  double blocks = std::floor(static_cast<double>(p.kv_capacity_tokens / p.block_tokens) * kv);
  e.total_blocks = static_cast<uint32_t>(std::clamp(blocks, 1.0, 4294967295.0));
  e.max_num_seqs = static_cast<uint32_t>(
      std::clamp(std::floor(p.max_num_seqs * slots), 1.0, static_cast<double>(p.max_num_seqs)));
  e.slowdown = slow;
  e.prefix_caching = prefix;
  return e;
}

double ServingInstance::ErrorProbabilityAt(SimMs t) const {
  double ok = 1 - options_.params.error_probability;
  for (const Fault& f : faults_) {
    if ((f.kind == FaultKind::kErrorBurst || f.kind == FaultKind::kBrownout) && f.ActiveAt(t)) {
      ok *= 1 - f.factor;
    }
  }
  return 1 - ok;
}

double ServingInstance::FactorAt(FaultKind kind, SimMs t) const {
  double factor = 1;
  for (const Fault& f : faults_) {
    if (f.kind == kind && f.ActiveAt(t)) factor *= f.factor;
  }
  return factor;
}

bool ServingInstance::DownAt(SimMs t) const {
  for (const Fault& f : faults_) {
    if (f.DownAt(t)) return true;
  }
  return false;
}

bool ServingInstance::FailingAt(SimMs t) const {
  if (DownAt(t)) return true;
  for (const Fault& f : faults_) {
    if ((f.kind == FaultKind::kBrownout || f.kind == FaultKind::kErrorBurst) && f.ActiveAt(t)) {
      return true;
    }
  }
  return false;
}

double ServingInstance::QualityAt(Category category, SimMs t_ms) const {
  return std::clamp(
      options_.quality[static_cast<size_t>(category)] * FactorAt(FaultKind::kQualityDrop, t_ms),
      0.0, 1.0);
}

Expectation ServingInstance::Expect(const Request& r, SimMs now_ms) const {
  const ServingParams& p = options_.params;
  Expectation e;
  e.capable = !r.needs_vision || options_.vision;
  const double price = FactorAt(FaultKind::kPriceChange, now_ms);
  e.cost_usd = (r.prompt_tokens * options_.input_price_per_1k +
                r.output_tokens * options_.output_price_per_1k) /
               1000 * price;
  e.quality = QualityAt(r.category, now_ms);
  if (!e.capable || DownAt(now_ms) ||
      static_cast<uint64_t>(r.prompt_tokens) + r.output_tokens > p.max_model_len) {
    e.p_ok = 0;
    e.ttft_ms = e.e2e_ms = p.error_latency_ms;
    return e;
  }
  const Effective eff = EffectiveAt(now_ms);
  const double running = static_cast<double>(running_.size());
  const double waiting = static_cast<double>(waiting_.size());
  const double slots = eff.max_num_seqs;
  const double batch = std::min(running + waiting + 1, slots);
  // KV tokens a sequence holds: the running batch's mean, or this request's own when idle.
  const double own_kv = r.prompt_tokens + r.output_tokens / 2.0;
  const double kv_per_seq =
      running > 0 ? static_cast<double>(used_blocks_) * p.block_tokens / running : own_kv;
  // The pace: the model's step for the batch with this request, or the steps the instance has
  // been taking lately when they are slower (prefill chunks of other requests share the steps).
  double step = eff.slowdown * (p.step_base_ms + p.step_per_seq_ms * batch +
                                p.step_per_kv_token_ms * kv_per_seq * batch);
  if (busy_) step = std::max(step, step_ewma_ms_);
  // Waiting for a slot: the requests beyond the slots leave as running ones complete, `running`
  // per (mean remaining decode tokens) steps.
  double wait_ms = 0;
  const double excess = running + waiting + 1 - slots;
  if (excess > 0 && running > 0) {
    double remaining = 0;
    for (uint32_t s : running_) {
      remaining += slots_[s].output - std::min(slots_[s].generated, slots_[s].output);
    }
    wait_ms = excess * (remaining / running) / running * step;
  }
  // Prefill: this prompt's uncached tokens and (about) as much per request queued before it.
  const double hit = eff.prefix_caching ? p.prefix_hit_mean : 0;
  const double uncached = r.prompt_tokens * (1 - hit);
  const double prefill_steps = std::max(1.0, std::ceil(uncached / p.max_num_batched_tokens));
  const double prefill_ms =
      eff.slowdown * p.prefill_per_token_ms * uncached * (1 + std::min(waiting, slots));
  e.ttft_ms = wait_ms + prefill_steps * step + prefill_ms;
  e.e2e_ms = e.ttft_ms + (r.output_tokens - 1) * step;
  e.p_ok = e.e2e_ms > p.timeout_s * 1000 ? 0 : 1 - ErrorProbabilityAt(now_ms);
  return e;
}

double ServingInstance::kv_usage() const {
  return static_cast<double>(used_blocks_) / static_cast<double>(eff_.total_blocks);
}

InstanceView ServingInstance::View() const {
  InstanceView v;
  v.index = index_;
  v.name = options_.name;
  v.model = options_.model;
  v.engine = options_.engine;
  v.running = running();
  v.waiting = waiting();
  v.kv_usage = kv_usage();
  v.max_num_seqs = eff_.max_num_seqs;
  v.vision = options_.vision;
  v.input_price_per_1k = options_.input_price_per_1k;
  v.output_price_per_1k = options_.output_price_per_1k;
  return v;
}

uint32_t ServingInstance::NewSlot() {
  if (free_slots_.empty()) {
    slots_.emplace_back();
    return static_cast<uint32_t>(slots_.size() - 1);
  }
  uint32_t s = free_slots_.back();
  free_slots_.pop_back();
  return s;
}

void ServingInstance::FreeSlot(uint32_t s) { free_slots_.push_back(s); }

void ServingInstance::AccountRunning(SimMs t) {
  totals_.running_ms += static_cast<double>(running_.size()) * (t - last_change_ms_);
  last_change_ms_ = t;
}

void ServingInstance::Arrive(const Request& r) {
  const ServingParams& p = options_.params;
  ++totals_.arrived;
  RequestOutcome o;
  o.instance = index_;
  o.id = r.id;
  o.arrival_ms = r.arrival_ms;
  o.prompt_tokens = r.prompt_tokens;
  o.category = r.category;
  RequestError refused = RequestError::kNone;
  std::uniform_real_distribution<double> u(0, 1);
  const double draw = u(rng_);  // drawn for every request, so a fault changes no other draw
  if (r.needs_vision && !options_.vision) {
    refused = RequestError::kClientError;  // the backend rejects the image input
    o.capability_violation = true;
    o.e2e_ms = p.error_latency_ms;
    ++totals_.capability_violations;
  } else if (DownAt(r.arrival_ms)) {
    refused = RequestError::kServerError;  // connection refused
    o.e2e_ms = p.error_latency_ms;
  } else if (static_cast<uint64_t>(r.prompt_tokens) + r.output_tokens > p.max_model_len) {
    refused = RequestError::kClientError;
  } else if (draw < ErrorProbabilityAt(r.arrival_ms)) {
    refused = RequestError::kServerError;
    o.e2e_ms = p.error_latency_ms;
  } else if (waiting_.size() >= p.max_waiting) {
    refused = RequestError::kRateLimited;
  }
  // The prefix-cache hit of this request, used if it is admitted while the cache is on.
  double hit = 0;
  if (p.prefix_hit_mean > 0) {
    const double c = p.prefix_hit_concentration;
    std::gamma_distribution<double> ga(p.prefix_hit_mean * c, 1),
        gb((1 - p.prefix_hit_mean) * c, 1);
    double a = ga(rng_), b = gb(rng_);
    hit = a + b > 0 ? a / (a + b) : 0;
  }
  if (refused != RequestError::kNone) {
    o.time_ms = r.arrival_ms + o.e2e_ms;
    o.error = refused;
    ++totals_.failed;
    if (sink_ != nullptr) sink_->OnRequest(o);
    return;
  }
  uint32_t s = NewSlot();
  Slot& slot = slots_[s];
  slot = Slot{};
  slot.id = r.id;
  slot.arrival_ms = r.arrival_ms;
  slot.prompt = r.prompt_tokens;
  slot.output = r.output_tokens;
  slot.hit_fraction = static_cast<float>(hit);
  slot.category = r.category;
  waiting_.PushBack(s);
  if (!busy_) StartStep(r.arrival_ms);
}

void ServingInstance::Emit(uint32_t s, SimMs t, RequestError error) {
  const Slot& slot = slots_[s];
  RequestOutcome o;
  o.instance = index_;
  o.id = slot.id;
  o.arrival_ms = slot.arrival_ms;
  o.time_ms = t;
  o.e2e_ms = t - slot.arrival_ms;
  if (slot.first_token_ms >= 0) {
    o.ttft_ms = slot.first_token_ms - slot.arrival_ms;
    if (slot.generated >= 2) {
      o.tpot_ms = (t - slot.first_token_ms) / static_cast<double>(slot.generated - 1);
    }
  }
  o.prompt_tokens = slot.prompt;
  o.output_tokens = slot.generated;
  o.cached_tokens = slot.cached;
  o.error = error;
  o.category = slot.category;
  const double billed_prompt = slot.first_token_ms >= 0 ? slot.prompt : 0;
  o.cost_usd = (billed_prompt * options_.input_price_per_1k +
                slot.generated * options_.output_price_per_1k) /
               1000 * FactorAt(FaultKind::kPriceChange, t);
  if (error == RequestError::kNone) {
    const double q = std::clamp(QualityAt(slot.category, t), 1e-6, 1 - 1e-6);
    const double c = options_.quality_concentration;
    std::gamma_distribution<double> ga(q * c, 1), gb((1 - q) * c, 1);
    const double a = ga(quality_rng_), b = gb(quality_rng_);
    o.quality = a + b > 0 ? a / (a + b) : q;
  }
  if (sink_ != nullptr) sink_->OnRequest(o);
}

void ServingInstance::Fail(uint32_t s, SimMs t, RequestError error) {
  Emit(s, t, error);
  used_blocks_ -= slots_[s].blocks;
  slots_[s].blocks = 0;
  ++totals_.failed;
  if (error == RequestError::kTimeout) ++totals_.timeouts;
  FreeSlot(s);
}

void ServingInstance::Complete(uint32_t s, SimMs t) {
  Emit(s, t, RequestError::kNone);
  used_blocks_ -= slots_[s].blocks;
  slots_[s].blocks = 0;
  ++totals_.completed;
  FreeSlot(s);
}

void ServingInstance::PreemptNewest() {
  uint32_t s = running_.back();
  running_.pop_back();
  Slot& slot = slots_[s];
  used_blocks_ -= slot.blocks;
  slot.blocks = 0;
  slot.computed = 0;
  slot.scheduled = 0;
  slot.admitted_before = true;
  waiting_.PushFront(s);
  ++interval_preemptions_;
  ++totals_.preemptions;
}

void ServingInstance::ExpireTimeouts(SimMs t) {
  const double timeout_ms = options_.params.timeout_s * 1000;
  // Running: anywhere in the batch.
  size_t kept = 0;
  for (uint32_t s : running_) {
    if (slots_[s].arrival_ms + timeout_ms <= t) {
      Fail(s, t, RequestError::kTimeout);
    } else {
      running_[kept++] = s;
    }
  }
  running_.resize(kept);
  // Waiting: the queue is in arrival order (FCFS admission; a preempted request arrived before
  // every request still waiting and goes back to the front), so expired ones are at the front.
  while (!waiting_.empty() && slots_[waiting_.front()].arrival_ms + timeout_ms <= t) {
    uint32_t s = waiting_.front();
    waiting_.PopFront();
    Fail(s, t, RequestError::kTimeout);
  }
}

void ServingInstance::StartStep(SimMs t) {
  const ServingParams& p = options_.params;
  AccountRunning(t);
  eff_ = EffectiveAt(t);
  if (DownAt(t)) {
    // The process is gone: every request it held fails (connection reset).
    for (uint32_t s : running_) Fail(s, t, RequestError::kServerError);
    running_.clear();
    while (!waiting_.empty()) {
      uint32_t s = waiting_.front();
      waiting_.PopFront();
      Fail(s, t, RequestError::kServerError);
    }
    busy_ = false;
    return;
  }
  ExpireTimeouts(t);
  // A smaller cache (kv_cache_small starting) holds what fits; the newest requests go back.
  while (used_blocks_ > eff_.total_blocks && !running_.empty()) PreemptNewest();
  // A lower slot limit lets the running requests finish but admits none beyond it.

  uint32_t budget = p.max_num_batched_tokens;
  bool preempted = false, stalled = false;
  for (uint32_t s : running_) slots_[s].scheduled = 0;
  uint32_t seqs = 0, prefill_tokens = 0;
  uint64_t kv_tokens = 0;
  // Running requests, oldest first: one token each in decode first, then prompt chunks of those
  // in prefill (as vLLM's chunked prefill: decodes are never starved by a long prompt).
  for (int pass = 0; pass < 2 && !stalled; ++pass) {
    for (size_t i = 0; i < running_.size(); ++i) {
      uint32_t s = running_[i];
      Slot& slot = slots_[s];
      const bool prefilling = slot.computed < slot.prefill_target;
      if (prefilling != (pass == 1)) continue;
      slot.scheduled = 0;
      uint32_t n = prefilling ? std::min(slot.prefill_target - slot.computed, budget)
                              : std::min<uint32_t>(1, budget);
      if (n == 0) continue;
      uint32_t need = BlocksFor(slot.computed + n) - slot.blocks;
      while (need > eff_.total_blocks - used_blocks_ && running_.back() != s) {
        PreemptNewest();
        preempted = true;
      }
      if (need > eff_.total_blocks - used_blocks_) {  // it is the newest itself
        PreemptNewest();
        preempted = true;
        stalled = true;
        break;
      }
      used_blocks_ += need;
      slot.blocks += need;
      slot.scheduled = n;
      budget -= n;
      ++seqs;
      kv_tokens += slot.computed + n;
      if (prefilling) prefill_tokens += n;
    }
  }
  // Admit from the front of the queue (not in a step that had to preempt, as vLLM).
  const uint32_t reserve = static_cast<uint32_t>(p.watermark * eff_.total_blocks);
  while ((!preempted || seqs == 0) && budget > 0 && running_.size() < eff_.max_num_seqs &&
         !waiting_.empty()) {
    uint32_t s = waiting_.front();
    Slot& slot = slots_[s];
    // A recomputed request prefills its prompt and the tokens it had generated, but the last.
    uint32_t target = slot.prompt + (slot.generated > 0 ? slot.generated - 1 : 0);
    uint32_t cached =
        eff_.prefix_caching
            ? static_cast<uint32_t>(slot.hit_fraction * static_cast<float>(slot.prompt))
            : 0;
    cached = std::min(cached, target - 1);  // at least one token is computed
    uint32_t n = std::min(target - cached, budget);
    uint32_t need = BlocksFor(cached + n);
    if (BlocksFor(target + (slot.output - slot.generated)) > eff_.total_blocks) {
      // Could never fit, even alone: refuse rather than recompute forever.
      waiting_.PopFront();
      Fail(s, t, RequestError::kClientError);
      continue;
    }
    if (need + reserve > eff_.total_blocks - used_blocks_ &&
        !(running_.empty() && need <= eff_.total_blocks - used_blocks_)) {
      break;
    }
    waiting_.PopFront();
    if (!slot.admitted_before) slot.cached = cached;
    interval_prompt_scheduled_ += target;
    interval_prompt_hits_ += cached;
    slot.computed = cached;
    slot.prefill_target = target;
    slot.blocks = need;
    used_blocks_ += need;
    slot.scheduled = n;
    budget -= n;
    ++seqs;
    kv_tokens += cached + n;
    prefill_tokens += n;
    running_.push_back(s);
  }
  if (seqs == 0) {
    busy_ = false;
    return;
  }
  double ms = p.step_base_ms + p.step_per_seq_ms * seqs +
              p.step_per_kv_token_ms * static_cast<double>(kv_tokens) +
              p.prefill_per_token_ms * prefill_tokens;
  ms *= eff_.slowdown;
  step_ewma_ms_ = step_ewma_ms_ == 0 ? ms : 0.8 * step_ewma_ms_ + 0.2 * ms;
  busy_ = true;
  step_end_ms_ = t + ms;
  totals_.busy_ms += ms;
  ++totals_.steps;
}

void ServingInstance::Step() {
  if (!busy_) return;
  const SimMs t = step_end_ms_;
  AccountRunning(t);
  size_t kept = 0;
  for (uint32_t s : running_) {
    Slot& slot = slots_[s];
    const uint32_t n = slot.scheduled;
    slot.scheduled = 0;
    if (n > 0) {
      const bool prefilling = slot.computed < slot.prefill_target;
      slot.computed += n;
      if (prefilling) {
        interval_prefilled_ += n;
        totals_.prefill_tokens += n;
      }
      // A decode step, or the step that finishes the prefill, samples one token.
      if (slot.computed >= slot.prefill_target) {
        ++slot.generated;
        ++interval_generated_;
        ++totals_.generated_tokens;
        if (slot.first_token_ms < 0) slot.first_token_ms = t;
        if (slot.generated >= slot.output) {
          Complete(s, t);
          continue;
        }
      }
    }
    running_[kept++] = s;
  }
  running_.resize(kept);
  busy_ = false;
  StartStep(t);
}

void ServingInstance::SampleGauges(SimMs now_ms, double interval_ms) {
  if (sink_ == nullptr) return;
  if (DownAt(now_ms)) {
    // The scrape fails: no sample; the interval's counters start again.
    interval_preemptions_ = interval_generated_ = interval_prefilled_ = 0;
    interval_prompt_scheduled_ = interval_prompt_hits_ = 0;
    return;
  }
  if (!busy_) eff_ = EffectiveAt(now_ms);  // idle: nothing is held, the faults of now apply
  const double per_s = interval_ms > 0 ? 1000.0 / interval_ms : 0;
  GaugeSample g;
  g.instance = index_;
  g.time_ms = now_ms;
  auto emit = [&](Gauge gauge, double value) {
    g.gauge = gauge;
    g.value = value;
    sink_->OnGauge(g);
  };
  emit(Gauge::kNumRequestsRunning, static_cast<double>(running_.size()));
  emit(Gauge::kNumRequestsWaiting, static_cast<double>(waiting_.size()));
  emit(Gauge::kKvCacheUsage, kv_usage());
  emit(Gauge::kNumPreemptions, static_cast<double>(interval_preemptions_));
  if (interval_prompt_scheduled_ > 0) {
    emit(Gauge::kPrefixCacheHitRate, static_cast<double>(interval_prompt_hits_) /
                                         static_cast<double>(interval_prompt_scheduled_));
  }
  emit(Gauge::kGenerationTokensPerS, static_cast<double>(interval_generated_) * per_s);
  emit(Gauge::kPromptTokensPerS, static_cast<double>(interval_prefilled_) * per_s);
  emit(Gauge::kMaxNumSeqs, eff_.max_num_seqs);
  emit(Gauge::kKvCacheCapacityTokens,
       static_cast<double>(eff_.total_blocks) * options_.params.block_tokens);
  interval_preemptions_ = interval_generated_ = interval_prefilled_ = 0;
  interval_prompt_scheduled_ = interval_prompt_hits_ = 0;
}

}  // namespace inferscope::sim
