#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>

namespace inferscope {

// BoundedQueue is a blocking multi-producer multi-consumer FIFO with a fixed capacity. Stages pass
// whole batches through it, so one lock per batch is cheap next to the work per batch.
//
// Lifecycle: Close() wakes every waiter; pushes then fail, pops drain what is left and then fail.
// Wake() ends one wait of a pop without an item (a consumer sleeping until a deadline can so be
// told to look at something else).
// Concurrency: all methods are thread-safe.
template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  // Blocks while full. Returns false (and leaves `item` untouched) once the queue is closed.
  bool Push(T& item) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
    if (closed_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }

  // Never blocks. Returns false when full or closed (and leaves `item` untouched).
  bool TryPush(T& item) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || items_.size() >= capacity_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }

  // Waits up to `timeout` for an item. Returns nullopt on timeout or when closed and drained.
  template <typename Rep, typename Period>
  std::optional<T> PopFor(std::chrono::duration<Rep, Period> timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!not_empty_.wait_for(lock, timeout, [&] { return closed_ || woken_ || !items_.empty(); })) {
      return std::nullopt;
    }
    woken_ = false;
    return PopLocked();
  }

  // Blocks until an item arrives; nullopt once closed and drained.
  std::optional<T> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return closed_ || woken_ || !items_.empty(); });
    woken_ = false;
    return PopLocked();
  }

  std::optional<T> TryPop() {
    std::lock_guard<std::mutex> lock(mu_);
    return PopLocked();
  }

  // The next (or current) Pop/PopFor returns at once: with an item if there is one, else nullopt
  // (Pop too, though the queue is open). Wakes that repeat before a pop count as one.
  void Wake() {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
    not_empty_.notify_one();
  }

  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
  }
  size_t capacity() const { return capacity_; }
  bool closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }

 private:
  std::optional<T> PopLocked() {
    if (items_.empty()) return std::nullopt;
    std::optional<T> out(std::move(items_.front()));
    items_.pop_front();
    not_full_.notify_one();
    return out;
  }

  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<T> items_;
  bool closed_ = false;
  bool woken_ = false;  // Wake() called since the last pop
};

}  // namespace inferscope
