#include "workflows/workflow.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <random>

#include "pipeline/coding.h"
#include "pipeline/config.h"
#include "pipeline/json_text.h"
#include "pipeline/names.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr std::string_view kStateNames[kNumWorkflowStates] = {
    "PENDING_APPROVAL", "APPROVED", "APPLIED", "COMPLETED", "ROLLED_BACK", "FAILED", "REJECTED"};

constexpr int64_t kDefaultPeriodMs = 10 * 60 * 1000;

Status Invalid(std::string_view field, std::string message) {
  return Status::InvalidArgument(std::string(field) + ": " + message);
}

std::string_view StageOf(WorkflowState s) {
  switch (s) {
    case WorkflowState::kPendingApproval:
      return "approval";
    case WorkflowState::kApproved:
      return "baseline";
    case WorkflowState::kApplied:
      return "canary";
    default:
      return "done";
  }
}

Result<std::string> TextField(const json& body, std::string_view field, bool required,
                              size_t max_bytes) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) {
    if (required) return Invalid(field, "is required");
    return std::string();
  }
  if (!it->is_string()) return Invalid(field, "expected a string");
  std::string s = it->get<std::string>();
  if (required && s.empty()) return Invalid(field, "must not be empty");
  if (s.size() > max_bytes) {
    return Invalid(field, "must be at most " + std::to_string(max_bytes) + " bytes");
  }
  return s;
}

Result<int64_t> PeriodField(const json& body, std::string_view field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return kDefaultPeriodMs;
  std::optional<int64_t> ms;
  if (it->is_number_integer()) {
    ms = it->get<int64_t>();
  } else if (it->is_string()) {
    ms = ParseDurationMs(it->get<std::string>());
  }
  if (!ms) return Invalid(field, "expected a duration (\"10m\") or milliseconds");
  if (*ms < 1000 || *ms > kMaxWorkflowPeriodMs) return Invalid(field, "must be in [1s, 7d]");
  return *ms;
}

Result<WorkflowMetric> MetricFromJson(const json& j, std::string_view field, double quantile) {
  if (!j.is_object()) return Invalid(field, "expected an object {metric, quantile, direction}");
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "metric" && it.key() != "quantile" && it.key() != "direction") {
      return Invalid(std::string(field) + "." + it.key(),
                     "unknown field (expected metric, quantile, direction)");
    }
  }
  WorkflowMetric m;
  m.quantile = quantile;
  Result<std::string> metric = TextField(j, "metric", true, kMaxNameBytes);
  if (!metric.ok()) return Invalid(field, metric.status().message());
  m.metric = *metric;
  if (auto q = j.find("quantile"); q != j.end()) {
    if (!q->is_number() || !(q->get<double>() > 0 && q->get<double>() < 1)) {
      return Invalid(std::string(field) + ".quantile", "expected a number in (0, 1)");
    }
    m.quantile = q->get<double>();
  }
  if (auto d = j.find("direction"); d != j.end()) {
    if (!d->is_string() || (*d != "decrease" && *d != "increase")) {
      return Invalid(std::string(field) + ".direction", "expected \"decrease\" or \"increase\"");
    }
    m.lower_is_better = *d == "decrease";
  }
  return m;
}

json MetricToJson(const WorkflowMetric& m) {
  return {{"metric", m.metric},
          {"quantile", m.quantile},
          {"direction", m.lower_is_better ? "decrease" : "increase"}};
}

}  // namespace

std::string_view WorkflowStateName(WorkflowState state) {
  const size_t i = static_cast<size_t>(state);
  return i < kNumWorkflowStates ? kStateNames[i] : "UNKNOWN";
}

std::optional<WorkflowState> ParseWorkflowState(std::string_view name) {
  for (size_t i = 0; i < kNumWorkflowStates; ++i) {
    if (kStateNames[i] == name) return static_cast<WorkflowState>(i);
  }
  return std::nullopt;
}

bool IsTerminal(WorkflowState state) {
  return state == WorkflowState::kCompleted || state == WorkflowState::kRolledBack ||
         state == WorkflowState::kFailed || state == WorkflowState::kRejected;
}

bool IsLegalTransition(WorkflowState from, WorkflowState to) {
  using S = WorkflowState;
  switch (from) {
    case S::kPendingApproval:
      return to == S::kApproved || to == S::kRejected;
    case S::kApproved:
      return to == S::kApplied || to == S::kRejected || to == S::kFailed;
    case S::kApplied:
      return to == S::kCompleted || to == S::kRolledBack || to == S::kFailed;
    default:
      return false;
  }
}

json WorkflowToJson(const Workflow& w) {
  json change = json::object();
  for (const auto& [option, value] : w.change) change[option] = value;
  json guards = json::array();
  for (const WorkflowMetric& g : w.guards) guards.push_back(MetricToJson(g));
  json history = json::array();
  for (const WorkflowTransition& t : w.history) {
    history.push_back(
        {{"state", WorkflowStateName(t.state)}, {"at", t.at_ms}, {"by", t.by}, {"note", t.note}});
  }
  return {{"id", w.id},
          {"instance", w.instance},
          {"model", w.model},
          {"engine", w.engine},
          {"change", std::move(change)},
          {"description", w.description},
          {"target", MetricToJson(w.target)},
          {"guards", std::move(guards)},
          {"baseline_ms", w.baseline_ms},
          {"canary_ms", w.canary_ms},
          {"auto_approve", w.auto_approve},
          {"created_by", w.created_by},
          {"state", WorkflowStateName(w.state)},
          {"stage", StageOf(w.state)},
          {"progress", w.progress},
          {"created_at", w.created_at_ms},
          {"updated_at", w.updated_at_ms},
          {"applied_at", w.applied_at_ms ? json(*w.applied_at_ms) : json()},
          {"reason", w.reason},
          {"verdict", w.verdict.empty() ? json() : json(w.verdict)},
          {"evidence", w.evidence},
          {"history", std::move(history)}};
}

Result<Workflow> WorkflowFromRequest(const json& body) {
  if (!body.is_object()) return Status::InvalidArgument("the body must be a JSON object");
  static constexpr std::string_view kKnown[] = {
      "instance", "model",    "engine", "change",       "description", "target",
      "guards",   "baseline", "canary", "auto_approve", "created_by"};
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (std::find(std::begin(kKnown), std::end(kKnown), it.key()) == std::end(kKnown)) {
      return Invalid(it.key(),
                     "unknown field (expected instance, model, engine, change, description, "
                     "target, guards, baseline, canary, auto_approve, created_by)");
    }
  }
  Workflow w;
  Result<std::string> s = TextField(body, "instance", true, kMaxNameBytes);
  if (!s.ok()) return s.status();
  w.instance = *s;
  if (!(s = TextField(body, "model", true, kMaxNameBytes)).ok()) return s.status();
  w.model = *s;
  if (!(s = TextField(body, "engine", false, kMaxNameBytes)).ok()) return s.status();
  w.engine = s->empty() ? w.instance.substr(0, w.instance.find('-')) : *s;
  if (!(s = TextField(body, "description", false, kMaxWorkflowTextBytes)).ok()) return s.status();
  w.description = *s;
  if (!(s = TextField(body, "created_by", false, kMaxNameBytes)).ok()) return s.status();
  w.created_by = *s;
  if (auto c = body.find("change"); c != body.end() && !c->is_null()) {
    if (!c->is_object()) return Invalid("change", "expected an object {option: value}");
    if (c->size() > kMaxWorkflowChanges) {
      return Invalid("change", "at most " + std::to_string(kMaxWorkflowChanges) + " options");
    }
    for (auto it = c->begin(); it != c->end(); ++it) {
      if (it.key().empty() || it.key().size() > kMaxNameBytes) {
        return Invalid("change", "option names must be 1..255 bytes");
      }
      std::string value;
      if (it->is_string()) {
        value = it->get<std::string>();
      } else if (it->is_number() || it->is_boolean()) {
        value = it->dump();
      } else {
        return Invalid("change." + it.key(), "expected a string, number or boolean");
      }
      if (value.size() > kMaxWorkflowTextBytes) {
        return Invalid("change." + it.key(), "value too long");
      }
      w.change.emplace_back(it.key(), std::move(value));
    }
  }
  if (auto t = body.find("target"); t != body.end() && !t->is_null()) {
    Result<WorkflowMetric> m = MetricFromJson(*t, "target", 0.5);
    if (!m.ok()) return m.status();
    w.target = *m;
  } else {
    w.target = {"ttft_ms", 0.5, true};
  }
  if (auto g = body.find("guards"); g != body.end() && !g->is_null()) {
    if (!g->is_array()) return Invalid("guards", "expected an array");
    if (g->size() > kMaxWorkflowGuards) {
      return Invalid("guards", "at most " + std::to_string(kMaxWorkflowGuards));
    }
    for (size_t i = 0; i < g->size(); ++i) {
      Result<WorkflowMetric> m = MetricFromJson((*g)[i], "guards[" + std::to_string(i) + "]", 0.95);
      if (!m.ok()) return m.status();
      w.guards.push_back(*m);
    }
  } else {
    w.guards = {{"e2e_ms", 0.95, true}, {std::string(kErrorRatioMetric), 0.5, true}};
  }
  for (const WorkflowMetric& g : w.guards) {
    if (g.metric == w.target.metric) {
      return Invalid("guards", "'" + g.metric + "' is the target metric");
    }
  }
  Result<int64_t> period = PeriodField(body, "baseline");
  if (!period.ok()) return period.status();
  w.baseline_ms = *period;
  if (!(period = PeriodField(body, "canary")).ok()) return period.status();
  w.canary_ms = *period;
  if (auto a = body.find("auto_approve"); a != body.end() && !a->is_null()) {
    if (!a->is_boolean()) return Invalid("auto_approve", "expected true or false");
    w.auto_approve = a->get<bool>();
  }
  return w;
}

Result<Workflow> WorkflowFromStored(const json& j) {
  if (!j.is_object()) return Status::Corruption("a stored workflow must be a JSON object");
  try {
    Workflow w;
    w.id = j.at("id").get<std::string>();
    w.instance = j.at("instance").get<std::string>();
    w.model = j.at("model").get<std::string>();
    w.engine = j.value("engine", "");
    for (auto it = j.at("change").begin(); it != j.at("change").end(); ++it) {
      w.change.emplace_back(it.key(), it->get<std::string>());
    }
    w.description = j.value("description", "");
    auto metric = [](const json& m) {
      return WorkflowMetric{m.at("metric").get<std::string>(), m.at("quantile").get<double>(),
                            m.at("direction").get<std::string>() == "decrease"};
    };
    w.target = metric(j.at("target"));
    for (const json& g : j.at("guards")) w.guards.push_back(metric(g));
    w.baseline_ms = j.at("baseline_ms").get<int64_t>();
    w.canary_ms = j.at("canary_ms").get<int64_t>();
    w.auto_approve = j.value("auto_approve", false);
    w.created_by = j.value("created_by", "");
    std::optional<WorkflowState> state = ParseWorkflowState(j.at("state").get<std::string>());
    if (!state) return Status::Corruption("unknown state");
    w.state = *state;
    w.progress = j.value("progress", 0.0);
    w.created_at_ms = j.at("created_at").get<int64_t>();
    w.updated_at_ms = j.at("updated_at").get<int64_t>();
    if (!j.at("applied_at").is_null()) w.applied_at_ms = j.at("applied_at").get<int64_t>();
    w.reason = j.value("reason", "");
    if (j.contains("verdict") && j["verdict"].is_string()) w.verdict = j["verdict"];
    if (j.contains("evidence")) w.evidence = j["evidence"];
    for (const json& t : j.at("history")) {
      std::optional<WorkflowState> s = ParseWorkflowState(t.at("state").get<std::string>());
      if (!s) return Status::Corruption("unknown state in history");
      w.history.push_back({*s, t.at("at").get<int64_t>(), t.value("by", ""), t.value("note", "")});
    }
    return w;
  } catch (const json::exception& e) {
    return Status::Corruption(std::string("stored workflow: ") + e.what());
  }
}

// --- WorkflowRegistry ---

Status WorkflowRegistry::Load() {
  if (store_ == nullptr) return Status::Ok();
  std::map<std::string, Workflow, std::less<>> loaded;
  Status parse_error;
  Status st = store_->Scan([&](std::string_view key, std::string_view value) {
    json j = json::parse(value, nullptr, false);
    Result<Workflow> w = WorkflowFromStored(j);
    if (!w.ok()) {
      parse_error =
          Status::Corruption("workflow '" + std::string(key) + "': " + w.status().message());
      return false;
    }
    w->id = std::string(key);
    loaded.emplace(w->id, std::move(w).value());
    return true;
  });
  INFERSCOPE_RETURN_IF_ERROR(st);
  INFERSCOPE_RETURN_IF_ERROR(parse_error);
  std::unique_lock lock(mu_);
  workflows_ = std::move(loaded);
  version_.fetch_add(1, std::memory_order_acq_rel);
  last_drop_ms_ = INT64_MIN;
  return DropExpired(clock_->NowMs());
}

Status WorkflowRegistry::DropExpired(int64_t now_ms) {
  // A scan a minute is enough for a 30-day retention; a full registry always looks.
  if (workflows_.size() < kMaxWorkflows && last_drop_ms_ != INT64_MIN &&
      now_ms - last_drop_ms_ < 60'000) {
    return Status::Ok();
  }
  last_drop_ms_ = now_ms;
  for (auto it = workflows_.begin(); it != workflows_.end();) {
    const Workflow& w = it->second;
    if (!IsTerminal(w.state) || now_ms - w.updated_at_ms <= kTerminalRetentionMs) {
      ++it;
      continue;
    }
    if (store_ != nullptr) INFERSCOPE_RETURN_IF_ERROR(store_->Delete(w.id));
    it = workflows_.erase(it);
  }
  return Status::Ok();
}

void WorkflowRegistry::RecordChange(const Workflow& w) {
  WorkflowChange c;
  c.seq = ++last_seq_;
  c.id = w.id;
  c.instance = w.instance;
  c.model = w.model;
  c.state = w.state;
  if (!w.history.empty()) {
    c.at_ms = w.history.back().at_ms;
    c.by = w.history.back().by;
    c.note = w.history.back().note;
  }
  c.verdict = w.verdict;
  c.progress = w.progress;
  changes_.push_back(std::move(c));
  while (changes_.size() > kMaxPendingChanges) changes_.pop_front();
  if (on_change_) on_change_();
}

std::vector<WorkflowChange> WorkflowRegistry::ChangesSince(uint64_t* seq, uint64_t* dropped) const {
  std::shared_lock lock(mu_);
  std::vector<WorkflowChange> out;
  *dropped = 0;
  if (!changes_.empty() && changes_.front().seq > *seq + 1) {
    *dropped = changes_.front().seq - *seq - 1;
  }
  for (const WorkflowChange& c : changes_) {
    if (c.seq > *seq) out.push_back(c);
  }
  *seq = std::max(*seq, last_seq_);
  return out;
}

uint64_t WorkflowRegistry::last_change_seq() const {
  std::shared_lock lock(mu_);
  return last_seq_;
}

Status WorkflowRegistry::Persist(const Workflow& w) {
  if (store_ == nullptr) return Status::Ok();
  return store_->Put(w.id, ToJsonText(WorkflowToJson(w)));
}

Result<Workflow> WorkflowRegistry::Create(Workflow w) {
  if (w.instance.empty()) return Invalid("instance", "is required");
  if (w.model.empty()) return Invalid("model", "is required");
  if (w.target.metric.empty()) return Invalid("target", "a metric is required");
  if (w.baseline_ms <= 0 || w.canary_ms <= 0) {
    return Status::InvalidArgument("baseline and canary must be positive durations");
  }
  std::unique_lock lock(mu_);
  const int64_t now = clock_->NowMs();
  INFERSCOPE_RETURN_IF_ERROR(DropExpired(now));
  if (workflows_.size() >= kMaxWorkflows) {
    return Status::Unavailable("too many workflows (" + std::to_string(kMaxWorkflows) +
                               " held; finished ones are kept 30 d)");
  }
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  do {
    w.id = Hex64(rng() ^ (++next_id_salt_ * 0x9E3779B97F4A7C15ULL));
  } while (workflows_.count(w.id) != 0);
  w.created_at_ms = now;
  w.updated_at_ms = now;
  w.applied_at_ms.reset();
  w.progress = 0;
  w.reason.clear();
  w.verdict.clear();
  w.evidence = json::object();
  w.history.clear();
  w.state = WorkflowState::kPendingApproval;
  w.history.push_back({WorkflowState::kPendingApproval, now, "api:" + w.created_by, "created"});
  if (w.auto_approve) {
    w.state = WorkflowState::kApproved;
    w.history.push_back({WorkflowState::kApproved, now, "auto_approve", "approved on creation"});
  }
  INFERSCOPE_RETURN_IF_ERROR(Persist(w));
  workflows_.emplace(w.id, w);
  if (w.auto_approve) {
    Workflow pending = w;  // the stream shows both states entered
    pending.state = WorkflowState::kPendingApproval;
    pending.history.pop_back();
    RecordChange(pending);
  }
  RecordChange(w);
  version_.fetch_add(1, std::memory_order_acq_rel);
  return w;
}

Result<Workflow> WorkflowRegistry::Transition(std::string_view id, WorkflowState to,
                                              std::string_view by, std::string_view note,
                                              const std::function<void(Workflow&)>& edit) {
  auto it = workflows_.find(id);
  if (it == workflows_.end()) return Status::NotFound("no workflow '" + std::string(id) + "'");
  if (!IsLegalTransition(it->second.state, to)) {
    return Status::FailedPrecondition("workflow '" + std::string(id) + "' is " +
                                      std::string(WorkflowStateName(it->second.state)) +
                                      "; it cannot become " + std::string(WorkflowStateName(to)));
  }
  Workflow next = it->second;
  const int64_t now = clock_->NowMs();
  next.state = to;
  next.updated_at_ms = now;
  next.history.push_back({to, now, std::string(by), std::string(note)});
  if (edit) edit(next);
  INFERSCOPE_RETURN_IF_ERROR(Persist(next));
  it->second = next;
  RecordChange(next);
  version_.fetch_add(1, std::memory_order_acq_rel);
  return next;
}

Result<Workflow> WorkflowRegistry::Approve(std::string_view id, std::string_view by) {
  std::unique_lock lock(mu_);
  return Transition(id, WorkflowState::kApproved, std::string("api:") + std::string(by), "",
                    nullptr);
}

Result<Workflow> WorkflowRegistry::Reject(std::string_view id, std::string_view by,
                                          std::string_view reason) {
  std::unique_lock lock(mu_);
  return Transition(id, WorkflowState::kRejected, std::string("api:") + std::string(by), reason,
                    [&](Workflow& w) { w.reason = std::string(reason); });
}

Result<Workflow> WorkflowRegistry::MarkApplied(std::string_view id, int64_t applied_at_ms,
                                               std::string_view by) {
  std::unique_lock lock(mu_);
  return Transition(id, WorkflowState::kApplied, std::string("api:") + std::string(by), "",
                    [&](Workflow& w) { w.applied_at_ms = applied_at_ms; });
}

Result<Workflow> WorkflowRegistry::Finish(std::string_view id, WorkflowState to,
                                          std::string_view verdict, json evidence,
                                          std::string_view reason) {
  if (to != WorkflowState::kCompleted && to != WorkflowState::kRolledBack &&
      to != WorkflowState::kFailed) {
    return Status::InvalidArgument("Finish: the canary ends in COMPLETED, ROLLED_BACK or FAILED");
  }
  std::unique_lock lock(mu_);
  return Transition(id, to, "canary", reason, [&](Workflow& w) {
    w.verdict = std::string(verdict);
    w.evidence = std::move(evidence);
    w.reason = std::string(reason);
    if (auto f = w.evidence.find("fraction"); f != w.evidence.end() && f->is_number()) {
      w.progress = std::clamp(f->get<double>(), 0.0, 1.0);
    }
  });
}

Status WorkflowRegistry::RecordProgress(std::string_view id, double progress, json evidence) {
  std::unique_lock lock(mu_);
  auto it = workflows_.find(id);
  if (it == workflows_.end()) return Status::NotFound("no workflow '" + std::string(id) + "'");
  if (it->second.state != WorkflowState::kApplied) {
    return Status::FailedPrecondition("workflow '" + std::string(id) + "' is not APPLIED");
  }
  Workflow next = it->second;
  next.progress = std::clamp(std::isfinite(progress) ? progress : 0.0, 0.0, 1.0);
  next.evidence = std::move(evidence);
  next.updated_at_ms = clock_->NowMs();
  INFERSCOPE_RETURN_IF_ERROR(Persist(next));
  it->second = std::move(next);
  return Status::Ok();
}

std::optional<Workflow> WorkflowRegistry::Get(std::string_view id) const {
  std::shared_lock lock(mu_);
  auto it = workflows_.find(id);
  if (it == workflows_.end()) return std::nullopt;
  return it->second;
}

std::vector<Workflow> WorkflowRegistry::List() const {
  std::shared_lock lock(mu_);
  std::vector<Workflow> out;
  out.reserve(workflows_.size());
  for (const auto& [id, w] : workflows_) out.push_back(w);
  return out;
}

std::vector<Workflow> WorkflowRegistry::Active() const {
  std::shared_lock lock(mu_);
  std::vector<Workflow> out;
  for (const auto& [id, w] : workflows_) {
    if (!IsTerminal(w.state)) out.push_back(w);
  }
  return out;
}

size_t WorkflowRegistry::size() const {
  std::shared_lock lock(mu_);
  return workflows_.size();
}

}  // namespace inferscope
