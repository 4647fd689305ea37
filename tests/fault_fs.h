#pragma once

// A RocksDB FileSystem that fails writes on demand, for tests of storage failures: hand it to
// StateStoreOptions::file_system (or Engine::Overrides::state_file_system).

#include <rocksdb/file_system.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace inferscope::testing {

// FaultFileSystem forwards everything to the local file system, except that appends to and syncs
// of RocksDB's write-ahead log files (`*.log`; not the info log `LOG`) fail with "no space left on
// device" while a failure is armed: the failures a full disk causes, from which RocksDB recovers
// by itself once writes succeed again.
//
// Concurrency: the Fail* calls may come from any thread while RocksDB writes.
class FaultFileSystem final : public rocksdb::FileSystemWrapper {
 public:
  FaultFileSystem() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}

  // The next `n` WAL appends fail (-1: every one until Heal).
  void FailWalAppends(int n) { appends_to_fail_.store(n); }
  // The next `n` WAL syncs fail (-1: every one until Heal). Only synced writes sync the WAL.
  void FailWalSyncs(int n) { syncs_to_fail_.store(n); }
  // Every WAL append whose data contains `needle` (and not `unless`, when given) fails until Heal:
  // one writer's records (say, an alert's rule name) fail while other writes succeed, until the
  // first failure stops RocksDB's writes (StateStore::Resume restarts them).
  void FailWalAppendsContaining(std::string needle, std::string unless = {}) {
    std::lock_guard<std::mutex> lock(needle_mu_);
    needle_ = std::move(needle);
    unless_ = std::move(unless);
  }
  void Heal() {
    appends_to_fail_.store(0);
    syncs_to_fail_.store(0);
    std::lock_guard<std::mutex> lock(needle_mu_);
    needle_.clear();
    unless_.clear();
  }
  // Failures injected so far.
  int injected() const { return injected_.load(); }

  const char* Name() const override { return "FaultFileSystem"; }

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    return Wrap(fname, target()->NewWritableFile(fname, options, result, dbg), result);
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname,
                                       const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    return Wrap(fname, target()->ReopenWritableFile(fname, options, result, dbg), result);
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override {
    return Wrap(fname, target()->ReuseWritableFile(fname, old_fname, options, result, dbg), result);
  }

 private:
  class WalFile final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    WalFile(FaultFileSystem* fs, std::unique_ptr<rocksdb::FSWritableFile> file)
        : FSWritableFileOwnerWrapper(std::move(file)), fs_(fs) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
      if (fs_->Take(fs_->appends_to_fail_) || fs_->Matches(data)) return Injected();
      return FSWritableFileOwnerWrapper::Append(data, options, dbg);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& info,
                             rocksdb::IODebugContext* dbg) override {
      if (fs_->Take(fs_->appends_to_fail_) || fs_->Matches(data)) return Injected();
      return FSWritableFileOwnerWrapper::Append(data, options, info, dbg);
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
      if (fs_->Take(fs_->syncs_to_fail_)) return Injected();
      return FSWritableFileOwnerWrapper::Sync(options, dbg);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                            rocksdb::IODebugContext* dbg) override {
      if (fs_->Take(fs_->syncs_to_fail_)) return Injected();
      return FSWritableFileOwnerWrapper::Fsync(options, dbg);
    }

   private:
    static rocksdb::IOStatus Injected() {
      return rocksdb::IOStatus::NoSpace("injected by FaultFileSystem");
    }
    FaultFileSystem* fs_;
  };

  rocksdb::IOStatus Wrap(const std::string& fname, rocksdb::IOStatus s,
                         std::unique_ptr<rocksdb::FSWritableFile>* result) {
    const bool wal = fname.size() > 4 && fname.compare(fname.size() - 4, 4, ".log") == 0;
    if (s.ok() && wal) *result = std::make_unique<WalFile>(this, std::move(*result));
    return s;
  }
  // Consumes one armed failure of `counter`: true when this operation must fail.
  bool Take(std::atomic<int>& counter) {
    int n = counter.load();
    while (n != 0) {
      if (n < 0 || counter.compare_exchange_weak(n, n - 1)) {
        injected_.fetch_add(1);
        return true;
      }
    }
    return false;
  }

  // Whether an append of `data` must fail (FailWalAppendsContaining).
  bool Matches(const rocksdb::Slice& data) {
    std::lock_guard<std::mutex> lock(needle_mu_);
    if (needle_.empty() || data.ToStringView().find(needle_) == std::string_view::npos ||
        (!unless_.empty() && data.ToStringView().find(unless_) != std::string_view::npos)) {
      return false;
    }
    injected_.fetch_add(1);
    return true;
  }

  std::mutex needle_mu_;
  std::string needle_;  // guarded by needle_mu_
  std::string unless_;  // guarded by needle_mu_
  std::atomic<int> appends_to_fail_{0};
  std::atomic<int> syncs_to_fail_{0};
  std::atomic<int> injected_{0};
};

}  // namespace inferscope::testing
