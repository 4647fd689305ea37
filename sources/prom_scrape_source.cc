#include "sources/prom_scrape_source.h"

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <unordered_map>
#include <utility>

#include "pipeline/yaml_file.h"

namespace inferscope {
namespace {

constexpr int64_t kMaxWaitMs = 100;  // Run notices `stop` within this

struct ParsedUrl {
  std::string scheme_host_port;  // "http://host:port"
  std::string host_port;         // "host:port"
  std::string path;              // "/metrics"
};

std::optional<ParsedUrl> ParseHttpUrl(std::string_view url, std::string* error) {
  constexpr std::string_view kHttp = "http://";
  if (url.substr(0, kHttp.size()) != kHttp) {
    *error = "expected an http:// URL";
    return std::nullopt;
  }
  std::string_view rest = url.substr(kHttp.size());
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  ParsedUrl out;
  out.path = slash == std::string_view::npos ? "/metrics" : std::string(rest.substr(slash));
  if (authority.empty() || authority.find_first_of(" @?#") != std::string_view::npos) {
    *error = "expected http://host[:port][/path]";
    return std::nullopt;
  }
  std::string host_port(authority);
  const size_t colon = authority.rfind(':');
  const bool bracketed = !authority.empty() && authority.front() == '[';
  if (colon == std::string_view::npos || (bracketed && authority.back() == ']')) {
    host_port += ":80";
  } else {
    std::string_view port = authority.substr(colon + 1);
    int p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p < 1 || p > 65535) {
      *error = "bad port";
      return std::nullopt;
    }
  }
  out.host_port = host_port;
  out.scheme_host_port = "http://" + host_port;
  return out;
}

uint64_t Fnv(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

// The Accept header of every scrape, built once.
const httplib::Headers& AcceptHeaders() {
  static const httplib::Headers headers = {
      {"Accept", "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5"}};
  return headers;
}

int64_t FileMtimeNs(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

Status CheckTarget(ScrapeTargetConfig& t) {
  std::string error;
  std::optional<ParsedUrl> url = ParseHttpUrl(t.url, &error);
  if (!url) return Status::InvalidArgument("target " + t.url + ": " + error);
  if (t.instance.empty()) t.instance = url->host_port;
  if (t.instance.size() > 255 || t.model.size() > 255) {
    return Status::InvalidArgument("target " + t.url +
                                   ": instance and model are at most 255 bytes");
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<ScrapeTargetConfig>> ParseFileSd(const std::string& path) {
  Result<YAML::Node> loaded = LoadYamlFile(path, "file_sd file");
  if (!loaded.ok()) return loaded.status();
  const YAML::Node root = *loaded;
  if (!root.IsSequence()) {
    return Status::InvalidArgument(path + ": expected a list of {targets, labels} groups");
  }
  std::vector<ScrapeTargetConfig> out;
  size_t group_index = 0;
  for (const YAML::Node& group : root) {
    const std::string where = path + ": [" + std::to_string(group_index++) + "]";
    if (!group.IsMap() || !group["targets"] || !group["targets"].IsSequence()) {
      return Status::InvalidArgument(where + ": expected {targets: [host:port, ...], labels: {}}");
    }
    std::string scheme = "http";
    std::string metrics_path = "/metrics";
    std::string instance;
    std::string model;
    PromEngine engine = PromEngine::kAuto;
    if (const YAML::Node labels = group["labels"]) {
      if (!labels.IsMap()) return Status::InvalidArgument(where + ".labels: expected a mapping");
      for (const auto& kv : labels) {
        if (!kv.second.IsScalar()) {
          return Status::InvalidArgument(where + ".labels: values must be strings");
        }
        const std::string key = kv.first.as<std::string>();
        const std::string value = kv.second.Scalar();
        if (key == "__scheme__") {
          scheme = value;
        } else if (key == "__metrics_path__") {
          metrics_path = value;
        } else if (key == "instance") {
          instance = value;
        } else if (key == "model") {
          model = value;
        } else if (key == "engine") {
          if (!ParsePromEngine(value, &engine)) {
            return Status::InvalidArgument(where +
                                           ".labels.engine: expected auto, vllm, "
                                           "sglang, tgi or dcgm");
          }
        }
      }
    }
    if (scheme != "http") {
      return Status::InvalidArgument(where + ".labels.__scheme__: only http is supported");
    }
    if (metrics_path.empty() || metrics_path.front() != '/') metrics_path = "/" + metrics_path;
    for (const YAML::Node& t : group["targets"]) {
      if (!t.IsScalar()) return Status::InvalidArgument(where + ".targets: expected host:port");
      ScrapeTargetConfig c;
      c.url = "http://" + t.Scalar() + metrics_path;
      c.instance = group["targets"].size() == 1 ? instance : "";
      c.model = model;
      c.engine = engine;
      Status ok = CheckTarget(c);
      if (!ok.ok()) return Status::InvalidArgument(where + ": " + ok.message());
      out.push_back(std::move(c));
    }
  }
  return out;
}

struct PromScrapeSource::Target {
  Target(ScrapeTargetConfig c, PromConverter::Options converter_options, Interner& interner)
      : config(std::move(c)), converter(std::move(converter_options), interner) {}

  ScrapeTargetConfig config;
  std::string scheme_host_port;
  std::string path;
  std::unique_ptr<httplib::Client> client;  // fetch thread (while in flight)
  PromConverter converter;                  // source thread
  // Hand-over fields: written by the fetch thread while in flight, read by the source thread
  // after it came back through done_.
  std::string body;
  Failure failure = Failure::kNone;
  std::string error;
  int64_t received_ms = 0;
  // Source thread.
  SourceHealth::Target health;  // what /v1/health shows, updated in place after each attempt
  // The ids of config.instance and config.model ("_" when empty), interned again after each
  // sweep of the interner (as an InternCache does: a first sight per sweep keeps them alive).
  StringId instance_id = 0;
  StringId model_id = 0;
  uint32_t ids_epoch = 0;
  int64_t next_due_ms = 0;
  bool in_flight = false;
  bool removed = false;
  bool up = false;
  bool reported = false;
  uint64_t failures = 0;
  std::string last_error;
  int64_t last_error_ms = 0;
};

std::string_view PromScrapeSource::FailureName(Failure f) {
  switch (f) {
    case Failure::kNone:
      return "none";
    case Failure::kConnect:
      return "connect";
    case Failure::kTimeout:
      return "timeout";
    case Failure::kHttpStatus:
      return "http_status";
    case Failure::kTooLarge:
      return "too_large";
    case Failure::kGarbage:
      return "garbage";
    case Failure::kIo:
      return "io";
    case Failure::kCount_:
      break;
  }
  return "io";
}

Status PromScrapeSource::Options::Validate() const {
  if (targets.empty() && file_sd.empty()) {
    return Status::InvalidArgument("prometheus_scrape: give targets or file_sd");
  }
  if (interval_ms < 100) return Status::InvalidArgument("interval must be >= 100ms");
  if (timeout_ms < 0) return Status::InvalidArgument("timeout must be >= 0");
  if (file_sd_refresh_ms < 100) return Status::InvalidArgument("file_sd_refresh must be >= 100ms");
  if (!(jitter >= 0 && jitter <= 1)) return Status::InvalidArgument("jitter must be in [0, 1]");
  if (max_response_bytes < 1024) return Status::InvalidArgument("max_response_bytes >= 1024");
  if (concurrency < 1 || concurrency > 64) {
    return Status::InvalidArgument("concurrency must be between 1 and 64");
  }
  if (max_targets < 1) return Status::InvalidArgument("max_targets must be >= 1");
  if (max_series_per_target < 1) return Status::InvalidArgument("max_series_per_target >= 1");
  if (targets.size() > max_targets) {
    return Status::InvalidArgument("more static targets than max_targets");
  }
  for (const ScrapeTargetConfig& t : targets) {
    ScrapeTargetConfig copy = t;
    INFERSCOPE_RETURN_IF_ERROR(CheckTarget(copy));
  }
  return parser.Validate();
}

int64_t PromScrapeSource::Options::effective_timeout_ms() const {
  return timeout_ms > 0 ? timeout_ms : std::min<int64_t>(interval_ms, 10'000);
}

Result<std::unique_ptr<PromScrapeSource>> PromScrapeSource::Create(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields(
      {"targets", "engine", "file_sd", "file_sd_refresh", "interval", "timeout", "jitter",
       "max_response_bytes", "concurrency", "max_targets", "max_series_per_target", "model_labels",
       "max_line_bytes", "max_labels", "max_samples"}));
  Options o;
  PromEngine default_engine = PromEngine::kAuto;
  Result<std::string> engine = node.GetString("engine", "auto");
  if (!engine.ok()) return engine.status();
  if (!ParsePromEngine(*engine, &default_engine)) {
    return node.Error("engine", "expected auto, vllm, sglang, tgi or dcgm");
  }
  if (node.Has("targets")) {
    const YAML::Node targets = node.node()["targets"];
    if (!targets.IsSequence()) {
      return node.Error("targets", "expected a list of URLs or {url, instance, model, engine}");
    }
    for (size_t i = 0; i < targets.size(); ++i) {
      const YAML::Node t = targets[i];
      ScrapeTargetConfig c;
      c.engine = default_engine;
      const std::string at = "targets[" + std::to_string(i) + "]";
      if (t.IsScalar()) {
        c.url = t.Scalar();
      } else if (t.IsMap()) {
        ConfigNode child(node.file(), t, node.path().empty() ? at : node.path() + "." + at);
        INFERSCOPE_RETURN_IF_ERROR(child.CheckKnownFields({"url", "instance", "model", "engine"}));
        Result<std::string> url = child.GetString("url");
        if (!url.ok()) return url.status();
        c.url = *url;
        Result<std::string> instance = child.GetString("instance", "");
        if (!instance.ok()) return instance.status();
        c.instance = *instance;
        Result<std::string> model = child.GetString("model", "");
        if (!model.ok()) return model.status();
        c.model = *model;
        Result<std::string> e = child.GetString("engine", std::string(PromEngineName(c.engine)));
        if (!e.ok()) return e.status();
        if (!ParsePromEngine(*e, &c.engine)) {
          return child.Error("engine", "expected auto, vllm, sglang, tgi or dcgm");
        }
      } else {
        return node.Error("targets", "expected a list of URLs or {url, instance, model, engine}");
      }
      Status ok = CheckTarget(c);
      if (!ok.ok()) return node.Error("targets", at + ": " + ok.message());
      o.targets.push_back(std::move(c));
    }
  }
  if (node.Has("file_sd")) {
    Result<std::string> file_sd = node.GetString("file_sd");
    if (!file_sd.ok()) return file_sd.status();
    std::filesystem::path p(*file_sd);
    if (!p.is_absolute() && !node.file().empty() && node.file().front() != '<') {
      p = std::filesystem::path(node.file()).parent_path() / p;
    }
    o.file_sd = p.string();
  }
  Result<int64_t> refresh = node.GetDurationMs("file_sd_refresh", o.file_sd_refresh_ms, 100);
  if (!refresh.ok()) return refresh.status();
  o.file_sd_refresh_ms = *refresh;
  Result<int64_t> interval = node.GetDurationMs("interval", o.interval_ms, 100);
  if (!interval.ok()) return interval.status();
  o.interval_ms = *interval;
  Result<int64_t> timeout = node.GetDurationMs("timeout", 0, 0);
  if (!timeout.ok()) return timeout.status();
  o.timeout_ms = *timeout;
  Result<double> jitter = node.GetDouble("jitter", o.jitter, 0, 1);
  if (!jitter.ok()) return jitter.status();
  o.jitter = *jitter;
  Result<int64_t> max_bytes = node.GetInt(
      "max_response_bytes", static_cast<int64_t>(o.max_response_bytes), 1024, int64_t{1} << 30);
  if (!max_bytes.ok()) return max_bytes.status();
  o.max_response_bytes = static_cast<size_t>(*max_bytes);
  Result<int64_t> concurrency = node.GetInt("concurrency", 4, 1, 64);
  if (!concurrency.ok()) return concurrency.status();
  o.concurrency = static_cast<size_t>(*concurrency);
  Result<int64_t> max_targets = node.GetInt("max_targets", 10'000, 1, 1'000'000);
  if (!max_targets.ok()) return max_targets.status();
  o.max_targets = static_cast<size_t>(*max_targets);
  Result<int64_t> max_series = node.GetInt("max_series_per_target", 10'000, 1, 10'000'000);
  if (!max_series.ok()) return max_series.status();
  o.max_series_per_target = static_cast<size_t>(*max_series);
  if (node.Has("model_labels")) {
    const YAML::Node labels = node.node()["model_labels"];
    if (!labels.IsSequence()) return node.Error("model_labels", "expected a list of label names");
    o.model_labels.clear();
    for (const YAML::Node& l : labels) {
      if (!l.IsScalar()) return node.Error("model_labels", "expected a list of label names");
      o.model_labels.push_back(l.Scalar());
    }
  }
  Result<int64_t> line = node.GetInt("max_line_bytes", 64 * 1024, 64, 1 << 24);
  if (!line.ok()) return line.status();
  o.parser.max_line_bytes = static_cast<size_t>(*line);
  Result<int64_t> labels = node.GetInt("max_labels", 64, 1, 1024);
  if (!labels.ok()) return labels.status();
  o.parser.max_labels = static_cast<size_t>(*labels);
  Result<int64_t> samples = node.GetInt("max_samples", 1'000'000, 1, 100'000'000);
  if (!samples.ok()) return samples.status();
  o.parser.max_samples = static_cast<size_t>(*samples);
  if (o.targets.size() > o.max_targets) {
    return node.Error("targets", "more static targets than max_targets");
  }
  if (o.targets.empty() && o.file_sd.empty()) {
    return node.Error("targets", "give targets, file_sd or both");
  }
  if (!o.file_sd.empty()) {
    // Checked now so that check-topology reports a bad file; re-read on change while running.
    Result<std::vector<ScrapeTargetConfig>> sd = ParseFileSd(o.file_sd);
    if (!sd.ok()) return node.Error("file_sd", sd.status().message());
  }
  Status valid = o.Validate();
  if (!valid.ok()) return node.Error("", valid.message());
  return std::make_unique<PromScrapeSource>(std::move(o));
}

PromScrapeSource::PromScrapeSource(Options options) : options_(std::move(options)) {}

PromScrapeSource::~PromScrapeSource() { Close(); }

std::shared_ptr<PromScrapeSource::Target> PromScrapeSource::MakeTarget(
    const ScrapeTargetConfig& config) {
  PromConverter::Options co;
  co.engine = config.engine;
  co.instance = config.instance;
  co.default_model = config.model;
  co.model_labels = options_.model_labels;
  co.max_series = options_.max_series_per_target;
  co.parser = options_.parser;
  auto t = std::make_shared<Target>(config, std::move(co), *ctx_.interner);
  std::string error;
  std::optional<ParsedUrl> url = ParseHttpUrl(config.url, &error);  // checked before
  t->scheme_host_port = url ? url->scheme_host_port : "http://invalid:1";
  t->path = url ? url->path : "/metrics";
  const int64_t timeout = options_.effective_timeout_ms();
  t->client = std::make_unique<httplib::Client>(t->scheme_host_port);
  t->client->set_connection_timeout(std::chrono::milliseconds(timeout));
  t->client->set_read_timeout(std::chrono::milliseconds(timeout));
  t->client->set_write_timeout(std::chrono::milliseconds(timeout));
  t->client->set_keep_alive(true);
  // The first scrape at a fixed offset within jitter × interval, derived from the URL.
  const auto spread =
      static_cast<uint64_t>(options_.jitter * static_cast<double>(options_.interval_ms));
  const int64_t offset = spread == 0 ? 0 : static_cast<int64_t>(Fnv(config.url) % spread);
  t->next_due_ms = ctx_.clock->NowMs() + offset;
  t->health.stage = ctx_.name;
  t->health.target = config.url;
  t->health.instance = config.instance;
  return t;
}

void PromScrapeSource::SetTargets(const std::vector<ScrapeTargetConfig>& configs) {
  std::unordered_map<std::string, std::shared_ptr<Target>> old;
  for (auto& t : targets_) old.emplace(t->config.url, t);
  std::vector<std::shared_ptr<Target>> next;
  uint64_t dropped = 0;
  for (const ScrapeTargetConfig& c : configs) {
    bool duplicate = false;
    for (const auto& n : next) duplicate = duplicate || n->config.url == c.url;
    if (duplicate) continue;
    if (next.size() >= options_.max_targets) {
      ++dropped;
      continue;
    }
    auto it = old.find(c.url);
    if (it != old.end() && it->second->config == c) {
      next.push_back(it->second);
      old.erase(it);
    } else {
      next.push_back(MakeTarget(c));
    }
  }
  for (auto& [url, t] : old) {
    t->removed = true;
    if (t->up) --up_count_;
    t->up = false;
    // An in-flight fetch comes back (to Finish, which drops it): keep the target alive till then.
    if (t->in_flight) retired_.push_back(t);
    if (health_ != nullptr) health_->Remove(ctx_.name, url);
  }
  if (dropped > 0) {
    if (targets_dropped_ != nullptr) targets_dropped_->Inc(dropped);
    spdlog::warn("source {}: {} targets beyond max_targets ({}) are not scraped", ctx_.name,
                 dropped, options_.max_targets);
  }
  targets_ = std::move(next);
  // The due heap holds only current targets that are not in flight (those in flight come back
  // through Finish, which puts them back).
  due_.clear();
  due_.reserve(targets_.size());
  for (const auto& t : targets_) {
    if (!t->in_flight) PushDue(t.get());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    work_.reserve(targets_.size() + retired_.size());
    done_.reserve(targets_.size() + retired_.size());
  }
  if (targets_gauge_ != nullptr) targets_gauge_->Set(static_cast<double>(targets_.size()));
  if (up_gauge_ != nullptr) up_gauge_->Set(static_cast<double>(up_count_));
}

void PromScrapeSource::PushDue(Target* target) {
  due_.push_back({target->next_due_ms, target});
  std::push_heap(due_.begin(), due_.end(),
                 [](const Due& a, const Due& b) { return a.due_ms > b.due_ms; });
}

void PromScrapeSource::ReloadFileSd(int64_t now_ms, bool force) {
  if (options_.file_sd.empty()) return;
  if (!force && now_ms < next_file_sd_check_ms_) return;
  next_file_sd_check_ms_ = now_ms + options_.file_sd_refresh_ms;
  const int64_t mtime = FileMtimeNs(options_.file_sd);
  if (!force && mtime == file_sd_mtime_ns_) return;
  file_sd_mtime_ns_ = mtime;
  Result<std::vector<ScrapeTargetConfig>> sd = ParseFileSd(options_.file_sd);
  if (!sd.ok()) {
    // Keep the targets we have (as Prometheus does) and say why.
    if (file_sd_errors_ != nullptr) file_sd_errors_->Inc();
    spdlog::warn("source {}: file_sd not reloaded, keeping {} targets: {}", ctx_.name,
                 targets_.size(), sd.status().message());
    return;
  }
  std::vector<ScrapeTargetConfig> all = options_.targets;
  all.insert(all.end(), sd->begin(), sd->end());
  SetTargets(all);
}

Status PromScrapeSource::Open(const StageContext& ctx) {
  if (ctx.interner == nullptr || ctx.clock == nullptr) {
    return Status::InvalidArgument(
        "prometheus_scrape source: the stage context needs an interner and a clock");
  }
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  ctx_ = ctx;
  health_ = ctx.services.Get<SourceHealth>();
  publisher_ = ctx.interner->Intern("scrape/" + ctx.name);
  up_metric_ = ctx.interner->Intern("up");
  if (publisher_ == 0 || up_metric_ == 0) {
    return Status::Unavailable("prometheus_scrape source: the string table is full");
  }
  ctx.interner->Pin(publisher_);
  ctx.interner->Pin(up_metric_);
  if (ctx.metrics != nullptr) {
    const Labels stage = {{"stage", ctx.name}};
    for (size_t f = 1; f < static_cast<size_t>(Failure::kCount_); ++f) {
      errors_.resize(static_cast<size_t>(Failure::kCount_), nullptr);
      errors_[f] = ctx.metrics->GetCounter(
          "inferscope_scrape_errors_total", "Failed scrapes by reason",
          {{"stage", ctx.name}, {"reason", std::string(FailureName(static_cast<Failure>(f)))}});
    }
    scrapes_ = ctx.metrics->GetCounter("inferscope_scrapes_total", "Scrape attempts", stage);
    samples_ = ctx.metrics->GetCounter("inferscope_scrape_samples_total",
                                       "Samples parsed from scraped pages", stage);
    skipped_lines_ = ctx.metrics->GetCounter("inferscope_scrape_skipped_lines_total",
                                             "Lines of scraped pages skipped as malformed or "
                                             "beyond a limit",
                                             stage);
    unmapped_ = ctx.metrics->GetCounter("inferscope_scrape_unmapped_samples_total",
                                        "Samples of families (or roles) no mapping carries", stage);
    events_ = ctx.metrics->GetCounter("inferscope_scrape_events_total",
                                      "Gauge and histogram events made from scraped pages", stage);
    resets_ =
        ctx.metrics->GetCounter("inferscope_scrape_counter_resets_total",
                                "Counter (and histogram) resets seen in scraped pages", stage);
    for (size_t r = 1; r < kNumPromHistogramErrors; ++r) {
      histogram_errors_[r] = ctx.metrics->GetCounter(
          "inferscope_scrape_histogram_errors_total",
          "Histogram series of scraped pages refused (no bucket event), by reason",
          {{"stage", ctx.name},
           {"reason", std::string(PromHistogramErrorName(static_cast<PromHistogramError>(r)))}});
    }
    targets_dropped_ = ctx.metrics->GetCounter("inferscope_scrape_targets_dropped_total",
                                               "Targets not scraped: beyond max_targets", stage);
    file_sd_errors_ = ctx.metrics->GetCounter(
        "inferscope_scrape_file_sd_errors_total",
        "file_sd reloads that failed (the previous targets are kept)", stage);
    targets_gauge_ = ctx.metrics->GetGauge("inferscope_scrape_targets", "Targets scraped", stage);
    up_gauge_ = ctx.metrics->GetGauge("inferscope_scrape_targets_up",
                                      "Targets whose last scrape succeeded", stage);
  }
  SetTargets(options_.targets);
  ReloadFileSd(ctx.clock->NowMs(), /*force=*/true);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = false;
  }
  for (size_t i = 0; i < options_.concurrency; ++i) fetchers_.emplace_back([this] { FetchLoop(); });
  return Status::Ok();
}

void PromScrapeSource::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    work_.clear();
    work_head_ = 0;
  }
  work_cv_.notify_all();
  for (std::thread& t : fetchers_) t.join();
  fetchers_.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_.clear();
  }
  // Nothing is in flight any more: an Open after this schedules every target afresh.
  retired_.clear();
  due_.clear();
  for (const auto& t : targets_) t->in_flight = false;
}

void PromScrapeSource::FetchLoop() {
  while (true) {
    Target* target = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stopping_ || work_head_ < work_.size(); });
      if (stopping_) return;
      target = work_[work_head_++];
      if (work_head_ == work_.size()) {
        work_.clear();
        work_head_ = 0;
      }
    }
    Fetch(*target);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      done_.push_back(target);
    }
    done_cv_.notify_one();
  }
}

void PromScrapeSource::Fetch(Target& t) {
  t.body.clear();
  t.failure = Failure::kNone;
  t.error.clear();
  const Clock& clock = *ctx_.clock;
  const int64_t deadline_ns = clock.MonotonicNs() + options_.effective_timeout_ms() * 1'000'000;
  int status = 0;
  bool too_large = false;
  bool timed_out = false;
  httplib::Result res = t.client->Get(
      t.path, AcceptHeaders(),
      [&](const httplib::Response& r) {
        status = r.status;
        return r.status == 200;
      },
      [&](const char* data, size_t len) {
        if (t.body.size() + len > options_.max_response_bytes) {
          too_large = true;
          return false;
        }
        if (clock.MonotonicNs() > deadline_ns) {  // a slow trickle: the whole response is late
          timed_out = true;
          return false;
        }
        t.body.append(data, len);
        return true;
      });
  t.received_ms = clock.NowMs();
  if (res) {
    if (res->status != 200) {
      t.failure = Failure::kHttpStatus;
      t.error = "HTTP status " + std::to_string(res->status);
    }
    return;
  }
  const httplib::Error err = res.error();
  if (too_large) {
    t.failure = Failure::kTooLarge;
    t.error = "response larger than " + std::to_string(options_.max_response_bytes) + " bytes";
  } else if (timed_out || err == httplib::Error::ConnectionTimeout ||
             (err == httplib::Error::Read && clock.MonotonicNs() >= deadline_ns)) {
    t.failure = Failure::kTimeout;
    t.error =
        "no complete response within " + std::to_string(options_.effective_timeout_ms()) + " ms";
  } else if (err == httplib::Error::Canceled && status != 200 && status != 0) {
    t.failure = Failure::kHttpStatus;
    t.error = "HTTP status " + std::to_string(status);
  } else if (err == httplib::Error::Connection) {
    t.failure = Failure::kConnect;
    t.error = "cannot connect to " + t.scheme_host_port;
  } else {
    t.failure = Failure::kIo;
    t.error = httplib::to_string(err);
  }
  t.body.clear();
}

void PromScrapeSource::Dispatch(int64_t now_ms) {
  if (due_.empty() || due_.front().due_ms > now_ms) return;
  size_t handed = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Drop the entries the fetchers took (they reset the queue only when they drain it, which
    // busy fetchers may never do): the queue stays within twice the targets in flight.
    if (work_head_ > 0 && work_head_ * 2 >= work_.size()) {
      work_.erase(work_.begin(), work_.begin() + static_cast<std::ptrdiff_t>(work_head_));
      work_head_ = 0;
    }
    while (!due_.empty() && due_.front().due_ms <= now_ms) {
      std::pop_heap(due_.begin(), due_.end(),
                    [](const Due& a, const Due& b) { return a.due_ms > b.due_ms; });
      Target* t = due_.back().target;
      due_.pop_back();
      t->in_flight = true;
      work_.push_back(t);
      ++handed;
    }
  }
  // One fetch thread per due target (all of them when more are due than there are threads).
  if (handed >= fetchers_.size()) {
    work_cv_.notify_all();
  } else {
    for (size_t i = 0; i < handed; ++i) work_cv_.notify_one();
  }
}

void PromScrapeSource::Finish(Target& t, SourceOutput& out) {
  t.in_flight = false;
  if (t.removed) {
    std::erase_if(retired_, [&t](const std::shared_ptr<Target>& r) { return r.get() == &t; });
    return;
  }
  const int64_t now = ctx_.clock->NowMs();
  const int64_t interval = options_.interval_ms;
  t.next_due_ms += interval;
  if (t.next_due_ms <= now) t.next_due_ms += ((now - t.next_due_ms) / interval + 1) * interval;
  PushDue(&t);
  if (scrapes_ != nullptr) scrapes_->Inc();

  EventBatchPtr batch = out.Acquire();
  if (batch == nullptr) return;  // stopping
  batch->publisher = publisher_;
  batch->received_ns = ctx_.clock->MonotonicNs();
  if (t.failure == Failure::kNone) {
    PromConvertStats stats =
        t.converter.Convert(t.body, t.received_ms, publisher_, batch->events, &batch->histograms);
    const uint64_t skipped = stats.parse.skipped_total();
    if (stats.parse.samples == 0 && skipped > 0) {
      t.failure = Failure::kGarbage;
      t.error = "no valid sample; " + std::to_string(skipped) + " malformed lines (first reason: ";
      for (size_t r = 0; r < kNumPromSkips; ++r) {
        if (stats.parse.skipped[r] > 0) {
          t.error += std::string(PromSkipName(static_cast<PromSkip>(r))) + ")";
          break;
        }
      }
    }
    if (samples_ != nullptr) {
      samples_->Inc(stats.parse.samples);
      skipped_lines_->Inc(skipped);
      unmapped_->Inc(stats.unmapped + stats.not_carried);
      events_->Inc(stats.events);
      resets_->Inc(stats.resets + stats.histogram_resets);
      for (size_t r = 1; r < kNumPromHistogramErrors; ++r) {
        if (stats.histogram_errors[r] > 0) histogram_errors_[r]->Inc(stats.histogram_errors[r]);
      }
    }
  }
  const bool up = t.failure == Failure::kNone;
  if (!up) {
    if (errors_.size() > static_cast<size_t>(t.failure) &&
        errors_[static_cast<size_t>(t.failure)] != nullptr) {
      errors_[static_cast<size_t>(t.failure)]->Inc();
    }
    ++t.failures;
    t.last_error = std::string(FailureName(t.failure)) + ": " + t.error;
    t.last_error_ms = t.received_ms;
    if (t.up || !t.reported) {
      spdlog::warn("source {}: target {} down: {}", ctx_.name, t.config.url, t.last_error);
    }
  }
  // The up gauge (1/0) with the target's instance and model.
  Interner& interner = *ctx_.interner;
  const uint32_t epoch = interner.epoch();
  if (t.instance_id == 0 || t.model_id == 0 || t.ids_epoch != epoch) {
    t.instance_id = interner.Intern(t.config.instance);
    t.model_id = interner.Intern(t.config.model.empty() ? "_" : t.config.model);
    t.ids_epoch = epoch;
  }
  const StringId instance = t.instance_id;
  const StringId model = t.model_id;
  if (instance != 0 && model != 0) {
    Event& e = batch->events.emplace_back();
    e.time_ms = t.received_ms;
    e.instance = instance;
    e.model = model;
    e.publisher = publisher_;
    e.kind = EventKind::kGauge;
    e.metric = up_metric_;
    e.value = up ? 1 : 0;
  }
  if (up != t.up) up ? ++up_count_ : --up_count_;
  t.up = up;
  t.reported = true;
  if (health_ != nullptr) {
    SourceHealth::Target& h = t.health;
    h.up = up;
    if (!up) h.last_error = t.last_error;
    h.last_attempt_ms = t.received_ms;
    h.last_error_ms = t.last_error_ms;
    h.failures = t.failures;
    health_->Report(h);
  }
  if (up_gauge_ != nullptr) up_gauge_->Set(static_cast<double>(up_count_));
  t.body.clear();
  if (batch->events.empty()) {
    out.Release(std::move(batch));
  } else {
    (void)out.Emit(std::move(batch));
  }
}

Status PromScrapeSource::Run(SourceOutput& out, const std::atomic<bool>& stop) {
  std::vector<Target*> finished;
  finished.reserve(targets_.size());
  while (!stop.load(std::memory_order_relaxed)) {
    const int64_t now = ctx_.clock->NowMs();
    ReloadFileSd(now, /*force=*/false);
    Dispatch(now);
    int64_t wait_ms = kMaxWaitMs;
    if (!due_.empty()) wait_ms = std::min(wait_ms, std::max<int64_t>(due_.front().due_ms - now, 0));
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (done_.empty() && wait_ms > 0) {
        done_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms),
                          [this] { return !done_.empty(); });
      }
      finished.swap(done_);
    }
    for (Target* t : finished) Finish(*t, out);
    finished.clear();
  }
  return Status::Ok();
}

}  // namespace inferscope
