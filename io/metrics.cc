#include "io/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <utility>

#include "absl/hash/hash.h"
#include "io/log.h"
#include "io/strings.h"

namespace recharge::metrics {
namespace {

using internal::Kind;

constexpr std::string_view kOverflowValue = "_overflow";

[[noreturn]] void Fatal(const std::string& message) {
  std::fprintf(stderr, "FATAL: %s\n", message.c_str());
  std::abort();
}

std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kCounter:
      return "counter";
    case Kind::kGauge:
      return "gauge";
    case Kind::kCallbackGauge:
      return "callback gauge";
    case Kind::kHistogram:
      return "histogram";
  }
  return "?";
}

// ---- Names and label values -------------------------------------------------

bool ValidName(std::string_view name, bool colons) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (colons && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// The length of the well-formed UTF-8 sequence at text[i] (no overlongs,
// surrogates or code points past U+10FFFF); 0 when there is none.
size_t Utf8SequenceAt(std::string_view text, size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > text.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return len;
}

bool ValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t len = Utf8SequenceAt(text, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

// `text` with each byte that starts no well-formed sequence replaced by
// U+FFFD.
std::string ToValidUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 8);
  for (size_t i = 0; i < text.size();) {
    const size_t len = Utf8SequenceAt(text, i);
    if (len == 0) {
      out.append("\xEF\xBF\xBD");
      ++i;
    } else {
      out.append(text.substr(i, len));
      i += len;
    }
  }
  return out;
}

// Label values made valid UTF-8: the caller's own views when they are
// already (the usual case), fixed copies otherwise.
class ValidValues {
 public:
  explicit ValidValues(std::span<const std::string_view> values) : view_(values) {
    if (std::all_of(values.begin(), values.end(), ValidUtf8)) return;
    for (std::string_view v : values) fixed_.push_back(ToValidUtf8(v));
    views_.assign(fixed_.begin(), fixed_.end());
    view_ = views_;
  }
  ValidValues(const ValidValues&) = delete;
  ValidValues& operator=(const ValidValues&) = delete;

  std::span<const std::string_view> get() const { return view_; }

 private:
  std::vector<std::string> fixed_;
  std::vector<std::string_view> views_;
  std::span<const std::string_view> view_;
};

// ---- Text format --------------------------------------------------------------

// Backslash and newline escaped; double quotes too inside a label value.
void AppendEscaped(std::string* out, std::string_view text, bool label_value) {
  for (char c : text) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '"' && label_value) {
      out->append("\\\"");
    } else {
      out->push_back(c);
    }
  }
}

// As Go's strconv.FormatFloat(v, 'g', -1, 64), which Prometheus's Go client
// uses: the shortest digits that read back as `v`, in exponent form when the
// exponent is below -4 or 6 and over ("0.005", "1", "2.5", "1e+06"), and
// "+Inf", "-Inf", "NaN". An `le` label is a string to Prometheus, so its
// spelling must not vary between clients.
void AppendGoFloat(std::string* out, double v) {
  if (std::isnan(v)) {
    out->append("NaN");
    return;
  }
  if (std::isinf(v)) {
    out->append(v > 0 ? "+Inf" : "-Inf");
    return;
  }
  // Shortest round-trip digits in printf's %e form: "-1.25e-03", "1e+06".
  char buf[40];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<size_t>(end - buf));
  const size_t e = sci.find('e');
  int exponent = 0;
  std::from_chars(sci.data() + e + 2, sci.data() + sci.size(), exponent);
  if (sci[e + 1] == '-') exponent = -exponent;
  if (exponent < -4 || exponent >= 6) {
    out->append(sci);
    return;
  }
  std::string_view mantissa = sci.substr(0, e);
  if (!mantissa.empty() && mantissa.front() == '-') {
    out->push_back('-');
    mantissa.remove_prefix(1);
  }
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  if (exponent < 0) {  // 0.000ddd
    out->append("0.");
    out->append(static_cast<size_t>(-exponent - 1), '0');
    out->append(digits);
    return;
  }
  const size_t int_digits = static_cast<size_t>(exponent) + 1;
  if (digits.size() <= int_digits) {  // ddd000
    out->append(digits);
    out->append(int_digits - digits.size(), '0');
    return;
  }
  out->append(digits, 0, int_digits);  // ddd.ddd
  out->push_back('.');
  out->append(digits, int_digits);
}

void AppendUint(std::string* out, uint64_t v) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, end);
}

// A sample value: whole numbers (up to 2^53) as integers, the rest as Go
// formats them.
void AppendValue(std::string* out, double v) {
  if (std::isfinite(v) && v == std::trunc(v) && std::abs(v) < 9007199254740992.0) {
    char buf[24];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(v));
    out->append(buf, end);
    return;
  }
  AppendGoFloat(out, v);
}

// `name_suffix{l1="v1",...,le="x"} ` (no braces when there is no label).
void AppendSeries(std::string* out, std::string_view name, std::string_view suffix,
                  const std::vector<std::string>& label_names,
                  const std::vector<std::string>& values, std::string_view le = {}) {
  out->append(name);
  out->append(suffix);
  if (!label_names.empty() || !le.empty()) {
    out->push_back('{');
    for (size_t i = 0; i < label_names.size(); ++i) {
      if (i > 0) out->push_back(',');
      out->append(label_names[i]);
      out->append("=\"");
      AppendEscaped(out, values[i], /*label_value=*/true);
      out->push_back('"');
    }
    if (!le.empty()) {
      if (!label_names.empty()) out->push_back(',');
      out->append("le=\"");
      out->append(le);
      out->push_back('"');
    }
    out->push_back('}');
  }
  out->push_back(' ');
}

// The children to render, sorted by label values.
template <typename V>
using Rows = std::vector<std::pair<const std::vector<std::string>*, const V*>>;

template <typename V>
void SortRows(Rows<V>* rows) {
  std::sort(rows->begin(), rows->end(),
            [](const auto& a, const auto& b) { return *a.first < *b.first; });
}

template <typename Range>
size_t HashValues(const Range& values) {
  size_t h = values.size();
  for (const auto& v : values) h = absl::HashOf(h, absl::string_view(v.data(), v.size()));
  return h;
}

}  // namespace

std::vector<double> DefaultLatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

// ---- Children -----------------------------------------------------------------

double Counter::Value() const {
  return static_cast<double>(whole_.load(std::memory_order_relaxed)) +
         fraction_.load(std::memory_order_relaxed);
}

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds), counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds.size() + 1)) {}

void Histogram::Observe(double v) {
  const size_t bucket =
      std::isnan(v) ? bounds_.size()
                    : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                          bounds_.begin());
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

uint64_t Histogram::Count() const {
  uint64_t count = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) count += BucketCount(i);
  return count;
}

// ---- Families -----------------------------------------------------------------

namespace internal {

size_t LabelValuesHash::operator()(std::span<const std::string_view> values) const {
  return HashValues(values);
}
size_t LabelValuesHash::operator()(const std::vector<std::string>& values) const {
  return HashValues(values);
}

bool LabelValuesEq::operator()(std::span<const std::string_view> a,
                               const std::vector<std::string>& b) const {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](std::string_view x, const std::string& y) { return x == y; });
}

FamilyBase::FamilyBase(Kind kind, std::string name, std::string help,
                       std::vector<std::string> label_names, std::vector<double> bounds,
                       size_t max_children)
    : kind_(kind),
      name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)),
      max_children_(max_children) {}

void FamilyBase::CheckArity(std::span<const std::string_view> values) const {
  if (values.size() != label_names_.size()) {
    Fatal(StrCat("metric \"", name_, "\" takes ", label_names_.size(), " label values, got ",
                 values.size()));
  }
}

bool FamilyBase::IsOverflowKey(std::span<const std::string_view> values) const {
  return !values.empty() && std::all_of(values.begin(), values.end(),
                                        [](std::string_view v) { return v == kOverflowValue; });
}

void FamilyBase::WarnCapOnce() {
  if (warned_.exchange(true)) return;
  LogWarn("metrics_cardinality_cap",
          {{"metric", name_},
           {"max_children", std::to_string(max_children_)},
           {"overflow_label_value", std::string(kOverflowValue)}});
}

void FamilyBase::AppendHeader(std::string* out) const {
  if (!help_.empty()) {
    StrAppend(out, "# HELP ", name_, ' ');
    AppendEscaped(out, help_, /*label_value=*/false);
    out->push_back('\n');
  }
  const std::string_view type = kind_ == Kind::kCounter     ? "counter"
                                : kind_ == Kind::kHistogram ? "histogram"
                                                            : "gauge";
  StrAppend(out, "# TYPE ", name_, ' ', type, '\n');
}

}  // namespace internal

template <typename T>
T& Family<T>::With(std::span<const std::string_view> values) {
  CheckArity(values);
  {
    std::shared_lock lock(mu_);
    auto it = children_.find(values);
    if (it != children_.end()) return *it->second;
  }
  return FindOrAdd(values);
}

template <typename T>
T& Family<T>::FindOrAdd(std::span<const std::string_view> raw_values) {
  const ValidValues valid(raw_values);
  const std::span<const std::string_view> values = valid.get();
  T* child = nullptr;
  bool capped = false;
  {
    std::unique_lock lock(mu_);
    auto it = children_.find(values);
    if (it != children_.end()) return *it->second;
    const bool overflow_key = IsOverflowKey(values);
    if (overflow_key || children_.size() >= max_children_) {
      if (overflow_ == nullptr) {
        if constexpr (std::is_same_v<T, Histogram>) {
          overflow_ = std::make_unique<Histogram>(bounds_);
        } else {
          overflow_ = std::make_unique<T>();
        }
      }
      child = overflow_.get();
      capped = !overflow_key;
    } else {
      std::unique_ptr<T> made;
      if constexpr (std::is_same_v<T, Histogram>) {
        made = std::make_unique<Histogram>(bounds_);
      } else {
        made = std::make_unique<T>();
      }
      child = made.get();
      children_.emplace(std::vector<std::string>(values.begin(), values.end()), std::move(made));
    }
  }
  if (capped) WarnCapOnce();
  return *child;
}

template <typename T>
void Family<T>::Render(std::string* out) const {
  AppendHeader(out);
  std::shared_lock lock(mu_);
  Rows<T> rows;
  rows.reserve(children_.size() + 1);
  for (const auto& [values, child] : children_) rows.emplace_back(&values, child.get());
  std::vector<std::string> overflow_values;
  if (overflow_ != nullptr) {
    overflow_values.assign(label_names_.size(), std::string(kOverflowValue));
    rows.emplace_back(&overflow_values, overflow_.get());
  }
  SortRows(&rows);
  for (const auto& [values, child] : rows) {
    if constexpr (std::is_same_v<T, Counter>) {
      AppendSeries(out, name_, "", label_names_, *values);
      const double fraction = child->fraction_.load(std::memory_order_relaxed);
      const uint64_t whole = child->whole_.load(std::memory_order_relaxed);
      if (fraction == 0) {
        AppendUint(out, whole);  // exact past 2^53 too
      } else {
        AppendValue(out, static_cast<double>(whole) + fraction);
      }
      out->push_back('\n');
    } else if constexpr (std::is_same_v<T, Gauge>) {
      AppendSeries(out, name_, "", label_names_, *values);
      AppendValue(out, child->Value());
      out->push_back('\n');
    } else {
      static_assert(std::is_same_v<T, Histogram>);
      uint64_t cumulative = 0;
      std::string le;
      for (size_t i = 0; i <= bounds_.size(); ++i) {
        cumulative += child->BucketCount(i);
        le.clear();
        if (i < bounds_.size()) {
          AppendGoFloat(&le, bounds_[i]);
        } else {
          le = "+Inf";
        }
        AppendSeries(out, name_, "_bucket", label_names_, *values, le);
        AppendUint(out, cumulative);
        out->push_back('\n');
      }
      AppendSeries(out, name_, "_sum", label_names_, *values);
      AppendValue(out, child->Sum());
      out->push_back('\n');
      AppendSeries(out, name_, "_count", label_names_, *values);
      AppendUint(out, cumulative);  // the same observations as the +Inf bucket
      out->push_back('\n');
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

void CallbackGaugeFamily::Set(std::span<const std::string_view> raw_values,
                              std::function<double()> read) {
  CheckArity(raw_values);
  const ValidValues valid(raw_values);
  const std::span<const std::string_view> values = valid.get();
  bool capped = false;
  {
    std::lock_guard lock(mu_);
    auto it = children_.find(values);
    if (it != children_.end()) {
      it->second = std::move(read);
    } else if (children_.size() >= max_children_) {
      capped = true;
    } else {
      children_.emplace(std::vector<std::string>(values.begin(), values.end()), std::move(read));
    }
  }
  if (capped) WarnCapOnce();
}

void CallbackGaugeFamily::Clear(std::span<const std::string_view> raw_values) {
  CheckArity(raw_values);
  const ValidValues valid(raw_values);
  std::lock_guard lock(mu_);
  auto it = children_.find(valid.get());
  if (it != children_.end()) children_.erase(it);
}

void CallbackGaugeFamily::Render(std::string* out) const {
  AppendHeader(out);
  std::lock_guard lock(mu_);
  if (children_.empty() && label_names_.empty()) {
    StrAppend(out, name_, " 0\n");
    return;
  }
  Rows<std::function<double()>> rows;
  rows.reserve(children_.size());
  for (const auto& [values, read] : children_) rows.emplace_back(&values, &read);
  SortRows(&rows);
  for (const auto& [values, read] : rows) {
    AppendSeries(out, name_, "", label_names_, *values);
    AppendValue(out, (*read)());
    out->push_back('\n');
  }
}

// ---- Registry -----------------------------------------------------------------

Registry& Registry::Default() {
  static Registry* registry = new Registry();
  return *registry;
}

template <typename F>
F& Registry::Add(Kind kind, std::string_view name, std::string_view help,
                 std::vector<std::string> label_names, std::vector<double> bounds,
                 size_t max_children) {
  if (!ValidName(name, /*colons=*/true)) {
    Fatal(StrCat("invalid metric name \"", name, "\""));
  }
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& label = label_names[i];
    if (!ValidName(label, /*colons=*/false) || label.starts_with("__") ||
        (kind == Kind::kHistogram && label == "le")) {
      Fatal(StrCat("metric \"", name, "\": invalid label name \"", label, "\""));
    }
    if (std::find(label_names.begin(), label_names.begin() + i, label) !=
        label_names.begin() + i) {
      Fatal(StrCat("metric \"", name, "\": label \"", label, "\" named twice"));
    }
  }
  if (!bounds.empty() && bounds.back() == INFINITY) bounds.pop_back();
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (std::isnan(bounds[i]) || (i > 0 && !(bounds[i - 1] < bounds[i]))) {
      Fatal(StrCat("metric \"", name, "\": bucket bounds must increase strictly"));
    }
  }

  F* family = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = families_.find(name);
    if (it != families_.end()) {
      internal::FamilyBase& existing = *it->second;
      if (existing.kind() != kind || existing.label_names() != label_names ||
          existing.bounds() != bounds) {
        Fatal(StrCat("metric \"", name, "\" registered twice, as a ", KindName(existing.kind()),
                     " with labels {", StrJoin(existing.label_names(), ","), "} and as a ",
                     KindName(kind), " with labels {", StrJoin(label_names, ","),
                     "} (or other bucket bounds)"));
      }
      return static_cast<F&>(existing);
    }
    auto made = std::make_unique<F>(kind, std::string(name), std::string(help),
                                    std::move(label_names), std::move(bounds), max_children);
    family = made.get();
    families_.emplace(std::string(name), std::move(made));
  }
  // A family without labels has its one child from the start, so that it
  // renders (as 0) before its first use.
  if constexpr (!std::is_same_v<F, CallbackGaugeFamily>) {
    if (family->label_names().empty()) family->With({});
  }
  return *family;
}

CounterFamily& Registry::AddCounter(std::string_view name, std::string_view help,
                                    std::vector<std::string> label_names, size_t max_children) {
  return Add<CounterFamily>(Kind::kCounter, name, help, std::move(label_names), {}, max_children);
}

GaugeFamily& Registry::AddGauge(std::string_view name, std::string_view help,
                                std::vector<std::string> label_names, size_t max_children) {
  return Add<GaugeFamily>(Kind::kGauge, name, help, std::move(label_names), {}, max_children);
}

CallbackGaugeFamily& Registry::AddCallbackGauge(std::string_view name, std::string_view help,
                                                std::vector<std::string> label_names,
                                                size_t max_children) {
  return Add<CallbackGaugeFamily>(Kind::kCallbackGauge, name, help, std::move(label_names), {},
                                  max_children);
}

HistogramFamily& Registry::AddHistogram(std::string_view name, std::string_view help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> bounds, size_t max_children) {
  return Add<HistogramFamily>(Kind::kHistogram, name, help, std::move(label_names),
                              std::move(bounds), max_children);
}

std::string Registry::Render() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, family] : families_) family->Render(&out);
  return out;
}

}  // namespace recharge::metrics
