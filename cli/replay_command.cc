// `inferscope replay`: sends a recording of protocol messages (`inferscope record`, byte for byte)
// or a CSV of request outcomes (through the C++ client) to an engine's ingest endpoint at the pace
// they were recorded (or `--speed` times faster, or as fast as possible).

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/detect_csv.h"
#include "cli/line_reader.h"
#include "cli/progress.h"
#include "cli/recording.h"
#include "clients/cpp/publisher.h"
#include "pipeline/scoped_fd.h"
#include "pipeline/utf8.h"

namespace inferscope {
namespace {

// A pacing offset in microseconds as a duration, at most a year ahead (the offsets are doubles from
// any 64-bit times a file holds).
std::chrono::microseconds PaceOffset(double offset_us) {
  return std::chrono::microseconds(static_cast<int64_t>(std::min(offset_us, 365 * 86'400e6)));
}

// Sleeps until `due`. A wait over a minute (a gap in the input, or a slow --speed) is said first,
// so that a replay which seems stuck is not taken for one.
void PaceUntil(std::chrono::steady_clock::time_point due, const char* what, int64_t where) {
  const auto wait =
      std::chrono::duration_cast<std::chrono::seconds>(due - std::chrono::steady_clock::now());
  if (wait > std::chrono::minutes(1)) {
    spdlog::warn(
        "replay: waiting {} s for the {} {} (its recorded time is that far ahead at this "
        "--speed; a higher --speed, or 0, sends sooner)",
        wait.count(), what, where);
  }
  std::this_thread::sleep_until(due);
}

enum Column : int {
  kTime = 0,
  kInstance,
  kModel,
  kE2e,
  kTtft,
  kTpot,
  kPrompt,
  kOutput,
  kCached,
  kError,
  kCost,
  kQuality,
  kNumColumns,
};
constexpr std::string_view kColumnNames[kNumColumns] = {
    "time",          "instance",      "model",         "e2e_ms", "ttft_ms",  "tpot_ms",
    "prompt_tokens", "output_tokens", "cached_tokens", "error",  "cost_usd", "quality"};

void Split(std::string_view line, std::vector<std::string_view>& out) {
  out.clear();
  while (true) {
    const size_t comma = line.find(',');
    std::string_view f = line.substr(0, comma);
    while (!f.empty() && (f.front() == ' ' || f.front() == '\t')) f.remove_prefix(1);
    while (!f.empty() && (f.back() == ' ' || f.back() == '\t' || f.back() == '\r')) {
      f.remove_suffix(1);
    }
    out.push_back(f);
    if (comma == std::string_view::npos) return;
    line.remove_prefix(comma + 1);
  }
}

bool ParseDouble(std::string_view s, double* v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && p == s.data() + s.size();
}
bool ParseU32(std::string_view s, uint32_t* v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && p == s.data() + s.size();
}

// One row → an outcome; false with `*why` set when it is malformed or would be rejected by the
// engine (docs/PROTOCOL.md: finite numbers, UTF-8 strings), so that replay reports it as skipped
// instead of sending it. The event time is checked by the caller (it may be shifted).
bool ParseRow(const std::vector<std::string_view>& f, const int (&col)[kNumColumns],
              client::RequestOutcome* r, int64_t* time_ms, std::string* why) {
  auto get = [&](Column c) -> std::string_view {
    const int i = col[c];
    return i >= 0 && static_cast<size_t>(i) < f.size() ? f[static_cast<size_t>(i)] : "";
  };
  std::optional<int64_t> t = ParseCsvTimestampMs(get(kTime));
  if (!t) {
    *why = "time: expected epoch seconds or an ISO 8601 timestamp";
    return false;
  }
  *time_ms = *t;
  r->instance = get(kInstance);
  r->model = get(kModel);
  if (r->instance.empty() || r->model.empty() || r->instance.size() > 255 ||
      r->model.size() > 255) {
    *why = "instance and model: 1..255 bytes";
    return false;
  }
  r->error = get(kError);
  for (Column c : {kInstance, kModel, kError}) {
    if (!IsValidUtf8(get(c))) {
      *why = std::string(kColumnNames[c]) + ": not valid UTF-8";
      return false;
    }
  }
  // e2e_ms is optional like the other measures (an empty cell or no column: not known, e.g. a
  // gateway that logged at first-token time); the request still counts.
  struct OptD {
    Column c;
    std::optional<double>* out;
  };
  for (OptD o : {OptD{kE2e, &r->e2e_ms}, OptD{kTtft, &r->ttft_ms}, OptD{kTpot, &r->tpot_ms},
                 OptD{kCost, &r->cost_usd}, OptD{kQuality, &r->quality}}) {
    const std::string_view s = get(o.c);
    double v = 0;
    if (s.empty()) {
      o.out->reset();
    } else if (ParseDouble(s, &v) && std::isfinite(v) && v >= 0) {
      *o.out = v;
    } else {
      *why = std::string(kColumnNames[o.c]) + ": expected a finite number >= 0";
      return false;
    }
  }
  struct OptU {
    Column c;
    std::optional<uint32_t>* out;
  };
  for (OptU o : {OptU{kPrompt, &r->prompt_tokens}, OptU{kOutput, &r->output_tokens},
                 OptU{kCached, &r->cached_tokens}}) {
    const std::string_view s = get(o.c);
    uint32_t v = 0;
    if (s.empty()) {
      o.out->reset();
    } else if (ParseU32(s, &v)) {
      *o.out = v;
    } else {
      *why = std::string(kColumnNames[o.c]) + ": expected a whole number >= 0";
      return false;
    }
  }
  if (r->quality && *r->quality > 1) {
    *why = "quality: expected a number in [0, 1]";
    return false;
  }
  return true;
}

int ReplayCsv(const ReplayArgs& args) {
  const int fd = ::open(args.input.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    spdlog::error("replay: cannot read {}: {}", args.input, std::strerror(errno));
    return 2;
  }
  const ScopedFd closer(fd);
  LineReader in(fd);
  // The header names the columns (any order; unknown columns are ignored).
  std::string_view line;
  std::vector<std::string_view> fields;
  switch (in.Next(&line)) {
    case LineReader::Outcome::kLine:
      break;
    case LineReader::Outcome::kEnd:
      spdlog::error("replay: {}: empty file (expected a header line)", args.input);
      return 2;
    case LineReader::Outcome::kTooLong:
      spdlog::error("replay: {}:1: longer than {} bytes (expected a header line)", args.input,
                    LineReader::kMaxLineBytes);
      return 2;
    case LineReader::Outcome::kError:
      spdlog::error("replay: cannot read {}: {}", args.input, std::strerror(in.error()));
      return 2;
  }
  int col[kNumColumns];
  for (int& c : col) c = -1;
  Split(line, fields);
  for (size_t i = 0; i < fields.size(); ++i) {
    for (int c = 0; c < kNumColumns; ++c) {
      if (fields[i] == kColumnNames[c] || (c == kTime && fields[i] == "time_ms")) {
        col[c] = static_cast<int>(i);
      }
    }
  }
  for (Column c : {kTime, kInstance, kModel}) {
    if (col[c] < 0) {
      spdlog::error(
          "replay: {}:1: the header has no '{}' column (required: time, instance, "
          "model)",
          args.input, kColumnNames[c]);
      return 2;
    }
  }

  client::PublisherOptions options;
  options.endpoint = args.endpoint;
  options.publisher_id = args.publisher_id;
  options.batch_size = static_cast<size_t>(args.batch_size);
  // With no engine listening, the rows are dropped and counted (exit 1), not queued and discarded
  // at close while the summary says "queued".
  options.immediate = true;
  client::Publisher pub(options);
  std::string error;
  if (!pub.Connect(&error)) {
    spdlog::error("replay: cannot connect to {}: {}", args.endpoint, error);
    return 1;
  }

  Progress progress(!args.no_progress);
  const auto wall_start = std::chrono::steady_clock::now();
  const int64_t epoch_start = client::NowMs();
  std::optional<int64_t> first_ms;
  int64_t sent = 0;
  int64_t bad = 0;
  client::RequestOutcome r;
  const auto skip = [&](const std::string& why) {
    ++bad;
    progress.Done();
    std::fprintf(stderr, "replay: %s:%lld: %s (skipped)\n", args.input.c_str(),
                 static_cast<long long>(in.line_number()), why.c_str());
  };
  while (true) {
    const LineReader::Outcome outcome = in.Next(&line);
    if (outcome == LineReader::Outcome::kEnd) break;
    if (outcome == LineReader::Outcome::kError) {
      progress.Done();
      spdlog::error("replay: cannot read {} after line {}: {}; {} requests queued before it",
                    args.input, in.line_number(), std::strerror(in.error()), sent);
      return 2;
    }
    if (outcome == LineReader::Outcome::kTooLong) {
      skip("longer than " + std::to_string(LineReader::kMaxLineBytes) + " bytes");
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    Split(line, fields);
    int64_t t = 0;
    std::string why;
    if (!ParseRow(fields, col, &r, &t, &why)) {
      skip(why);
      continue;
    }
    // Event times must be > 0 (docs/PROTOCOL.md; the client would send 0 as "now").
    if (args.keep_times && t <= 0) {
      skip("time: at or before 1970-01-01T00:00:00Z (event times must be > 0)");
      continue;
    }
    // The row's offset from the first, in wall time at this speed (rows out of order are sent at
    // once).
    const double offset_ms =
        static_cast<double>(t - first_ms.value_or(t)) / (args.speed > 0 ? args.speed : 1);
    if (!args.keep_times && static_cast<double>(epoch_start) + offset_ms < 1) {
      skip("time: " + std::to_string((first_ms.value_or(t) - t) / 1000) +
           " s before the first row, so its shifted time would be before 1970 (is the first row's "
           "time right?)");
      continue;
    }
    if (!first_ms) first_ms = t;
    if (args.speed > 0) {
      const auto due = wall_start + PaceOffset(offset_ms * 1000);
      if (due > std::chrono::steady_clock::now()) {
        if (!pub.Flush()) {
          spdlog::error("replay: send failed: {}", pub.last_error());
          return 1;
        }
        PaceUntil(due, "row", in.line_number());
      }
    }
    // Event times: as recorded (--keep-times), or now: the replay start plus the row's offset.
    r.time_ms = args.keep_times ? t : epoch_start + static_cast<int64_t>(offset_ms);
    if (!pub.Request(r)) {
      spdlog::error("replay: send failed: {}", pub.last_error());
      return 1;
    }
    ++sent;
    if (progress.Due()) {
      progress.Show("replay: " + std::to_string(sent) + " requests queued, " + std::to_string(bad) +
                    " rows skipped");
    }
  }
  pub.Close();
  progress.Done();
  if (pub.events_dropped() > 0) {
    spdlog::error("replay: {} events dropped (endpoint {} not accepting)", pub.events_dropped(),
                  args.endpoint);
    return 1;
  }
  // The publisher is fire-and-forget (clients/cpp/publisher.h): it knows what ZeroMQ queued, not
  // what the engine received, so the count says "queued".
  spdlog::info("replay: {} requests queued for {} from {} ({} rows skipped)", sent, args.endpoint,
               args.input, bad);
  return bad > 0 && sent == 0 ? 2 : 0;
}

// Sends every record of the recording as it is (2 frames: topic, payload) through a PUSH socket,
// paced by the arrival times; stops at the first torn or corrupt record.
int ReplayRecording(const ReplayArgs& args) {
  auto reader = RecordingReader::Open(args.input);
  if (!reader.ok()) {
    spdlog::error("replay: {}", reader.status().message());
    return 2;
  }
  constexpr int kSendTimeoutMs = 5000;
  constexpr int kLingerMs = 5000;
  zmq::context_t ctx(1);
  zmq::socket_t push(ctx, zmq::socket_type::push);
  try {
    push.set(zmq::sockopt::sndhwm, 1000);
    push.set(zmq::sockopt::sndtimeo, kSendTimeoutMs);
    push.set(zmq::sockopt::linger, kLingerMs);
    push.set(zmq::sockopt::immediate, 1);  // no engine listening: the send times out, said below
    push.connect(args.endpoint);
  } catch (const zmq::error_t& e) {
    spdlog::error("replay: cannot connect to {}: {}", args.endpoint, e.what());
    return 1;
  }
  Progress progress(!args.no_progress);
  const auto wall_start = std::chrono::steady_clock::now();
  std::optional<int64_t> first_ns;
  int64_t sent = 0;
  uint64_t bytes = 0;
  RecordedMessage m;
  while ((*reader)->Next(&m)) {
    if (!first_ns) {
      first_ns = m.arrival_ns;
      // The events keep their recorded times; an engine refuses those older than its source's
      // max_past (default 1h).
      const int64_t age_s = (client::NowMs() - m.arrival_ns / 1'000'000) / 1000;
      if (age_s > 3600) {
        spdlog::warn(
            "replay: the recording starts {} s ago; its events keep their recorded times, so "
            "the engine's source must accept events that old (option max_past, default 1h)",
            age_s);
      }
    }
    if (args.speed > 0) {
      // Records out of order (the clock went back while recording) are sent at once.
      // In doubles (arrival times are any 64-bit value a file holds), at most a year ahead.
      const auto due =
          wall_start +
          PaceOffset((static_cast<double>(m.arrival_ns) - static_cast<double>(*first_ns)) / 1000 /
                     args.speed);
      if (due > std::chrono::steady_clock::now())
        PaceUntil(due, "message at offset", static_cast<int64_t>(m.offset));
    }
    try {
      if (!push.send(zmq::const_buffer(m.topic.data(), m.topic.size()), zmq::send_flags::sndmore)) {
        progress.Done();
        spdlog::error(
            "replay: send timed out after {} s ({} not accepting); {} of the recording's "
            "messages were sent, up to offset {}",
            kSendTimeoutMs / 1000, args.endpoint, sent, m.offset);
        return 1;
      }
      // The second frame of a multipart message is queued with the first: it cannot time out.
      (void)push.send(zmq::const_buffer(m.payload.data(), m.payload.size()), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      progress.Done();
      spdlog::error("replay: send: {}", e.what());
      return 1;
    }
    ++sent;
    bytes += m.payload.size();
    if (progress.Due()) {
      progress.Show("replay: " + std::to_string(sent) + " messages sent");
    }
  }
  progress.Done();
  // Close waits up to the linger time for the queued messages to leave.
  push.close();
  ctx.close();
  if (!(*reader)->status().ok()) {
    spdlog::error("replay: {}; {} messages before it were sent, nothing after it",
                  (*reader)->status().message(), sent);
    return 2;
  }
  const double span_s =
      sent > 0 ? (static_cast<double>(m.arrival_ns) - static_cast<double>(*first_ns)) / 1e9 : 0;
  spdlog::info("replay: {} messages ({} payload bytes, {:.1f} s recorded) sent from {} to {}", sent,
               bytes, span_s, args.input, args.endpoint);
  return 0;
}

}  // namespace

int ReplayCommand(const ReplayArgs& args) {
  std::string format = args.format;
  struct stat st {};
  if (::stat(args.input.c_str(), &st) != 0) {
    spdlog::error("replay: cannot read {}: {}", args.input, std::strerror(errno));
    return 2;
  }
  if (S_ISDIR(st.st_mode)) {
    spdlog::error("replay: {}: is a directory", args.input);
    return 2;
  }
  if (format == "auto") {
    std::ifstream probe(args.input);
    if (!probe) {
      spdlog::error("replay: cannot read {}: {}", args.input, std::strerror(errno));
      return 2;
    }
    format = IsRecordingFile(args.input) ? "recording" : "csv";
  }
  if (format == "recording") return ReplayRecording(args);
  if (format == "csv") return ReplayCsv(args);
  spdlog::error("replay: --format: expected auto, csv or recording, got '{}'", args.format);
  return 2;
}

}  // namespace inferscope
