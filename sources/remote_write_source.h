#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/source.h"
#include "pipeline/status.h"
#include "sources/prom_convert.h"
#include "sources/remote_write_decode.h"

namespace httplib {
class Server;
}

namespace inferscope {

// RemoteWriteSource receives Prometheus remote write 1.0 (snappy-compressed protobuf WriteRequest
// over HTTP POST to /api/v1/write) from Prometheus, Grafana Agent or an OpenTelemetry Collector and
// turns it into gauge events through the same mapping tables and converter as prometheus_scrape
// (sources/prom_convert.h): gauges as they are, counters as reset-aware rates between consecutive
// samples of a series, histogram _sum/_count (and whatever else PromConverter carries) alike.
//
// Remote write carries no `# TYPE`: a sample's role is inferred from the mapping tables (a name the
// tables know as a gauge, a counter, or a histogram's _bucket/_sum/_count). Samples are grouped per
// instance (the `instance_label`, Prometheus' `instance` by default) and per timestamp — one scrape
// of one target shares a timestamp — and a group is converted as one page, in timestamp order,
// `flush_delay` after its first sample arrived (so a scrape split over several requests or shards
// is whole). A sample for a timestamp at or before the instance's last converted one is late and
// counted, not converted (a counter cannot go back in time).
//
// Replies: 204 on success; 400 with {"error": reason, "message": ...} for a bad snappy block, a bad
// protobuf, a missing/unsupported Content-Encoding; 413 for a body beyond max_body_bytes (or an
// uncompressed payload beyond max_decoded_bytes); 415 for remote write 2.0 payloads; 503 while
// more than max_pending_samples wait for conversion (Prometheus retries). Every reply is counted
// by result in inferscope_remote_write_requests_total{stage,result}.
// Events: instance from the label, model from the model labels (or `model`), event time = the
// sample's timestamp, publisher `remote_write/<stage>`.
// Concurrency: HTTP threads decode (one at a time: one decoder) and hand samples over under a
// mutex; Run (the source thread) converts due groups and emits one batch per group.
class RemoteWriteSource final : public Source {
 public:
  static constexpr std::string_view kName = "prometheus_remote_write";
  static constexpr std::string_view kDescription =
      "Receives Prometheus remote write 1.0 (snappy protobuf over HTTP) into gauge events";

  struct Options {
    std::string host = "127.0.0.1";
    int port = 9201;                          // 0: the kernel chooses (Endpoint() says which)
    size_t max_body_bytes = 16 << 20;         // compressed body
    size_t max_decoded_bytes = 64 << 20;      // uncompressed WriteRequest
    size_t max_pending_samples = 2'000'000;   // waiting for conversion; beyond: 503
    int64_t flush_delay_ms = 1'000;           // a group is converted this long after it began
    size_t max_instances = 10'000;            // instances with converter state
    size_t max_series_per_instance = 10'000;  // counter series remembered per instance
    PromEngine engine = PromEngine::kAuto;
    std::string instance_label = "instance";
    std::string default_instance;  // for series without the label; "" → such series are dropped
    std::string model;             // when no model label is present; "" → "_"
    std::vector<std::string> model_labels = {"model_name", "model"};
    PromParserOptions parser;

    Status Validate() const;
  };

  // From a topology's options: listen (host:port), max_body_bytes, max_decoded_bytes,
  // max_pending_samples, flush_delay, max_instances, max_series_per_instance, engine,
  // instance_label, default_instance, model, model_labels.
  static Result<std::unique_ptr<RemoteWriteSource>> Create(const ConfigNode& options);

  explicit RemoteWriteSource(Options options);
  ~RemoteWriteSource() override;

  Status Open(const StageContext& ctx) override;
  Status Run(SourceOutput& out, const std::atomic<bool>& stop) override;
  void Close() override;
  // "http://host:port" (the port read back when 0 was asked for).
  std::string Endpoint() const override { return endpoint_; }

  // The replies' results (the `result` label), by index.
  enum class Reply : uint8_t {
    kOk = 0,
    kBadSnappy,
    kBadProtobuf,
    kTooLarge,
    kTooMany,
    kBadEncoding,
    kUnsupported,
    kBusy,
    kCount_
  };

 private:
  struct Entry {
    std::string family;  // the family (# TYPE name) or the sample name when untyped
    std::string series;  // the label set without `le` (orders a histogram's buckets)
    double le = 0;       // bucket bound (+Inf for non-buckets)
    uint8_t order = 0;   // bucket 0, sum 1, count 2 (as on a page)
    PromType type = PromType::kUntyped;
    std::string line;  // the sample line, rendered in the text format
  };
  struct Group {
    int64_t first_ms = 0;  // wall time its first sample arrived
    std::vector<Entry> entries;
  };
  struct Instance {
    Instance(PromConverter::Options o, Interner& interner) : converter(std::move(o), interner) {}
    PromConverter converter;          // source thread
    std::map<int64_t, Group> groups;  // by sample timestamp (under mu_)
    int64_t last_converted_ms = 0;    // under mu_
  };

  void Handle(std::string_view body, std::string_view encoding, std::string_view content_type,
              int* status, std::string* reply);
  void Count(Reply r);
  // Adds one decoded request's samples to the groups (mu_ held); false when over capacity.
  bool Accept(const RemoteWriteDecoder& decoder, int64_t now_ms, std::string* reason);
  void Flush(int64_t now_ms, bool all, SourceOutput& out);

  const Options options_;
  StageContext ctx_;
  StringId publisher_ = 0;
  std::string endpoint_;
  std::unique_ptr<httplib::Server> server_;
  std::thread server_thread_;

  std::mutex decode_mu_;  // one request decoded at a time (one decoder's tables)
  RemoteWriteDecoder decoder_;
  std::mutex mu_;  // instances_' groups, pending_
  std::unordered_map<std::string, std::unique_ptr<Instance>> instances_;
  size_t pending_ = 0;  // samples in groups

  std::string page_;  // source thread: the rendered page

  std::vector<Counter*> requests_;  // by Reply
  Counter* samples_ = nullptr;
  Counter* unmapped_ = nullptr;
  Counter* late_ = nullptr;
  Counter* no_instance_ = nullptr;
  Counter* instances_dropped_ = nullptr;
  Counter* events_ = nullptr;
  Counter* resets_ = nullptr;
  Gauge* instances_gauge_ = nullptr;
};

}  // namespace inferscope
