#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "pipeline/status.h"

// The NATS C client's handles (nats/nats.h), kept out of this header.
typedef struct __jsCtx jsCtx;
typedef struct __kvStore kvStore;

namespace inferscope {

// One lease as the bucket stores it under key "slot.<name>": its owner (empty: released, free to
// claim at once) and the ttl its owner renews within. `revision` is the KV revision it was read
// at (0: absent).
struct Lease {
  std::string owner;
  int64_t ttl_ms = 0;
  uint64_t revision = 0;
};

// LeaseTable is the JetStream key-value bucket of slot leases (cli/node.h). Every change is a
// compare-and-set on the key's revision (kvStore_Create for an absent key, kvStore_Update with the
// revision read otherwise), so of several nodes claiming or renewing from the same revision
// exactly one succeeds.
//
// Concurrency: one thread (the node's lease thread), or several tables on their own connections.
class LeaseTable {
 public:
  // Opens the bucket, creating it (History 1, file storage, `replicas`) when absent.
  static Result<std::unique_ptr<LeaseTable>> Open(jsCtx* js, const std::string& bucket,
                                                  int replicas);
  ~LeaseTable();
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  // The lease of `slot`; revision 0 when there is none. Unavailable when the server does not
  // answer. Read from the bucket's stream leader (the last message of the key's subject), not by
  // the KV "direct get": a replica's direct get timed out for a client that bound an existing R3
  // bucket (nats-server 2.9, libnats 3.4).
  Result<Lease> Get(std::string_view slot);
  // Writes `owner`/`ttl_ms` if the key is still at `revision` (0: absent). The new revision, or
  // FailedPrecondition when another write came first (the CAS lost), or Unavailable.
  Result<uint64_t> Write(std::string_view slot, std::string_view owner, int64_t ttl_ms,
                         uint64_t revision);

  static std::string Key(std::string_view slot) { return "slot." + std::string(slot); }

 private:
  LeaseTable(jsCtx* js, kvStore* kv, std::string bucket)
      : js_(js), kv_(kv), bucket_(std::move(bucket)) {}
  jsCtx* js_;
  kvStore* kv_;
  std::string bucket_;
};

// LeaseClock decides, without comparing clocks across machines, when another node's lease has
// expired: a lease whose revision a watcher has seen unchanged for its whole ttl (measured on the
// watcher's own monotonic clock from when it first saw that revision) was not renewed in time. The
// holder counts its ttl from before it sent its last successful renewal, the watcher from after it
// read the result, so the holder's deadline passes first as long as the two monotonic clocks run
// at the same rate (drift over one ttl is microseconds; no wall-clock comparison is involved). An
// absent key counts the same (seen absent for a whole ttl, it is free), unless `absent_is_free`.
class LeaseClock {
 public:
  // Records what was read for `slot` at `now_ms` (monotonic); true when the lease is expired (or
  // released, or absent) and may be claimed from `lease.revision`. `ttl_ms` is the watcher's
  // default for an absent key or a lease without one.
  bool Expired(std::string_view slot, const Lease& lease, int64_t now_ms, int64_t ttl_ms,
               bool absent_is_free);

 private:
  struct Seen {
    uint64_t revision = 0;
    int64_t since_ms = 0;
  };
  std::map<std::string, Seen, std::less<>> seen_;
};

}  // namespace inferscope
