#include "clients/cpp/acked_publisher.h"

#include <msgpack.hpp>

#include <algorithm>
#include <iterator>
#include <utility>

#include "pipeline/names.h"

namespace inferscope::client {
namespace {

using Clock = std::chrono::steady_clock;
// At most one go-back resend per this interval (the engine's hints come in bursts).
constexpr int kGoBackIntervalMs = 100;
// An upper bound of an event's encoded size without its strings (all optional fields present).
constexpr size_t kEventOverheadBytes = 160;
// Compact the spool when it holds this much more than the live messages.
constexpr uint64_t kSpoolSlackBytes = 1 << 20;

// A small control map from the engine: {"v", "pub", "inc", "ack", "next", "latest"} or a nack.
// Parsing is bounded (tiny limits) and never throws out of here.
struct Control {
  bool ok = false;
  std::string pub;
  uint64_t inc = 0;
  bool has_ack = false, has_next = false, has_latest = false, has_seq = false;
  uint64_t ack = 0, next = 0, latest = 0, seq = 0;
  std::string reason;
  bool consumed = false;
};

Control ParseControl(const zmq::message_t& payload) {
  Control c;
  try {
    size_t offset = 0;
    msgpack::object_handle handle =
        msgpack::unpack(static_cast<const char*>(payload.data()), payload.size(), offset, nullptr,
                        nullptr, msgpack::unpack_limit(64, 64, 1024, 1024, 1024, 8));
    const msgpack::object& root = handle.get();
    if (root.type != msgpack::type::MAP) return c;
    for (const auto& kv : root.via.map) {
      if (kv.key.type != msgpack::type::STR) continue;
      const std::string_view key(kv.key.via.str.ptr, kv.key.via.str.size);
      const msgpack::object& v = kv.val;
      const bool uint = v.type == msgpack::type::POSITIVE_INTEGER;
      if (key == "pub" && v.type == msgpack::type::STR) {
        c.pub.assign(v.via.str.ptr, v.via.str.size);
      } else if (key == "inc" && uint) {
        c.inc = v.via.u64;
      } else if (key == "ack") {
        c.has_ack = uint;
        c.ack = uint ? v.via.u64 : 0;
      } else if (key == "next") {
        c.has_next = uint;
        c.next = uint ? v.via.u64 : 0;
      } else if (key == "latest") {
        c.has_latest = uint;
        c.latest = uint ? v.via.u64 : 0;
      } else if (key == "seq") {
        c.has_seq = uint;
        c.seq = uint ? v.via.u64 : 0;
      } else if (key == "reason" && v.type == msgpack::type::STR) {
        c.reason.assign(v.via.str.ptr, v.via.str.size);
      } else if (key == "consumed" && v.type == msgpack::type::BOOLEAN) {
        c.consumed = v.via.boolean;
      }
    }
    c.ok = true;
  } catch (const std::exception&) {
    c.ok = false;  // not a message we understand; ignore it
  }
  return c;
}

void PutBigEndian64(std::string& s, size_t at, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    s[at + static_cast<size_t>(i)] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

size_t StringBytes(const RequestOutcome& r) {
  return r.instance.size() + r.model.size() + r.error.size();
}

}  // namespace

AckedPublisher::AckedPublisher(AckedPublisherOptions options)
    : options_(std::move(options)), encoder_(options_.publisher_id) {}

AckedPublisher::~AckedPublisher() { Close(); }

bool AckedPublisher::Connect(std::string* error) {
  auto fail = [&](std::string message) {
    last_error_ = std::move(message);
    if (error != nullptr) *error = last_error_;
    socket_.reset();
    context_.reset();
    spool_.Close();
    return false;
  };
  if (options_.endpoint.empty()) return fail("endpoint is required");
  if (options_.publisher_id.empty() || options_.publisher_id.size() > kMaxNameBytes) {
    return fail("publisher_id must be 1.." + std::to_string(kMaxNameBytes) + " bytes");
  }
  if (options_.batch_size == 0 || options_.max_unacked == 0) {
    return fail("batch_size and max_unacked must be >= 1");
  }
  if (options_.batch_size > options_.max_events_per_message) {
    return fail("batch_size must not exceed max_events_per_message (" +
                std::to_string(options_.max_events_per_message) + ")");
  }
  if (options_.max_message_bytes < 1024) return fail("max_message_bytes must be >= 1024");
  if (!options_.spool_path.empty()) {
    Spool::State state;
    std::string spool_error;
    if (!spool_.Open(options_.spool_path, options_.spool_sync, &state, &spool_error)) {
      return fail(spool_error);
    }
    if (state.present) {
      // A restart: resume the spooled incarnation and resend its unacknowledged messages with
      // their original sequence numbers; the engine applies each exactly once.
      incarnation_ = state.incarnation;
      encoder_.set_next_seq(state.next_seq);
      any_acked_ = state.any_acked;
      acked_seq_ = state.acked_seq;
      for (auto& [seq, m] : state.unacked) {
        Message& restored = unacked_.emplace_back();
        restored.seq = seq;
        restored.events = m.events;
        restored.payload = std::move(m.payload);
      }
      restored_ = unacked_.size();
    } else {
      incarnation_ = NewIncarnation(0);
      if (!spool_.Compact(SpoolState(), &spool_error)) return fail(spool_error);
    }
  } else {
    incarnation_ = NewIncarnation(0);
  }
  encoder_.enable_incarnation(incarnation_);
  try {
    context_ = std::make_unique<zmq::context_t>(1);
    socket_ = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::dealer);
    socket_->set(zmq::sockopt::sndhwm, options_.sndhwm);
    socket_->set(zmq::sockopt::linger, options_.linger_ms);
    std::string curve_error;
    if (options_.curve.enabled() && !ApplyCurveClientKeys(*socket_, options_.curve, &curve_error)) {
      return fail(curve_error);
    }
    socket_->connect(options_.endpoint);
  } catch (const zmq::error_t& e) {
    return fail("connect " + options_.endpoint + ": " + e.what());
  }
  SendHello();
  last_progress_ = Clock::now();
  for (const Message& m : unacked_) Send(m);
  const auto deadline = Clock::now() + std::chrono::milliseconds(options_.hello_timeout_ms);
  while (!hello_answered_ && Clock::now() < deadline) Poll(10);
  return true;
}

void AckedPublisher::SendHello() {
  msgpack::sbuffer hello;
  msgpack::packer<msgpack::sbuffer> pk(hello);
  pk.pack_map(3);
  pk.pack("v");
  pk.pack(1);
  pk.pack("pub");
  pk.pack(options_.publisher_id);
  pk.pack("inc");
  pk.pack(incarnation_);
  try {
    if (socket_->send(zmq::str_buffer("hello"),
                      zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      (void)socket_->send(zmq::buffer(hello.data(), hello.size()), zmq::send_flags::dontwait);
    }
  } catch (const zmq::error_t& e) {
    last_error_ = std::string("send: ") + e.what();
  }
}

void AckedPublisher::Send(const Message& m) {
  if (!m.spooled || socket_ == nullptr) return;
  try {
    // DEALER queues while disconnected; a full queue (sndhwm) drops the send here, and the resend
    // timer brings the message back.
    if (socket_->send(zmq::buffer(options_.topic),
                      zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      (void)socket_->send(zmq::buffer(m.payload), zmq::send_flags::dontwait);
      ++messages_sent_;
    }
  } catch (const zmq::error_t& e) {
    last_error_ = std::string("send: ") + e.what();
  }
}

Spool::State AckedPublisher::SpoolState() const {
  Spool::State state;
  state.present = true;
  state.incarnation = incarnation_;
  state.next_seq = encoder_.next_seq();
  state.any_acked = any_acked_;
  state.acked_seq = acked_seq_;
  for (const Message& m : unacked_) {
    if (m.spooled) state.unacked[m.seq] = Spool::Message{m.events, m.payload};
  }
  return state;
}

void AckedPublisher::MaybeCompactSpool() {
  if (!spool_.is_open()) return;
  uint64_t live = 0;
  for (const Message& m : unacked_) live += m.payload.size() + 33;
  if (spool_.bytes() <= 2 * live + kSpoolSlackBytes) return;
  std::string error;
  if (!spool_.Compact(SpoolState(), &error)) last_error_ = error;
}

bool AckedPublisher::SpoolPending() {
  auto first = unacked_.end();
  while (first != unacked_.begin() && !std::prev(first)->spooled) --first;
  for (auto it = first; it != unacked_.end(); ++it) {
    std::string error;
    if (!spool_.AppendMessage(incarnation_, it->seq, it->events, it->payload, &error)) {
      last_error_ = error;
      return false;
    }
    it->spooled = true;
    Send(*it);
  }
  return true;
}

void AckedPublisher::Reject(Message& m, const std::string& reason) {
  if (m.rejected) return;
  m.rejected = true;
  ++rejected_messages_;
  rejected_events_ += m.events;
  last_error_ = "message " + std::to_string(m.seq) + " refused: " + reason;
  if (options_.on_rejected) options_.on_rejected(Rejection{incarnation_, m.seq, m.events, reason});
}

void AckedPublisher::Reincarnate(uint64_t above) {
  BatchEncoder probe(options_.publisher_id);  // where this id's payloads hold inc and seq
  probe.enable_incarnation(0);
  const std::string_view header = probe.Finish();
  const size_t inc_at = probe.inc_offset();
  const size_t seq_at = probe.seq_offset();
  incarnation_ = NewIncarnation(above);
  encoder_.set_incarnation(incarnation_);
  uint64_t seq = 0;
  for (Message& m : unacked_) {
    if (m.payload.size() < header.size() || m.payload.compare(0, inc_at, header, 0, inc_at) != 0) {
      continue;  // not laid out by this client (cannot happen): left as it is
    }
    m.seq = seq++;
    m.rejected = false;
    PutBigEndian64(m.payload, inc_at, incarnation_);
    PutBigEndian64(m.payload, seq_at, m.seq);
  }
  encoder_.set_next_seq(seq);
  if (spool_.is_open()) {
    std::string error;
    if (!spool_.Compact(SpoolState(), &error)) last_error_ = error;
  }
  SendHello();
  ResendAll();
}

void AckedPublisher::HandleAck(const zmq::message_t& payload) {
  const Control c = ParseControl(payload);
  if (!c.ok || c.pub != options_.publisher_id) return;
  hello_answered_ = true;
  // The engine knows a newer incarnation of this id than ours (our clock went back, or the engine
  // was down when we said hello): while nothing of ours is acknowledged, the engine applied none
  // of our messages (it refuses older incarnations), so renumbering them is safe.
  if (c.has_latest && c.latest > incarnation_ && !any_acked_ &&
      (unacked_.empty() || unacked_.front().seq == 0)) {
    Reincarnate(c.latest);
    return;
  }
  if (c.inc != incarnation_) return;  // about an incarnation we left
  if (c.has_ack && (!any_acked_ || c.ack > acked_seq_)) {
    acked_seq_ = c.ack;
    any_acked_ = true;
    last_progress_ = Clock::now();
    if (spool_.is_open()) {
      std::string error;
      if (!spool_.AppendAck(incarnation_, acked_seq_, &error)) last_error_ = error;
    }
  }
  while (any_acked_ && !unacked_.empty() && unacked_.front().seq <= acked_seq_) {
    unacked_.pop_front();
  }
  MaybeCompactSpool();
  // The engine expects an older message than some we sent (they were lost in a reconnect or
  // an engine restart): go back to it now rather than at the resend timeout.
  if (c.has_next && !unacked_.empty() && c.next >= unacked_.front().seq &&
      c.next <= unacked_.back().seq &&
      Clock::now() - last_go_back_ > std::chrono::milliseconds(kGoBackIntervalMs)) {
    last_go_back_ = Clock::now();
    for (const Message& m : unacked_) {
      if (m.seq < c.next) continue;
      Send(m);
      ++resends_;
    }
    last_progress_ = Clock::now();
  }
}

void AckedPublisher::HandleNack(const zmq::message_t& payload) {
  const Control c = ParseControl(payload);
  if (!c.ok || !c.has_seq || c.pub != options_.publisher_id || c.inc != incarnation_) return;
  auto it = std::lower_bound(unacked_.begin(), unacked_.end(), c.seq,
                             [](const Message& m, uint64_t seq) { return m.seq < seq; });
  if (it == unacked_.end() || it->seq != c.seq) return;  // already acknowledged or dropped
  if (c.consumed) {
    // The engine moved past it; keep it until an ack covers it (should the engine lose that
    // step in a crash, it must see the message again to move past it again).
    Reject(*it, c.reason);
    return;
  }
  // Refused without being consumed: our incarnation is over at the engine.
  if (c.has_latest && c.latest > incarnation_ && !any_acked_ && unacked_.front().seq == 0) {
    Reincarnate(c.latest);
    return;
  }
  Reject(*it, c.reason);
  if (spool_.is_open()) {
    std::string error;
    if (!spool_.AppendDrop(incarnation_, it->seq, &error)) last_error_ = error;
  }
  unacked_.erase(it);
  last_progress_ = Clock::now();
}

void AckedPublisher::ResendAll() {
  if (!hello_answered_) SendHello();  // the first one may have been lost with the connection
  for (const Message& m : unacked_) Send(m);
  resends_ += unacked_.size();
  last_progress_ = Clock::now();
}

void AckedPublisher::Poll(int timeout_ms) {
  if (socket_ == nullptr) return;
  try {
    zmq::pollitem_t item{socket_->handle(), 0, ZMQ_POLLIN, 0};
    int wait = timeout_ms;
    while (zmq::poll(&item, 1, std::chrono::milliseconds(wait)) > 0) {
      zmq::message_t kind;
      zmq::message_t payload;
      if (!socket_->recv(kind, zmq::recv_flags::dontwait)) break;
      if (kind.more() && socket_->recv(payload, zmq::recv_flags::dontwait)) {
        if (kind.to_string_view() == "ack") {
          HandleAck(payload);
        } else if (kind.to_string_view() == "nack") {
          HandleNack(payload);
        }
      }
      wait = 0;  // drain what is there, then return
    }
  } catch (const zmq::error_t& e) {
    last_error_ = std::string("receive: ") + e.what();
  }
  if (!unacked_.empty() &&
      Clock::now() - last_progress_ > std::chrono::milliseconds(options_.resend_timeout_ms)) {
    ResendAll();
  }
}

bool AckedPublisher::Flush() {
  if (socket_ == nullptr) {
    last_error_ = "not connected";
    return false;
  }
  if (encoder_.size() == 0) {
    Poll(0);
    return SpoolPending();
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(options_.block_timeout_ms);
  Poll(0);
  while (unacked_.size() >= options_.max_unacked) {
    if (options_.block_timeout_ms >= 0 && Clock::now() >= deadline) {
      last_error_ =
          "back-pressure: " + std::to_string(unacked_.size()) + " messages await acknowledgement";
      return false;
    }
    Poll(10);
  }
  if (unacked_.empty()) last_progress_ = Clock::now();
  Message& m = unacked_.emplace_back();
  m.seq = encoder_.next_seq();
  m.events = static_cast<uint32_t>(encoder_.size());
  m.spooled = !spool_.is_open();  // written to the spool before it is sent
  m.payload.assign(encoder_.Finish());
  if (m.spooled) {
    Send(m);
    return true;
  }
  return SpoolPending();
}

template <typename AddFn>
bool AckedPublisher::Add(AddFn add) {
  add();
  if (encoder_.bytes() > options_.max_message_bytes) {
    // Only an event that alone exceeds the limit gets here (the caller flushed before it).
    encoder_.DropLast();
    last_error_ = "event larger than max_message_bytes (" +
                  std::to_string(options_.max_message_bytes) + "): dropped";
    if (encoder_.size() == 0) encoder_.Reset();
    return false;
  }
  return encoder_.size() < options_.batch_size || Flush();
}

bool AckedPublisher::Request(const RequestOutcome& r) {
  // Never build a message over max_message_bytes: send what is pending first when this event
  // might not fit (the bound is generous, so the message ends a little early at worst).
  if (encoder_.size() > 0 &&
      encoder_.bytes() + kEventOverheadBytes + StringBytes(r) > options_.max_message_bytes &&
      !Flush()) {
    return false;  // back-pressure: this event was not added; call again
  }
  return Add([&] { encoder_.AddRequest(r); });
}

bool AckedPublisher::Gauge(std::string_view instance, std::string_view model, std::string_view name,
                           double value, int64_t time_ms) {
  if (encoder_.size() > 0 &&
      encoder_.bytes() + kEventOverheadBytes + instance.size() + model.size() + name.size() >
          options_.max_message_bytes &&
      !Flush()) {
    return false;
  }
  return Add([&] { encoder_.AddGauge(instance, model, name, value, time_ms); });
}

bool AckedPublisher::WaitAcked(int timeout_ms) {
  if (!Flush()) return false;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!unacked_.empty()) {
    if (Clock::now() >= deadline) {
      last_error_ = std::to_string(unacked_.size()) + " messages not acknowledged in time";
      return false;
    }
    Poll(10);
  }
  return true;
}

void AckedPublisher::Close() {
  if (socket_ != nullptr) {
    socket_->close();
    socket_.reset();
  }
  if (context_ != nullptr) {
    context_->close();
    context_.reset();
  }
  spool_.Close();
}

}  // namespace inferscope::client
