// libFuzzer target: the Prometheus text / OpenMetrics parser (sources/prom_text.h) and the
// converter behind the prometheus_scrape source (sources/prom_convert.h).
//
// The input is a page. It is parsed with the default options in auto, 0.0.4 and OpenMetrics
// format, and with tight bounds (3 labels, 80-byte lines, 5 samples); then converted twice by a
// PromConverter (so that counters get a previous value and rates, resets and ratios are formed).
// Any bytes must be read without a crash or a hang; the counts must add up; every view must point
// into the page; bounds must hold; every event must be a finite gauge.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/interner.h"
#include "sources/prom_convert.h"
#include "sources/prom_text.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "prom_text_fuzzer: contract violated: %s\n", what);
  std::abort();
}

bool Inside(std::string_view page, std::string_view v) {
  return v.empty() || (v.data() >= page.data() && v.data() + v.size() <= page.data() + page.size());
}

class Checker final : public inferscope::PromSampleSink {
 public:
  Checker(std::string_view page, size_t max_labels) : page_(page), max_labels_(max_labels) {}
  void OnSample(const inferscope::PromSample& s) override {
    ++samples;
    if (s.name.empty() || !Inside(page_, s.name) || !Inside(page_, s.family) ||
        !Inside(page_, s.series)) {
      Fail("sample views outside the page");
    }
    if (s.num_labels > max_labels_) Fail("more labels than max_labels");
    if (s.series.substr(0, s.name.size()) != s.name) Fail("series does not start with the name");
    for (size_t i = 0; i < s.num_labels; ++i) {
      if (s.labels[i].name.empty() || !Inside(page_, s.labels[i].name) ||
          !Inside(page_, s.labels[i].value)) {
        Fail("label views outside the page");
      }
      std::string unescaped;
      inferscope::UnescapeLabelValue(s.labels[i].value, unescaped);
      if (unescaped.size() > s.labels[i].value.size()) Fail("unescaping grew the value");
    }
  }
  uint64_t samples = 0;

 private:
  std::string_view page_;
  size_t max_labels_;
};

void Parse(std::string_view page, const inferscope::PromParserOptions& o) {
  inferscope::PromTextParser parser(o);
  Checker checker(page, o.max_labels);
  const inferscope::PromParseStats s = parser.Parse(page, checker);
  if (s.samples != checker.samples) Fail("samples count differs from the sink's");
  if (s.samples > o.max_samples) Fail("more samples than max_samples");
  if (s.samples + s.skipped_total() > s.lines) Fail("more samples and skips than lines");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view page(reinterpret_cast<const char*>(data), size);
  inferscope::PromParserOptions o;
  Parse(page, o);
  o.format = inferscope::PromFormat::kText004;
  Parse(page, o);
  o.format = inferscope::PromFormat::kOpenMetrics;
  Parse(page, o);
  inferscope::PromParserOptions tight;
  tight.max_labels = 3;
  tight.max_line_bytes = 80;
  tight.max_samples = 5;
  Parse(page, tight);

  // The string table outlives a run (building one costs about as much as parsing a page); it is
  // replaced every 1000 runs and when half full, so that names from earlier inputs cannot fill it.
  static std::unique_ptr<inferscope::Interner> shared_interner;
  static int runs = 0;
  if (shared_interner == nullptr || ++runs > 1000 ||
      shared_interner->size() > shared_interner->max_strings() / 2) {
    shared_interner = std::make_unique<inferscope::Interner>(10'000);
    runs = 0;
  }
  inferscope::Interner& interner = *shared_interner;
  inferscope::PromConverter::Options co;
  co.instance = "fuzz";
  co.max_series = 64;
  inferscope::PromConverter converter(co, interner);
  std::vector<inferscope::Event> events;
  for (int64_t t : {1'000, 6'000}) {
    events.clear();
    const inferscope::PromConvertStats s = converter.Convert(page, t, 1, events);
    if (s.events != events.size()) Fail("events count");
    if (converter.series() > co.max_series) Fail("more series than max_series");
    for (const inferscope::Event& e : events) {
      if (e.kind != inferscope::EventKind::kGauge || !std::isfinite(e.value) || e.metric == 0 ||
          e.model == 0 || e.time_ms != t) {
        Fail("bad event");
      }
    }
  }
  return 0;
}
