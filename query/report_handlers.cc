// GET /v1/reports/comparison and GET /v1/reports/trend: side-by-side and period-over-period
// reports read from the stored panes, rendered as JSON, CSV or Markdown (`format=`).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/json_text.h"
#include "pipeline/names.h"
#include "query/handlers.h"
#include "state/state_store.h"
#include "values/aggregate.h"
#include "values/rank_test.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr int64_t kDefaultWindowMs = 5 * 60'000;
constexpr int64_t kMaxWindowMs = 24 * 3'600'000;     // at most a day of panes per span
constexpr int64_t kMaxPeriodMs = 30 * 86'400'000LL;  // the previous span at most 30 days back
constexpr size_t kMaxSubjects = 16;                  // instances or models compared at once
constexpr size_t kMaxSeriesPerSubject = 1'024;       // (instance, model) pairs merged per subject
constexpr int64_t kMaxTimeMs = 253'402'300'799'999;  // 9999-12-31T23:59:59.999Z

enum class Format { kJson, kCsv, kMarkdown };
enum class Better { kLower, kHigher };

// Everything a report reads of one subject over one span: request metrics merged over the
// subject's (instance, model) series.
struct SubjectData {
  Aggregate ttft, tpot, e2e, prompt_tokens, output_tokens, cost;
  size_t series = 0;  // (instance, model) pairs merged
};

// One row of a report: a statistic of a metric.
struct RowSpec {
  std::string_view metric;
  std::string_view stat;
  std::string_view unit;
  Better better;
};

// The rows, in report order. Latency quantiles are from the merged DDSketches, clamped to the
// span's observed [min, max].
constexpr std::array<RowSpec, 13> kRows = {{
    {"ttft_ms", "p50", "ms", Better::kLower},
    {"ttft_ms", "p95", "ms", Better::kLower},
    {"ttft_ms", "p99", "ms", Better::kLower},
    {"tpot_ms", "p50", "ms", Better::kLower},
    {"tpot_ms", "p95", "ms", Better::kLower},
    {"tpot_ms", "p99", "ms", Better::kLower},
    {"e2e_ms", "p50", "ms", Better::kLower},
    {"e2e_ms", "p95", "ms", Better::kLower},
    {"e2e_ms", "p99", "ms", Better::kLower},
    {"requests_per_s", "rate", "1/s", Better::kHigher},
    {"output_tokens_per_s", "rate", "1/s", Better::kHigher},
    {"error_rate", "ratio", "", Better::kLower},
    {"cost_per_1k_tokens", "mean", "USD", Better::kLower},
}};

std::string_view BetterName(Better b) { return b == Better::kLower ? "lower" : "higher"; }

const Aggregate* LatencyOf(const SubjectData& d, std::string_view metric) {
  if (metric == "ttft_ms") return &d.ttft;
  if (metric == "tpot_ms") return &d.tpot;
  if (metric == "e2e_ms") return &d.e2e;
  return nullptr;
}

// The value of a row for a subject over a span of `span_ms`; NaN when unknown (no data, no cost).
double RowValue(const RowSpec& row, const SubjectData& d, int64_t span_ms) {
  const double seconds = static_cast<double>(span_ms) / 1000.0;
  const double nan = std::nan("");
  if (const Aggregate* agg = LatencyOf(d, row.metric)) {
    if (agg->count == 0) return nan;
    const double q = row.stat == "p50" ? 0.50 : row.stat == "p95" ? 0.95 : 0.99;
    return std::clamp(agg->sketch.Quantile(q), agg->min, agg->max);
  }
  if (row.metric == "requests_per_s") {
    return d.series == 0 ? nan : static_cast<double>(d.e2e.events) / seconds;
  }
  if (row.metric == "output_tokens_per_s") {
    return d.output_tokens.count == 0 ? nan : d.output_tokens.sum / seconds;
  }
  if (row.metric == "error_rate") {
    return d.e2e.events == 0 ? nan : d.e2e.error_ratio();
  }
  // cost_per_1k_tokens: USD per 1,000 tokens (prompt + output), when the requests carried a cost.
  const double tokens = d.prompt_tokens.sum + d.output_tokens.sum;
  if (d.cost.count == 0 || tokens <= 0) return nan;
  return d.cost.sum / tokens * 1000.0;
}

// ---- parameters ------------------------------------------------------------------------------

std::optional<ApiReply> ParseFormat(const ApiContext& ctx, const ApiRequest& req, Format* out) {
  *out = Format::kJson;
  auto text = req.Param("format");
  if (!text || *text == "json") return std::nullopt;
  if (*text == "csv") {
    *out = Format::kCsv;
  } else if (*text == "markdown" || *text == "md") {
    *out = Format::kMarkdown;
  } else {
    return BadParameterValue(ctx, "format", "format must be json, csv or markdown",
                             text->substr(0, 64));
  }
  return std::nullopt;
}

std::optional<ApiReply> ParseDuration(const ApiContext& ctx, const ApiRequest& req,
                                      const char* name, int64_t max_ms, int64_t* out) {
  auto text = req.Param(name);
  if (!text) return std::nullopt;
  std::optional<int64_t> ms = ParseDurationMs(*text);
  if (!ms || *ms <= 0 || *ms > max_ms) {
    return BadParameterValue(ctx, name,
                             std::string(name) + " must be a duration from 1ms to " +
                                 (max_ms == kMaxWindowMs ? "24h" : "30d") +
                                 " (250ms, 10s, 5m, 1h, 7d)",
                             text->substr(0, 64));
  }
  *out = *ms;
  return std::nullopt;
}

// `to`: epoch ms or RFC 3339; default the store's watermark (the end of committed event time).
std::optional<ApiReply> ParseTo(const ApiContext& ctx, const ApiRequest& req, int64_t* out) {
  *out = ctx.store->Watermark();
  auto text = req.Param("to");
  if (!text) return std::nullopt;
  std::optional<int64_t> ms = ParseTimeMs(*text);
  if (!ms || *ms > kMaxTimeMs) {
    return BadParameterValue(ctx, "to", "to must be epoch milliseconds or an RFC 3339 time",
                             text->substr(0, 64));
  }
  *out = *ms;
  return std::nullopt;
}

std::optional<ApiReply> CheckName(const ApiContext& ctx, std::string_view parameter,
                                  std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    return BadParameterValue(ctx, parameter,
                             std::string(parameter) + ": each name must be 1 to 255 bytes",
                             name.substr(0, 64));
  }
  return std::nullopt;
}

// ---- reading ---------------------------------------------------------------------------------

// The (instance, model) series a subject covers: an instance's models, a model's instances, or
// one instance's model. At most kMaxSeriesPerSubject.
Status SeriesOf(const StateStore& store, const std::string* instance, const std::string* model,
                std::vector<std::pair<std::string, std::string>>* out) {
  std::set<std::pair<std::string, std::string>> seen;
  auto visit = [&](const SeriesInfo& info) {
    if (instance != nullptr && info.instance != *instance) return false;  // past the instance
    if (model != nullptr && info.model != *model) return true;
    if (seen.emplace(info.instance, info.model).second)
      out->emplace_back(info.instance, info.model);
    return out->size() < kMaxSeriesPerSubject;
  };
  return store.ScanSeries(instance != nullptr ? *instance : std::string_view(), false, visit);
}

Status ReadSubject(const StateStore& store,
                   const std::vector<std::pair<std::string, std::string>>& series, int64_t from,
                   int64_t to, SubjectData* out) {
  *out = SubjectData();
  out->series = series.size();
  for (const auto& [instance, model] : series) {
    for (auto [metric, agg] : {std::pair<std::string_view, Aggregate*>{"ttft_ms", &out->ttft},
                               {"tpot_ms", &out->tpot},
                               {"e2e_ms", &out->e2e},
                               {"prompt_tokens", &out->prompt_tokens},
                               {"output_tokens", &out->output_tokens},
                               {"cost_usd", &out->cost}}) {
      // A named copy: clang 14 cannot capture a structured binding.
      Aggregate* into = agg;
      Status st = store.ScanPanes(instance, model, metric, from, to, [into](const StoredPane& p) {
        into->Merge(p.agg);
        return Status::Ok();
      });
      if (!st.ok()) return st;
    }
  }
  return Status::Ok();
}

// ---- rendering -------------------------------------------------------------------------------

// Numbers for CSV and Markdown: 4 significant digits below 1 (exponent below 0.001), then 3, 2 or
// 1 decimals up to 10, 100 and beyond (exponent from 1e12); trailing zeros trimmed; "" for NaN.
std::string FormatNumber(double v) {
  if (!std::isfinite(v)) return "";
  char buf[64];
  const double a = std::fabs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e12)) {
    std::snprintf(buf, sizeof(buf), "%.3g", v);
    return buf;
  }
  if (a < 1) {
    std::snprintf(buf, sizeof(buf), "%.4g", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.*f", a >= 100 ? 1 : a >= 10 ? 2 : 3, v);
  }
  std::string s = buf;
  if (s.find('.') != std::string::npos && s.find('e') == std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  return s == "-0" ? "0" : s;
}

// A CSV field (RFC 4180): quoted when it holds a comma, quote or line break. Text that a
// spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading apostrophe: names
// come from publishers.
std::string CsvField(std::string_view text) {
  std::string s(text);
  if (!s.empty() && std::string_view("=+-@\t\r").find(s.front()) != std::string_view::npos) {
    s.insert(s.begin(), '\'');
  }
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string quoted = "\"";
  for (char c : s) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

// Text for a Markdown table cell: Markdown's punctuation escaped, control characters (line
// breaks) as spaces, so a name can neither break the table nor inject markup.
std::string MarkdownText(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += ' ';
    } else if (std::string_view("\\`*_[]<>|#!~&").find(c) != std::string_view::npos) {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  return out;
}

std::string RowLabel(const RowSpec& row) {
  return std::string(row.metric) + (row.stat == "rate" || row.stat == "ratio" || row.stat == "mean"
                                        ? ""
                                        : " " + std::string(row.stat));
}

ApiReply TextReply(Format format, std::string text) {
  ApiReply reply;
  reply.text = std::move(text);
  reply.content_type =
      format == Format::kCsv ? "text/csv; charset=utf-8" : "text/markdown; charset=utf-8";
  return reply;
}

// ---- comparison ------------------------------------------------------------------------------

struct ComparisonRow {
  const RowSpec* spec;
  std::vector<double> values;  // per subject, NaN when unknown
  std::vector<size_t> best;    // indices of the best subjects; empty when there is no better one
};

// The best subjects of a row: the lowest (or highest) value among the known ones. None when fewer
// than two are known or all known values are equal (nothing is better).
std::vector<size_t> BestOf(const RowSpec& spec, const std::vector<double>& values) {
  std::vector<size_t> known;
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isfinite(values[i])) known.push_back(i);
  }
  if (known.size() < 2) return {};
  double best = values[known[0]];
  for (size_t i : known) {
    best = spec.better == Better::kLower ? std::min(best, values[i]) : std::max(best, values[i]);
  }
  // Values within a relative 1e-6 of the best tie with it (sums of float costs differ in the last
  // bits).
  std::vector<size_t> out;
  for (size_t i : known) {
    if (std::fabs(values[i] - best) <= 1e-6 * std::fabs(best)) out.push_back(i);
  }
  if (out.size() == known.size()) return {};
  return out;
}

}  // namespace

ApiReply HandleComparisonReport(const ApiContext& ctx, const ApiRequest& req) {
  Format format;
  if (auto bad = ParseFormat(ctx, req, &format)) return *bad;
  auto instances = req.Param("instances");
  auto models = req.Param("models");
  if (instances.has_value() == models.has_value()) {
    return BadParameter(ctx, instances ? "models" : "instances",
                        "give exactly one of instances or models (comma-separated names)");
  }
  const char* by = instances ? "instances" : "models";
  // One parameter: comma-separated names. Repeated: one name each (names may hold commas).
  std::vector<std::string_view> names;
  const auto [first, last] = req.params.equal_range(by);
  for (auto it = first; it != last; ++it) {
    std::string_view list = it->second;
    if (std::next(first) != last) {
      names.push_back(list);
      continue;
    }
    for (size_t start = 0;;) {
      const size_t comma = list.find(',', start);
      names.push_back(
          list.substr(start, comma == std::string_view::npos ? list.npos : comma - start));
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
  }
  std::vector<std::string> subjects;
  for (std::string_view name : names) {
    if (auto bad = CheckName(ctx, by, name)) return *bad;
    if (std::find(subjects.begin(), subjects.end(), name) != subjects.end()) {
      return BadParameterValue(ctx, by, std::string(by) + ": a name is listed twice",
                               name.substr(0, 64));
    }
    subjects.emplace_back(name);
  }
  if (subjects.size() < 2 || subjects.size() > kMaxSubjects) {
    return BadParameter(ctx, by,
                        std::string(by) + " must name 2 to 16 distinct names, got " +
                            std::to_string(subjects.size()));
  }
  int64_t window = kDefaultWindowMs, to = 0;
  if (auto bad = ParseDuration(ctx, req, "window", kMaxWindowMs, &window)) return *bad;
  if (auto bad = ParseTo(ctx, req, &to)) return *bad;
  const int64_t from = to - window;

  std::vector<SubjectData> data(subjects.size());
  for (size_t i = 0; i < subjects.size(); ++i) {
    std::vector<std::pair<std::string, std::string>> series;
    Status st = instances ? SeriesOf(*ctx.store, &subjects[i], nullptr, &series)
                          : SeriesOf(*ctx.store, nullptr, &subjects[i], &series);
    if (!st.ok()) return StatusReply(*ctx.clock, st);
    if (series.empty()) {
      const std::string kind = instances ? "instance" : "model";
      return ErrorReply(*ctx.clock, 404, "NOT_FOUND",
                        "unknown " + kind + " '" + subjects[i] + "': it has no stored series",
                        {{"parameter", by}, {"value", subjects[i]}});
    }
    st = ReadSubject(*ctx.store, series, from, to, &data[i]);
    if (!st.ok()) return StatusReply(*ctx.clock, st);
  }
  std::vector<ComparisonRow> rows;
  for (const RowSpec& spec : kRows) {
    ComparisonRow row{&spec, {}, {}};
    for (const SubjectData& d : data) row.values.push_back(RowValue(spec, d, window));
    row.best = BestOf(spec, row.values);
    rows.push_back(std::move(row));
  }

  if (format == Format::kCsv) {
    std::string out = "metric,stat,unit,better";
    for (const std::string& s : subjects) out += "," + CsvField(s);
    out += ",best\n";
    for (const ComparisonRow& row : rows) {
      out += std::string(row.spec->metric) + "," + std::string(row.spec->stat) + "," +
             std::string(row.spec->unit) + "," + std::string(BetterName(row.spec->better));
      for (double v : row.values) out += "," + FormatNumber(v);
      std::string best;
      for (size_t i : row.best) best += (best.empty() ? "" : ";") + subjects[i];
      out += "," + CsvField(best) + "\n";
    }
    return TextReply(format, std::move(out));
  }
  if (format == Format::kMarkdown) {
    std::string out = "## Comparison of " + std::string(by) + " from " + FormatRfc3339(from) +
                      " to " + FormatRfc3339(to) + "\n\n| metric |";
    for (const std::string& s : subjects) out += " " + MarkdownText(s) + " |";
    out += "\n|---|";
    for (size_t i = 0; i < subjects.size(); ++i) out += "---:|";
    out += "\n";
    for (const ComparisonRow& row : rows) {
      out += "| " + RowLabel(*row.spec) +
             (row.spec->unit.empty() ? "" : " (" + std::string(row.spec->unit) + ")") + " |";
      for (size_t i = 0; i < subjects.size(); ++i) {
        const std::string v = FormatNumber(row.values[i]);
        const bool best = std::find(row.best.begin(), row.best.end(), i) != row.best.end();
        out += " " + (v.empty() ? std::string("–") : best ? "**" + v + "** ✓" : v) + " |";
      }
      out += "\n";
    }
    out +=
        "\n✓ the better value (lower latency, error rate and cost; higher throughput); – no "
        "data. Quantiles from merged DDSketch panes (1 % relative accuracy).\n";
    return TextReply(format, std::move(out));
  }
  ApiReply reply;
  json subjects_json = json::array();
  for (size_t i = 0; i < subjects.size(); ++i) {
    subjects_json.push_back({{"name", subjects[i]},
                             {"series", data[i].series},
                             {"requests", data[i].e2e.events},
                             {"errors", data[i].e2e.errors}});
  }
  json rows_json = json::array();
  for (const ComparisonRow& row : rows) {
    json values = json::object();
    for (size_t i = 0; i < subjects.size(); ++i) {
      values[subjects[i]] = JsonNumberOrNull(row.values[i]);
    }
    json best = json::array();
    for (size_t i : row.best) best.push_back(subjects[i]);
    rows_json.push_back({{"metric", row.spec->metric},
                         {"stat", row.spec->stat},
                         {"unit", row.spec->unit},
                         {"better", BetterName(row.spec->better)},
                         {"values", std::move(values)},
                         {"best", std::move(best)}});
  }
  reply.body = {{"report", "comparison"},
                {"by", by},
                {"from", from},
                {"to", to},
                {"window_ms", window},
                {"as_of", ctx.store->Watermark()},
                {"subjects", std::move(subjects_json)},
                {"rows", std::move(rows_json)},
                {"timestamp", FormatRfc3339(ctx.clock->NowMs())}};
  return reply;
}

// ---- trend -----------------------------------------------------------------------------------

namespace {

// A test of one row's change between the previous and the current span.
struct Change {
  double previous = NAN, current = NAN;
  const char* test = nullptr;  // null: no test for this row (or not enough data)
  double z = NAN, p_value = NAN;
  bool significant = false;
  // "better", "worse" (significant, by the row's direction) or "unchanged".
  std::string_view verdict = "unchanged";
};

// Two-sided p-value of a z statistic.
double TwoSided(double z) { return std::min(1.0, 2.0 * NormalUpperTail(std::fabs(z))); }

Change Compare(const RowSpec& row, const SubjectData& prev, const SubjectData& cur, int64_t span_ms,
               double alpha) {
  Change c;
  c.previous = RowValue(row, prev, span_ms);
  c.current = RowValue(row, cur, span_ms);
  if (const Aggregate* p = LatencyOf(prev, row.metric)) {
    // The Mann–Whitney test of the two spans' distributions (from their sketches): one test per
    // metric, shared by its quantile rows. z > 0: the current span's values tend to be larger.
    const Aggregate* q = LatencyOf(cur, row.metric);
    if (p->count > 0 && q->count > 0) {
      Result<RankComparison> r = CompareSketches(q->sketch, p->sketch);
      if (r.ok()) {
        c.test = "mann_whitney";
        c.z = r->z;
        c.p_value = r->p_two_sided;
      }
    }
  } else if (row.metric == "requests_per_s") {
    // Poisson counts over spans of equal length: under no change each request falls in either
    // span with probability ½.
    const double a = static_cast<double>(cur.e2e.events), b = static_cast<double>(prev.e2e.events);
    if (a + b > 0) {
      c.test = "poisson_rate";
      c.z = (a - b) / std::sqrt(a + b);
      c.p_value = TwoSided(c.z);
    }
  } else if (row.metric == "error_rate") {
    // Two-proportion z-test with the pooled proportion.
    const double n1 = static_cast<double>(cur.e2e.events),
                 n2 = static_cast<double>(prev.e2e.events);
    if (n1 > 0 && n2 > 0) {
      const double e1 = static_cast<double>(cur.e2e.errors),
                   e2 = static_cast<double>(prev.e2e.errors);
      const double pooled = (e1 + e2) / (n1 + n2);
      const double se = std::sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2));
      c.test = "two_proportion";
      c.z = se > 0 ? (e1 / n1 - e2 / n2) / se : 0;
      c.p_value = se > 0 ? TwoSided(c.z) : 1;
    }
  }
  if (c.test != nullptr && c.p_value < alpha && c.z != 0) {
    c.significant = true;
    const bool higher = c.z > 0;
    c.verdict = (higher == (row.better == Better::kHigher)) ? "better" : "worse";
  }
  return c;
}

}  // namespace

ApiReply HandleTrendReport(const ApiContext& ctx, const ApiRequest& req) {
  Format format;
  if (auto bad = ParseFormat(ctx, req, &format)) return *bad;
  auto instance = req.Param("instance");
  auto model = req.Param("model");
  if (!instance && !model) {
    return BadParameter(ctx, "instance", "give instance, model or both");
  }
  if (instance) {
    if (auto bad = CheckName(ctx, "instance", *instance)) return *bad;
  }
  if (model) {
    if (auto bad = CheckName(ctx, "model", *model)) return *bad;
  }
  int64_t window = kDefaultWindowMs, to = 0;
  if (auto bad = ParseDuration(ctx, req, "window", kMaxWindowMs, &window)) return *bad;
  int64_t period = window;
  if (auto bad = ParseDuration(ctx, req, "period", kMaxPeriodMs, &period)) return *bad;
  if (period < window) {
    return BadParameter(ctx, "period",
                        "period (how far back the previous span starts) must be at least the "
                        "window, so the spans do not overlap");
  }
  if (auto bad = ParseTo(ctx, req, &to)) return *bad;
  double alpha = 0.05;
  if (auto text = req.Param("alpha")) {
    char* end = nullptr;
    alpha = std::strtod(text->c_str(), &end);
    if (text->empty() || end != text->c_str() + text->size() || !(alpha > 0 && alpha < 1)) {
      return BadParameterValue(ctx, "alpha", "alpha must be a number in (0, 1)",
                               text->substr(0, 64));
    }
  }
  const int64_t cur_from = to - window, prev_to = to - period, prev_from = prev_to - window;

  std::vector<std::pair<std::string, std::string>> series;
  Status st =
      SeriesOf(*ctx.store, instance ? &*instance : nullptr, model ? &*model : nullptr, &series);
  if (!st.ok()) return StatusReply(*ctx.clock, st);
  if (series.empty()) {
    json details = {{"parameter", instance ? "instance" : "model"}};
    if (instance) details["instance"] = *instance;
    if (model) details["model"] = *model;
    return ErrorReply(*ctx.clock, 404, "NOT_FOUND",
                      std::string("no stored series for ") +
                          (instance ? "instance '" + *instance + "'" : std::string()) +
                          (instance && model ? " and " : "") +
                          (model ? "model '" + *model + "'" : std::string()),
                      std::move(details));
  }
  SubjectData prev, cur;
  st = ReadSubject(*ctx.store, series, prev_from, prev_to, &prev);
  if (st.ok()) st = ReadSubject(*ctx.store, series, cur_from, to, &cur);
  if (!st.ok()) return StatusReply(*ctx.clock, st);

  std::vector<Change> changes;
  for (const RowSpec& spec : kRows) changes.push_back(Compare(spec, prev, cur, window, alpha));
  auto change_pct = [](const Change& c) {
    return c.previous != 0 ? (c.current - c.previous) / std::fabs(c.previous) * 100 : NAN;
  };
  std::string subject;
  if (instance) subject += "instance " + *instance;
  if (model) subject += std::string(instance ? ", " : "") + "model " + *model;

  if (format == Format::kCsv) {
    std::string out =
        "metric,stat,unit,better,previous,current,change,change_pct,test,z,p_value,significant,"
        "verdict\n";
    for (size_t i = 0; i < kRows.size(); ++i) {
      const RowSpec& r = kRows[i];
      const Change& c = changes[i];
      out += std::string(r.metric) + "," + std::string(r.stat) + "," + std::string(r.unit) + "," +
             std::string(BetterName(r.better)) + "," + FormatNumber(c.previous) + "," +
             FormatNumber(c.current) + "," + FormatNumber(c.current - c.previous) + "," +
             FormatNumber(change_pct(c)) + "," + (c.test ? c.test : "") + "," + FormatNumber(c.z) +
             "," + FormatNumber(c.p_value) + "," +
             (c.test ? (c.significant ? "true" : "false") : "") + "," + std::string(c.verdict) +
             "\n";
    }
    return TextReply(format, std::move(out));
  }
  if (format == Format::kMarkdown) {
    std::string out = "## Trend of " + MarkdownText(subject) + "\n\nCurrent " +
                      FormatRfc3339(cur_from) + " to " + FormatRfc3339(to) + ", previous " +
                      FormatRfc3339(prev_from) + " to " + FormatRfc3339(prev_to) + ".\n\n" +
                      "| metric | previous | current | change | p-value | verdict |\n"
                      "|---|---:|---:|---:|---:|---|\n";
    for (size_t i = 0; i < kRows.size(); ++i) {
      const RowSpec& r = kRows[i];
      const Change& c = changes[i];
      const std::string pct = FormatNumber(change_pct(c));
      const std::string prev_text = FormatNumber(c.previous), cur_text = FormatNumber(c.current);
      const std::string sign = c.current >= c.previous ? "+" : "";
      std::string change = FormatNumber(c.current - c.previous);
      if (change.empty()) {
        change = "–";
      } else {
        change = sign + change + (pct.empty() ? "" : " (" + sign + pct + " %)");
      }
      out += "| " + RowLabel(r) + (r.unit.empty() ? "" : " (" + std::string(r.unit) + ")") + " | " +
             (prev_text.empty() ? "–" : prev_text) + " | " + (cur_text.empty() ? "–" : cur_text) +
             " | " + change + " | " + (c.test ? FormatNumber(c.p_value) : "–") + " | " +
             (c.significant ? "**" + std::string(c.verdict) + "**" : std::string(c.verdict)) +
             " |\n";
    }
    out += "\nSignificance at alpha " + FormatNumber(alpha) +
           ": latencies by a Mann–Whitney rank test of the two spans' sketches (one test per "
           "metric), requests by a Poisson rate test, errors by a two-proportion z-test.\n";
    return TextReply(format, std::move(out));
  }
  json rows = json::array();
  for (size_t i = 0; i < kRows.size(); ++i) {
    const RowSpec& r = kRows[i];
    const Change& c = changes[i];
    rows.push_back({{"metric", r.metric},
                    {"stat", r.stat},
                    {"unit", r.unit},
                    {"better", BetterName(r.better)},
                    {"previous", JsonNumberOrNull(c.previous)},
                    {"current", JsonNumberOrNull(c.current)},
                    {"change", JsonNumberOrNull(c.current - c.previous)},
                    {"change_pct", JsonNumberOrNull(change_pct(c))},
                    {"test", c.test ? json(c.test) : json()},
                    {"z", JsonNumberOrNull(c.z)},
                    {"p_value", JsonNumberOrNull(c.p_value)},
                    {"significant", c.test ? json(c.significant) : json()},
                    {"verdict", c.verdict}});
  }
  ApiReply reply;
  reply.body = {{"report", "trend"},
                {"instance", instance ? json(*instance) : json()},
                {"model", model ? json(*model) : json()},
                {"series", series.size()},
                {"window_ms", window},
                {"period_ms", period},
                {"alpha", alpha},
                {"current", {{"from", cur_from}, {"to", to}, {"requests", cur.e2e.events}}},
                {"previous", {{"from", prev_from}, {"to", prev_to}, {"requests", prev.e2e.events}}},
                {"as_of", ctx.store->Watermark()},
                {"rows", std::move(rows)},
                {"timestamp", FormatRfc3339(ctx.clock->NowMs())}};
  return reply;
}

}  // namespace inferscope
