// Micro-benchmarks of the Prometheus text parser (sources/prom_text.h) and the scrape converter
// (sources/prom_convert.h) over the real /metrics pages of tests/data/prometheus/ (vLLM v1, vLLM
// v0, SGLang; 134 samples in all), concatenated into one page. Reports samples/s per core
// (items_per_second). Same-run baselines: memchr over the page counting lines (the floor of any
// line-oriented reader) and a strtod per sample line (the floor of a parser that reads values).

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "pipeline/interner.h"
#include "sources/prom_convert.h"
#include "sources/prom_text.h"

namespace inferscope {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The three fixture pages, each with its provenance comments, concatenated.
const std::string& Page() {
  static const std::string page = [] {
    const std::string dir = std::string(INFERSCOPE_SOURCE_DIR) + "/tests/data/prometheus/";
    std::string p;
    for (const char* f : {"vllm-metrics.txt", "vllm-metrics-v0-engine.txt", "sglang-metrics.txt"}) {
      p += ReadFile(dir + f);
    }
    if (p.empty()) std::abort();
    return p;
  }();
  return page;
}

class CountingSink final : public PromSampleSink {
 public:
  void OnSample(const PromSample& s) override {
    sum += s.value;
    labels += s.num_labels;
  }
  double sum = 0;
  size_t labels = 0;
};

uint64_t SamplesInPage() {
  CountingSink sink;
  PromTextParser parser;
  return parser.Parse(Page(), sink).samples;
}

void BM_PromParse(benchmark::State& state) {
  const std::string& page = Page();
  PromTextParser parser;
  CountingSink sink;
  uint64_t samples = 0;
  for (auto _ : state) {
    PromParseStats s = parser.Parse(page, sink);
    samples += s.samples;
    benchmark::DoNotOptimize(sink.sum);
  }
  state.SetItemsProcessed(static_cast<int64_t>(samples));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(page.size()));
  state.counters["samples_per_page"] = static_cast<double>(SamplesInPage());
}
BENCHMARK(BM_PromParse);

// Parse + mapping + counter state + events: what the source does per page.
void BM_PromConvert(benchmark::State& state) {
  const std::string& page = Page();
  Interner interner;
  PromConverter::Options o;
  o.instance = "vllm-0";
  PromConverter converter(o, interner);
  std::vector<Event> events;
  events.reserve(256);
  int64_t t = 1'000'000;
  const uint64_t per_page = SamplesInPage();
  for (auto _ : state) {
    events.clear();
    t += 5000;
    PromConvertStats s = converter.Convert(page, t, 1, events);
    benchmark::DoNotOptimize(s.events);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(per_page));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(page.size()));
}
BENCHMARK(BM_PromConvert);

// Baseline: memchr for every newline of the page.
void BM_BaselineMemchrLines(benchmark::State& state) {
  const std::string& page = Page();
  const uint64_t per_page = SamplesInPage();
  for (auto _ : state) {
    size_t lines = 0;
    const char* p = page.data();
    const char* end = p + page.size();
    while (p < end) {
      const void* nl = std::memchr(p, '\n', static_cast<size_t>(end - p));
      if (nl == nullptr) break;
      p = static_cast<const char*>(nl) + 1;
      ++lines;
    }
    benchmark::DoNotOptimize(lines);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(per_page));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(page.size()));
}
BENCHMARK(BM_BaselineMemchrLines);

// Baseline: memchr per line plus strtod of the text after the last space of each sample line.
void BM_BaselineMemchrStrtod(benchmark::State& state) {
  const std::string& page = Page();
  const uint64_t per_page = SamplesInPage();
  for (auto _ : state) {
    double sum = 0;
    const char* p = page.data();
    const char* end = p + page.size();
    while (p < end) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      if (nl == nullptr) nl = end;
      if (*p != '#' && nl > p) {
        const char* sp = nl;
        while (sp > p && sp[-1] != ' ') --sp;
        sum += std::strtod(sp, nullptr);
      }
      p = nl + 1;
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(per_page));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(page.size()));
}
BENCHMARK(BM_BaselineMemchrStrtod);

}  // namespace
}  // namespace inferscope

BENCHMARK_MAIN();
