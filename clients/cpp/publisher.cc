#include "clients/cpp/publisher.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <utility>

#include <msgpack.hpp>
#include <zmq.hpp>

#include "pipeline/names.h"

namespace inferscope::client {

// A growable byte buffer that msgpack::packer writes into; capacity is kept across batches.
class BatchEncoder::Buffer {
 public:
  void write(const char* data, size_t n) { bytes_.append(data, n); }
  void clear() { bytes_.clear(); }
  size_t size() const { return bytes_.size(); }
  void resize(size_t n) { bytes_.resize(n); }
  char* data() { return bytes_.data(); }

 private:
  std::string bytes_;
};

namespace {

void PutBigEndian(char* at, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) {
    at[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

template <typename Packer>
void PackKey(Packer& p, std::string_view key) {
  p.pack_str(static_cast<uint32_t>(key.size()));
  p.pack_str_body(key.data(), static_cast<uint32_t>(key.size()));
}

template <typename Packer>
void PackStr(Packer& p, std::string_view key, std::string_view value) {
  PackKey(p, key);
  p.pack_str(static_cast<uint32_t>(value.size()));
  p.pack_str_body(value.data(), static_cast<uint32_t>(value.size()));
}

}  // namespace

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t NewIncarnation(uint64_t above) {
  std::random_device rd;
  const uint64_t random = ((uint64_t{rd()} << 32) | rd()) & ((uint64_t{1} << 22) - 1);
  const uint64_t inc = (static_cast<uint64_t>(NowMs()) << 22) | random;
  return std::max(inc, above + 1);
}

BatchEncoder::BatchEncoder(std::string publisher_id, uint64_t first_seq)
    : publisher_id_(std::move(publisher_id)),
      next_seq_(first_seq),
      buffer_(std::make_unique<Buffer>()) {}

BatchEncoder::~BatchEncoder() = default;

void BatchEncoder::StartIfNeeded() {
  if (!finished_) return;
  finished_ = false;
  count_ = 0;
  buffer_->clear();
  msgpack::packer<Buffer> p(*buffer_);
  // {"v": 1, "pub": id, ["inc": <uint64, patched>,] "seq": <uint64, patched>,
  //  "events": <array32, patched> ...
  p.pack_map(with_incarnation_ ? 5 : 4);
  PackKey(p, "v");
  p.pack_uint8(1);
  PackStr(p, "pub", publisher_id_);
  if (with_incarnation_) {
    PackKey(p, "inc");
    const char inc_header[9] = {static_cast<char>(0xcf)};
    buffer_->write(inc_header, sizeof(inc_header));
    inc_offset_ = buffer_->size() - 8;
  }
  PackKey(p, "seq");
  const char seq_header[9] = {static_cast<char>(0xcf)};
  buffer_->write(seq_header, sizeof(seq_header));
  seq_offset_ = buffer_->size() - 8;
  PackKey(p, "events");
  const char array_header[5] = {static_cast<char>(0xdd)};
  buffer_->write(array_header, sizeof(array_header));
  count_offset_ = buffer_->size() - 4;
  header_size_ = buffer_->size();
}

void BatchEncoder::AddRequest(const RequestOutcome& r) {
  StartIfNeeded();
  last_event_at_ = buffer_->size();
  msgpack::packer<Buffer> p(*buffer_);
  uint32_t fields = 4;  // k i m t
  fields += r.e2e_ms.has_value() + r.ttft_ms.has_value() + r.tpot_ms.has_value() +
            r.prompt_tokens.has_value() + r.output_tokens.has_value() +
            r.cached_tokens.has_value() + !r.error.empty() + r.cost_usd.has_value() +
            r.quality.has_value();
  p.pack_map(fields);
  PackStr(p, "k", "r");
  PackStr(p, "i", r.instance);
  PackStr(p, "m", r.model);
  PackKey(p, "t");
  p.pack_int64(r.time_ms != 0 ? r.time_ms : NowMs());
  if (r.e2e_ms) {
    PackKey(p, "e2e");
    p.pack_double(*r.e2e_ms);
  }
  if (r.ttft_ms) {
    PackKey(p, "ttft");
    p.pack_double(*r.ttft_ms);
  }
  if (r.tpot_ms) {
    PackKey(p, "tpot");
    p.pack_double(*r.tpot_ms);
  }
  if (r.prompt_tokens) {
    PackKey(p, "pt");
    p.pack_uint32(*r.prompt_tokens);
  }
  if (r.output_tokens) {
    PackKey(p, "ot");
    p.pack_uint32(*r.output_tokens);
  }
  if (r.cached_tokens) {
    PackKey(p, "ct");
    p.pack_uint32(*r.cached_tokens);
  }
  if (!r.error.empty()) PackStr(p, "err", r.error);
  if (r.cost_usd) {
    PackKey(p, "cost");
    p.pack_double(*r.cost_usd);
  }
  if (r.quality) {
    PackKey(p, "q");
    p.pack_double(*r.quality);
  }
  ++count_;
}

void BatchEncoder::AddGauge(std::string_view instance, std::string_view model,
                            std::string_view name, double value, int64_t time_ms) {
  StartIfNeeded();
  last_event_at_ = buffer_->size();
  msgpack::packer<Buffer> p(*buffer_);
  p.pack_map(6);
  PackStr(p, "k", "g");
  PackStr(p, "i", instance);
  PackStr(p, "m", model);
  PackKey(p, "t");
  p.pack_int64(time_ms != 0 ? time_ms : NowMs());
  PackStr(p, "n", name);
  PackKey(p, "val");
  p.pack_double(value);
  ++count_;
}

std::string_view BatchEncoder::Finish() {
  StartIfNeeded();  // an empty batch is a valid (heartbeat) payload
  PutBigEndian(buffer_->data() + seq_offset_, next_seq_++, 8);
  if (with_incarnation_) PutBigEndian(buffer_->data() + inc_offset_, incarnation_, 8);
  PutBigEndian(buffer_->data() + count_offset_, count_, 4);
  finished_ = true;
  return {buffer_->data(), buffer_->size()};
}

size_t BatchEncoder::bytes() const { return finished_ ? 0 : buffer_->size(); }

void BatchEncoder::DropLast() {
  if (finished_ || count_ == 0) return;
  buffer_->resize(last_event_at_);
  --count_;
}

void BatchEncoder::Reset() {
  finished_ = true;
  count_ = 0;
  buffer_->clear();
}

Publisher::Publisher(PublisherOptions options)
    : options_(std::move(options)), encoder_(options_.publisher_id) {
  encoder_.enable_incarnation(NewIncarnation());
}

Publisher::~Publisher() { Close(); }

bool Publisher::Connect(std::string* error) {
  auto fail = [&](std::string message) {
    last_error_ = std::move(message);
    if (error != nullptr) *error = last_error_;
    socket_.reset();
    context_.reset();
    return false;
  };
  if (options_.endpoint.empty()) return fail("endpoint is required");
  if (options_.publisher_id.empty() || options_.publisher_id.size() > kMaxNameBytes) {
    return fail("publisher_id must be 1.." + std::to_string(kMaxNameBytes) + " bytes");
  }
  if (options_.batch_size == 0) return fail("batch_size must be >= 1");
  try {
    context_ = std::make_unique<zmq::context_t>(1);
    const bool push = options_.socket == PublisherOptions::SocketType::kPush;
    socket_ = std::make_unique<zmq::socket_t>(
        *context_, push ? zmq::socket_type::push : zmq::socket_type::pub);
    socket_->set(zmq::sockopt::sndhwm, options_.sndhwm);
    socket_->set(zmq::sockopt::sndtimeo, options_.send_timeout_ms);
    socket_->set(zmq::sockopt::linger, options_.linger_ms);
    if (push && options_.immediate) socket_->set(zmq::sockopt::immediate, 1);
    if (options_.curve.enabled()) {
      std::string curve_error;
      if (options_.bind) return fail("curve keys need a connecting socket (the engine binds)");
      if (!ApplyCurveClientKeys(*socket_, options_.curve, &curve_error)) return fail(curve_error);
    }
    if (options_.bind) {
      socket_->bind(options_.endpoint);
      endpoint_ = socket_->get(zmq::sockopt::last_endpoint);
    } else {
      socket_->connect(options_.endpoint);
    }
  } catch (const zmq::error_t& e) {
    return fail(std::string(options_.bind ? "bind " : "connect ") + options_.endpoint + ": " +
                e.what());
  }
  return true;
}

bool Publisher::Request(const RequestOutcome& r) {
  encoder_.AddRequest(r);
  return encoder_.size() >= options_.batch_size ? Flush() : true;
}

bool Publisher::Gauge(std::string_view instance, std::string_view model, std::string_view name,
                      double value, int64_t time_ms) {
  encoder_.AddGauge(instance, model, name, value, time_ms);
  return encoder_.size() >= options_.batch_size ? Flush() : true;
}

bool Publisher::Flush() {
  const size_t events = encoder_.size();
  if (events == 0) return true;
  if (socket_ == nullptr) {
    encoder_.Reset();
    events_dropped_ += events;
    last_error_ = "not connected";
    return false;
  }
  std::string_view payload = encoder_.Finish();
  try {
    zmq::const_buffer topic(options_.topic.data(), options_.topic.size());
    if (!socket_->send(topic, zmq::send_flags::sndmore)) {
      events_dropped_ += events;
      last_error_ = "send timed out";
      return false;
    }
    // The second frame of a multipart message is queued with the first: it cannot time out.
    socket_->send(zmq::const_buffer(payload.data(), payload.size()), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    events_dropped_ += events;
    last_error_ = std::string("send: ") + e.what();
    return false;
  }
  ++messages_sent_;
  events_sent_ += events;
  return true;
}

void Publisher::Close() {
  if (socket_ != nullptr) {
    (void)Flush();
    socket_->close();
    socket_.reset();
  }
  if (context_ != nullptr) {
    context_->close();
    context_.reset();
  }
}

}  // namespace inferscope::client
