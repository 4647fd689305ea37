#pragma once

// Pull fetches from a JetStream consumer without natsSubscription_Fetch (header-only, needs
// libnats; used by the jetstream source, the results feed, benchmarks and tests). Not installed.
//
// Why: libnats 3.4.1's _fetch (behind natsSubscription_Fetch and natsSubscription_FetchRequest)
// allocates `batch` message pointers, first drains k messages already queued on the subscription
// (left by an earlier fetch that returned on its client-side timeout while the server was still
// delivering), then sends a request for batch - k, sets req->Batch = batch - k and loops
// `while (count != req->Batch)`. count starts at k, so when k >= batch / 2 it never equals
// batch - k: every further delivery is stored past the array (a heap overflow; the loop only ends
// at the timeout or on a status message). Read from the installed library's disassembly
// (docs/SOURCES.md, "Fetching"); fixed upstream later by a per-fetch reply subject and a fixed
// `batch` bound.
//
// PullFetcher sends the pull requests itself (to $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>,
// replies to an inbox of its own) and reads them with natsSubscription_NextMsg, so:
//   - a fetch never returns more than `batch` messages: NextMsg is called only while there is
//     room, whatever the server sends (extra deliveries stay queued for the next fetch);
//   - at most one request is open at a time: a new one is sent only when the previous one ended
//     (all its messages arrived, or its 404/408/409 status did), or its expiry plus a grace
//     period passed without an end (a lost status after a reconnect);
//   - a fetch that returns on its client-side timeout leaves the request open, and the next
//     fetch goes on collecting it, so late deliveries are never mistaken for a new request's.
// Like natsSubscription_Fetch: a no_wait request first (the server answers at once with what it
// has), then, if nothing was there, one waiting request that expires a little before the fetch's
// timeout. Not thread-safe: one fetching thread per PullFetcher.

#include <nats/nats.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace inferscope::client {

// Messages of one fetch; destroys them.
class PulledMsgs {
 public:
  PulledMsgs() = default;
  PulledMsgs(const PulledMsgs&) = delete;
  PulledMsgs& operator=(const PulledMsgs&) = delete;
  ~PulledMsgs() { Clear(); }
  int Count() const { return static_cast<int>(msgs_.size()); }
  natsMsg* operator[](int i) const { return msgs_[static_cast<size_t>(i)]; }
  void Clear() {
    for (natsMsg* m : msgs_) natsMsg_Destroy(m);
    msgs_.clear();
  }
  void Add(natsMsg* m) { msgs_.push_back(m); }

 private:
  std::vector<natsMsg*> msgs_;
};

class PullFetcher {
 public:
  PullFetcher() = default;
  PullFetcher(const PullFetcher&) = delete;
  PullFetcher& operator=(const PullFetcher&) = delete;
  ~PullFetcher() { Close(); }

  // Subscribes to a new inbox on `conn` for the consumer `consumer` of `stream` (which the caller
  // created, e.g. with js_PullSubscribe). `api_prefix` is the JetStream API prefix.
  natsStatus Open(natsConnection* conn, const std::string& stream, const std::string& consumer,
                  const char* api_prefix = "$JS.API") {
    Close();
    conn_ = conn;
    delivered_ = 0;
    subject_ = std::string(api_prefix) + ".CONSUMER.MSG.NEXT." + stream + "." + consumer;
    natsInbox* inbox = nullptr;
    natsStatus s = natsInbox_Create(&inbox);
    if (s != NATS_OK) return s;
    inbox_ = inbox;
    natsInbox_Destroy(inbox);
    s = natsConnection_SubscribeSync(&sub_, conn_, inbox_.c_str());
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub_, -1, -1);
    if (s != NATS_OK) Close();
    return s;
  }

  // The same for the consumer that `js_sub` (from js_PullSubscribe, ephemeral or durable) is
  // bound to; its names come from natsSubscription_GetConsumerInfo (one API request).
  natsStatus Open(natsConnection* conn, natsSubscription* js_sub) {
    jsConsumerInfo* ci = nullptr;
    natsStatus s = natsSubscription_GetConsumerInfo(&ci, js_sub, nullptr, nullptr);
    if (s != NATS_OK) return s;
    const std::string stream = ci->Stream != nullptr ? ci->Stream : "";
    const std::string name = ci->Name != nullptr ? ci->Name : "";
    jsConsumerInfo_Destroy(ci);
    if (stream.empty() || name.empty()) return NATS_ERR;
    return Open(conn, stream, name);
  }

  void Close() {
    if (sub_ != nullptr) {
      natsSubscription_Unsubscribe(sub_);
      natsSubscription_Destroy(sub_);
      sub_ = nullptr;
    }
    open_ = false;
  }

  // Up to `batch` messages into `*out` (cleared first), waiting up to `wait_ms` (>= 1) for the
  // first. NATS_OK with 1..batch messages; NATS_TIMEOUT with none; NATS_ERR when the server
  // ended the request with an error status (LastError() has its text, e.g. "409 Consumer
  // Deleted"), NATS_NO_RESPONDERS (503: no JetStream or no such consumer), or the error of
  // publishing the request. Messages received before an error are returned with NATS_OK.
  natsStatus Fetch(PulledMsgs* out, int batch, int64_t wait_ms) {
    out->Clear();
    if (sub_ == nullptr || batch < 1 || wait_ms < 1) return NATS_INVALID_ARG;
    const int64_t start = nats_Now();
    const int64_t deadline = start + wait_ms;
    if (open_ && start > open_until_) open_ = false;  // its end was lost: the server dropped it
    // A request left open by an earlier fetch is collected first; when it ends with nothing for
    // this fetch, one waiting request follows, as after a no_wait request that found nothing.
    bool waited = false;
    natsStatus s = NATS_OK;
    if (!open_) s = Send(batch, 0, start);
    while (s == NATS_OK && out->Count() < batch) {
      const int64_t left = deadline - nats_Now();
      if (left <= 0) break;
      if (!open_) {
        // The no_wait request ended with nothing: one waiting request, expiring 10 ms before our
        // timeout so that its 408 usually ends it before the fetch returns (as libnats does).
        if (out->Count() > 0 || waited) break;
        waited = true;
        s = Send(batch, left >= 20 ? left - 10 : left, nats_Now());
        continue;
      }
      natsMsg* msg = nullptr;
      const natsStatus n = natsSubscription_NextMsg(&msg, sub_, left);
      if (n == NATS_TIMEOUT) break;
      if (n != NATS_OK) {
        s = n;
        break;
      }
      const char* reply = natsMsg_GetReply(msg);
      const char* status = nullptr;
      const bool user = (reply != nullptr && std::strncmp(reply, "$JS.ACK.", 8) == 0) ||
                        natsMsg_GetDataLength(msg) > 0 ||
                        natsMsgHeader_Get(msg, "Status", &status) != NATS_OK;
      if (user) {
        out->Add(msg);
        if (open_ && --remaining_ <= 0) open_ = false;
        continue;
      }
      s = Ended(status, msg);
      natsMsg_Destroy(msg);
    }
    if (out->Count() > 0) return NATS_OK;
    if (s != NATS_OK) return s;
    return NATS_TIMEOUT;
  }

  // Deliveries lost on the way: a consumer numbers its deliveries 1, 2, ... (the consumer sequence
  // of a message's metadata; a redelivery keeps its first number or takes the next one), and a
  // fetcher serves one consumer. Returns the number of deliveries skipped before `delivery`, 0
  // when none (a server that died with deliveries in flight loses them while the consumer goes on
  // with the next ones; with AckAll, acknowledging a later message would acknowledge them too).
  // Call it for each message fetched, in order; a skipped one is not counted as received.
  uint64_t Lost(uint64_t delivery) {
    if (delivery > delivered_ + 1) return delivery - delivered_ - 1;
    delivered_ = std::max(delivered_, delivery);
    return 0;
  }
  // The highest delivery number received (0: none yet).
  uint64_t delivered() const { return delivered_; }

  const std::string& LastError() const { return last_error_; }
  // True while a request may still deliver (tests).
  bool RequestOpen() const { return open_; }

 private:
  static constexpr int64_t kGraceMs = 2000;

  natsStatus Send(int batch, int64_t expires_ms, int64_t now) {
    std::string body = "{\"batch\":" + std::to_string(batch);
    if (expires_ms > 0) {
      body += ",\"expires\":" + std::to_string(expires_ms * 1000000);
    } else {
      body += ",\"no_wait\":true";
    }
    body += "}";
    const natsStatus s = natsConnection_PublishRequest(conn_, subject_.c_str(), inbox_.c_str(),
                                                       body.data(), static_cast<int>(body.size()));
    if (s != NATS_OK) return s;
    open_ = true;
    remaining_ = batch;
    open_until_ = now + expires_ms + kGraceMs;
    return NATS_OK;
  }

  // A status message: 100 (heartbeat) changes nothing; 404/408 end the request; 409 and others
  // end it with an error, 503 with NATS_NO_RESPONDERS.
  natsStatus Ended(const char* status, natsMsg* msg) {
    if (std::strncmp(status, "100", 3) == 0) return NATS_OK;
    open_ = false;
    if (std::strncmp(status, "404", 3) == 0 || std::strncmp(status, "408", 3) == 0) return NATS_OK;
    const char* desc = nullptr;
    natsMsgHeader_Get(msg, "Description", &desc);
    last_error_ = std::string(status) + " " + (desc != nullptr ? desc : "");
    if (std::strncmp(status, "503", 3) == 0) return NATS_NO_RESPONDERS;
    return NATS_ERR;
  }

  natsConnection* conn_ = nullptr;
  natsSubscription* sub_ = nullptr;
  std::string subject_;
  std::string inbox_;
  std::string last_error_;
  uint64_t delivered_ = 0;  // the highest consumer sequence received (Lost)
  bool open_ = false;       // a request that may still deliver
  int remaining_ = 0;       // messages it may still deliver
  int64_t open_until_ = 0;  // nats_Now() after which it is taken as ended
};

}  // namespace inferscope::client
