// Metrics: a small Prometheus registry (counters, gauges, callback gauges,
// histograms) rendered in the text exposition format 0.0.4 for the gateway's
// /metrics endpoint. A family (name, help, label names) is registered once at
// start-up; its children, one per set of label values, are made on first use
// by With() and live as long as the registry. Callers cache the child:
//
//   static auto& calls = metrics::Registry::Default().AddCounter(
//       "recharge_rpc_calls_total", "RPCs answered.", {"method", "code"});
//   metrics::Counter& ok = calls.With({"RecordRecharge", "OK"});  // once
//   ok.Inc();                                                     // per call
//
// Cost: Counter::Inc is one relaxed atomic add; Counter::Add(double) and
// Gauge::Add a compare-and-swap loop (one CAS uncontended); Gauge::Set one
// store; Histogram::Observe a binary search over the bounds, one atomic add
// and one CAS loop. None of them locks or allocates. With() on an existing
// child takes the family's lock shared and hashes the label values (no
// allocation); the first With() for new values takes it exclusively and
// allocates the child. Render() locks each family shared in turn and
// allocates its output; it is meant for a scrape every few seconds.
//
// Cardinality cap: a family holds at most `max_children` label sets
// (kDefaultMaxChildren unless given at registration). Past it, With()
// returns one extra child whose label values are all "_overflow", and a
// warn-level line ("metrics_cardinality_cap") is logged once per family;
// a callback gauge's Set() past the cap is dropped instead. A label value
// that is not valid UTF-8 has each bad byte replaced with U+FFFD (a scrape
// with invalid UTF-8 would be rejected whole).
//
// Label values are shown verbatim to whoever scrapes /metrics and kept for
// the life of the process: they must come from small fixed sets (RPC
// methods, status codes, provider names). They must never carry a secret or
// a per-user or per-merchant id (card number, user id, seller id, request
// id); keeping them out is the caller's duty, and the cap only limits the
// damage.
//
// A family registered twice with the same type, label names and (for
// histograms) bounds is the same family; any other mismatch under one name,
// an invalid name or label name, unsorted bounds, or With() with the wrong
// number of values is a programming error: the process aborts with a message
// on stderr.
//
// Thread-safety: every member of Registry, of the families and of the
// children may be called concurrently from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"

namespace recharge::metrics {

inline constexpr size_t kDefaultMaxChildren = 1000;

template <typename T>
class Family;

// 0.5 ms to 10 s: the gateway's RPCs and provider calls.
std::vector<double> DefaultLatencyBuckets();

// Monotonic. Whole increments are counted exactly (uint64); fractional ones
// are summed in a double beside them.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Inc(uint64_t n = 1) { whole_.fetch_add(n, std::memory_order_relaxed); }
  // A negative or NaN `v` is ignored: a counter never goes down.
  void Add(double v) {
    if (v > 0) fraction_.fetch_add(v, std::memory_order_relaxed);
  }
  double Value() const;

 private:
  friend class Family<Counter>;
  std::atomic<uint64_t> whole_{0};
  std::atomic<double> fraction_{0};
};

class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Inc() { Add(1); }
  void Dec() { Add(-1); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into buckets by upper bound (inclusive) and sums them.
// Normally made by a HistogramFamily, which owns the bounds.
class Histogram {
 public:
  // REQUIRES: `bounds` strictly increasing, without +Inf (implied), and
  // outliving the histogram.
  explicit Histogram(std::span<const double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Seconds, for latencies. NaN is counted in the +Inf bucket only (and
  // makes the sum NaN).
  void Observe(double v);
  uint64_t Count() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }
  std::span<const double> bounds() const { return bounds_; }
  // Observations in bucket `i` alone (not cumulative); i == bounds().size()
  // is the +Inf bucket.
  uint64_t BucketCount(size_t i) const { return counts_[i].load(std::memory_order_relaxed); }

 private:
  const std::span<const double> bounds_;
  const std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

// Observes the steady-clock seconds from construction to destruction into
// `histogram`, which must outlive the timer.
class ScopedTimer {
 public:
  explicit ScopedTimer(Histogram& histogram)
      : histogram_(histogram), start_(std::chrono::steady_clock::now()) {}
  ~ScopedTimer() {
    histogram_.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  Histogram& histogram_;
  const std::chrono::steady_clock::time_point start_;
};

namespace internal {

enum class Kind { kCounter, kGauge, kCallbackGauge, kHistogram };

// Label values as a map key: a vector of strings stored, looked up by a span
// of views without allocating.
struct LabelValuesHash {
  using is_transparent = void;
  size_t operator()(std::span<const std::string_view> values) const;
  size_t operator()(const std::vector<std::string>& values) const;
};
struct LabelValuesEq {
  using is_transparent = void;
  bool operator()(std::span<const std::string_view> a, const std::vector<std::string>& b) const;
  bool operator()(const std::vector<std::string>& a, std::span<const std::string_view> b) const {
    return (*this)(b, a);
  }
  bool operator()(const std::vector<std::string>& a, const std::vector<std::string>& b) const {
    return a == b;
  }
};
template <typename V>
using LabelValuesMap =
    absl::flat_hash_map<std::vector<std::string>, V, LabelValuesHash, LabelValuesEq>;

// What every family has; the Registry keeps them by name.
class FamilyBase {
 public:
  FamilyBase(Kind kind, std::string name, std::string help, std::vector<std::string> label_names,
             std::vector<double> bounds, size_t max_children);
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  Kind kind() const { return kind_; }
  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  const std::vector<double>& bounds() const { return bounds_; }
  // Appends the HELP and TYPE lines and the samples.
  virtual void Render(std::string* out) const = 0;

 protected:
  // Aborts unless there is one value per label name.
  void CheckArity(std::span<const std::string_view> values) const;
  // True when `values` are those of the overflow child: all "_overflow"
  // (a caller naming it gets it rather than a duplicate of it).
  bool IsOverflowKey(std::span<const std::string_view> values) const;
  // The first time only: the warn line about the cap.
  void WarnCapOnce();
  void AppendHeader(std::string* out) const;

  const Kind kind_;
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  const size_t max_children_;

 private:
  std::atomic<bool> warned_{false};
};

}  // namespace internal

// The children of one counter, gauge or histogram family.
template <typename T>
class Family final : public internal::FamilyBase {
 public:
  // Made by Registry::Add*.
  using FamilyBase::FamilyBase;

  // The child for these label values, in label-name order, made on first use
  // (or the overflow child past the cap). The reference stays valid as long
  // as the registry. Aborts when the number of values is not the number of
  // label names.
  T& With(std::initializer_list<std::string_view> values) {
    return With(std::span<const std::string_view>(values.begin(), values.size()));
  }
  T& With(std::span<const std::string_view> values);

  void Render(std::string* out) const override;

 private:
  T& FindOrAdd(std::span<const std::string_view> values);

  mutable std::shared_mutex mu_;
  internal::LabelValuesMap<std::unique_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<T> overflow_ ABSL_GUARDED_BY(mu_);
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;
using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// Gauges read at scrape time (a queue's depth, connections open). Each
// callback is called by Render() with the family's lock held: it must be
// quick, must not throw, and must not call into the registry.
class CallbackGaugeFamily final : public internal::FamilyBase {
 public:
  // Made by Registry::AddCallbackGauge.
  using FamilyBase::FamilyBase;

  // From now on the child with these label values reads `read` at every
  // Render(), replacing any callback set for them before. Past the cap it is
  // dropped (and the cap warned about once). REQUIRES: what `read` refers to
  // outlives the registry, or Clear() is called first.
  void Set(std::initializer_list<std::string_view> values, std::function<double()> read) {
    Set(std::span<const std::string_view>(values.begin(), values.size()), std::move(read));
  }
  void Set(std::span<const std::string_view> values, std::function<double()> read);
  // Removes the child; once this returns its callback is not running and
  // will not be called again. No effect when there is none.
  void Clear(std::initializer_list<std::string_view> values) {
    Clear(std::span<const std::string_view>(values.begin(), values.size()));
  }
  void Clear(std::span<const std::string_view> values);

  void Render(std::string* out) const override;

 private:
  mutable std::mutex mu_;
  internal::LabelValuesMap<std::function<double()>> children_ ABSL_GUARDED_BY(mu_);
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The process's registry, which /metrics renders. Never destroyed.
  static Registry& Default();

  // Registers a family, or returns the one registered under `name` before
  // when its type and label names (and bounds) are the same; the help and
  // cap of the first registration stay. `name` matches
  // [a-zA-Z_:][a-zA-Z0-9_:]*; label names match [a-zA-Z_][a-zA-Z0-9_]*, are
  // distinct and do not start with "__". Anything else aborts.
  CounterFamily& AddCounter(std::string_view name, std::string_view help,
                            std::vector<std::string> label_names = {},
                            size_t max_children = kDefaultMaxChildren);
  GaugeFamily& AddGauge(std::string_view name, std::string_view help,
                        std::vector<std::string> label_names = {},
                        size_t max_children = kDefaultMaxChildren);
  CallbackGaugeFamily& AddCallbackGauge(std::string_view name, std::string_view help,
                                        std::vector<std::string> label_names = {},
                                        size_t max_children = kDefaultMaxChildren);
  // `bounds`: bucket upper bounds, strictly increasing (a trailing +Inf is
  // implied and may be left out); no label named "le".
  HistogramFamily& AddHistogram(std::string_view name, std::string_view help,
                                std::vector<std::string> label_names, std::vector<double> bounds,
                                size_t max_children = kDefaultMaxChildren);

  // Every family in the text exposition format 0.0.4
  // (Content-Type: text/plain; version=0.0.4): families sorted by name,
  // children by label values. A family without labels always has its one
  // sample (0 until set).
  std::string Render() const;

 private:
  template <typename F>
  F& Add(internal::Kind kind, std::string_view name, std::string_view help,
         std::vector<std::string> label_names, std::vector<double> bounds, size_t max_children);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<internal::FamilyBase>, std::less<>> families_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace recharge::metrics
