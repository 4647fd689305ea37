// Reproducer of the libnats 3.4.1 natsSubscription_Fetch heap overflow (docs/SOURCES.md,
// "Fetching"), and the same fetch pattern through PullFetcher (clients/cpp/nats_pull.h), for
// valgrind. Not built by CMake; build and run by hand:
//
//   g++ -std=c++20 -O1 -g -I. scripts/nats_fetch_repro.cc -o /tmp/nats_fetch_repro -lnats
//   nats-server -js -p 14333 -sd /tmp/repro-js &
//   valgrind --error-exitcode=9 /tmp/nats_fetch_repro nats://127.0.0.1:14333 lib 4000 20
//   valgrind --error-exitcode=9 /tmp/nats_fetch_repro nats://127.0.0.1:14333 fetcher 4000 20
//
// Fills a 4-subject stream (13,600-byte messages, as the engine benchmark's), then fetches 256
// per subject in turn with a short timeout, acking the last message of each fetch. Each run uses
// a fresh stream. Prints the fetch counts and the largest batch returned; exit 3 when a fetch
// returned more than 256 (libnats: after having written past its array) or a sequence was
// skipped or repeated.

#include <nats/nats.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "clients/cpp/nats_pull.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s URL lib|fetcher MESSAGES TIMEOUT_MS\n", argv[0]);
    return 2;
  }
  const char* url = argv[1];
  const bool lib = std::strcmp(argv[2], "lib") == 0;
  const int msgs = std::atoi(argv[3]);
  const int timeout = std::atoi(argv[4]);
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  if (natsConnection_ConnectTo(&nc, url) != NATS_OK) return 2;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 1024;
  if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) return 2;
  js_DeleteStream(js, "REPRO", nullptr, nullptr);
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = "REPRO";
  const char* subj[] = {"repro.*"};
  cfg.Subjects = subj;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  jsStreamInfo* si = nullptr;
  if (js_AddStream(&si, js, &cfg, nullptr, &jerr) != NATS_OK) return 2;
  jsStreamInfo_Destroy(si);
  const std::string payload(13'600, 'x');
  for (int i = 0; i < msgs; ++i) {
    const std::string s = "repro." + std::to_string(i % 4);
    if (js_PublishAsync(js, s.c_str(), payload.data(), static_cast<int>(payload.size()), nullptr) !=
        NATS_OK) {
      return 2;
    }
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 60'000;
  if (js_PublishAsyncComplete(js, &po) != NATS_OK) return 2;
  natsSubscription* subs[4];
  inferscope::client::PullFetcher fetchers[4];
  for (int p = 0; p < 4; ++p) {
    const std::string s = "repro." + std::to_string(p);
    const std::string d = "d" + std::to_string(p);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = "REPRO";
    so.Config.AckPolicy = js_AckAll;
    so.Config.MaxAckPending = 65536;
    if (js_PullSubscribe(&subs[p], js, s.c_str(), d.c_str(), nullptr, &so, &jerr) != NATS_OK) {
      return 2;
    }
    if (!lib && fetchers[p].Open(nc, "REPRO", d) != NATS_OK) return 2;
  }
  long got = 0, timeouts = 0, partial = 0, fetches = 0, largest = 0;
  long last[4] = {0, 0, 0, 0};
  bool bad = false;
  while (got < msgs && timeouts < 1000) {
    for (int p = 0; p < 4; ++p) {
      ++fetches;
      natsMsgList list = {nullptr, 0};
      inferscope::client::PulledMsgs pulled;
      const natsStatus s = lib ? natsSubscription_Fetch(&list, subs[p], 256, timeout, nullptr)
                               : fetchers[p].Fetch(&pulled, 256, timeout);
      if (s == NATS_TIMEOUT) {
        ++timeouts;
        continue;
      }
      if (s != NATS_OK) {
        std::fprintf(stderr, "fetch: %s\n", natsStatus_GetText(s));
        continue;
      }
      const int n = lib ? list.Count : pulled.Count();
      if (n > largest) largest = n;
      if (n < 256) ++partial;
      for (int i = 0; i < n; ++i) {
        natsMsg* m = lib ? list.Msgs[i] : pulled[i];
        jsMsgMetaData* meta = nullptr;
        if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
          // Stream sequences of one subject are 4 apart (published round-robin).
          const long seq = static_cast<long>(meta->Sequence.Stream);
          if (last[p] != 0 && seq != last[p] + 4) bad = true;
          last[p] = seq;
          jsMsgMetaData_Destroy(meta);
        }
      }
      got += n;
      if (n > 0) {
        natsMsg* m = lib ? list.Msgs[n - 1] : pulled[n - 1];
        natsConnection_PublishString(nc, natsMsg_GetReply(m), "+ACK");
      }
      if (lib) natsMsgList_Destroy(&list);
    }
  }
  std::printf("%s: got %ld of %d in %ld fetches, %ld timeouts, %ld partial, largest batch %ld%s\n",
              lib ? "natsSubscription_Fetch" : "PullFetcher", got, msgs, fetches, timeouts, partial,
              largest, bad ? ", sequence gap or repeat" : "");
  for (int p = 0; p < 4; ++p) {
    fetchers[p].Close();
    natsSubscription_Destroy(subs[p]);
  }
  js_DeleteStream(js, "REPRO", nullptr, nullptr);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  nats_Close();
  return largest > 256 || bad || got != msgs ? 3 : 0;
}
