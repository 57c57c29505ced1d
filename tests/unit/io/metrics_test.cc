#include "io/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace recharge::metrics {
namespace {

TEST(Metrics, RendersCounterGaugeAndHistogramExactly) {
  Registry registry;
  auto& calls = registry.AddCounter("rpc_calls_total", "RPCs answered.", {"method", "code"});
  calls.With({"RecordRecharge", "OK"}).Inc(3);
  calls.With({"GetBalance", "OK"}).Inc();
  registry.AddGauge("queue_depth", "Requests waiting.").With({}).Set(2.5);
  auto& latency =
      registry.AddHistogram("rpc_seconds", "RPC latency.", {"method"}, {0.25, 1, 2.5});
  Histogram& h = latency.With({"RecordRecharge"});
  for (double v : {0.125, 0.25, 0.5, 4.0}) h.Observe(v);

  EXPECT_EQ(registry.Render(),
            "# HELP queue_depth Requests waiting.\n"
            "# TYPE queue_depth gauge\n"
            "queue_depth 2.5\n"
            "# HELP rpc_calls_total RPCs answered.\n"
            "# TYPE rpc_calls_total counter\n"
            "rpc_calls_total{method=\"GetBalance\",code=\"OK\"} 1\n"
            "rpc_calls_total{method=\"RecordRecharge\",code=\"OK\"} 3\n"
            "# HELP rpc_seconds RPC latency.\n"
            "# TYPE rpc_seconds histogram\n"
            "rpc_seconds_bucket{method=\"RecordRecharge\",le=\"0.25\"} 2\n"
            "rpc_seconds_bucket{method=\"RecordRecharge\",le=\"1\"} 3\n"
            "rpc_seconds_bucket{method=\"RecordRecharge\",le=\"2.5\"} 3\n"
            "rpc_seconds_bucket{method=\"RecordRecharge\",le=\"+Inf\"} 4\n"
            "rpc_seconds_sum{method=\"RecordRecharge\"} 4.875\n"
            "rpc_seconds_count{method=\"RecordRecharge\"} 4\n");
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInfAndBoundsInclusive) {
  Registry registry;
  auto& family = registry.AddHistogram("h", "", {}, {1, 2});
  Histogram& h = family.With({});
  h.Observe(1);  // on a bound: counted in it
  h.Observe(2.0000001);
  h.Observe(std::numeric_limits<double>::infinity());
  h.Observe(-5);
  EXPECT_EQ(h.Count(), 4u);
  EXPECT_EQ(registry.Render(),
            "# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 2\n"
            "h_bucket{le=\"2\"} 2\n"
            "h_bucket{le=\"+Inf\"} 4\n"
            "h_sum +Inf\n"
            "h_count 4\n");
}

TEST(Metrics, NanObservationCountsOnlyInInfBucket) {
  Registry registry;
  Histogram& h = registry.AddHistogram("h", "", {}, {1}).With({});
  h.Observe(std::nan(""));
  EXPECT_EQ(h.BucketCount(0), 0u);
  EXPECT_EQ(h.BucketCount(1), 1u);
  EXPECT_TRUE(std::isnan(h.Sum()));
}

TEST(Metrics, BucketBoundsAreSpelledAsPrometheusGoClientDoes) {
  Registry registry;
  registry.AddHistogram("h", "", {},
                        {1e-5, 0.0001, 0.005, 1, 2.5, 10, 123456, 1e6,
                         std::numeric_limits<double>::infinity()});
  EXPECT_EQ(registry.Render(),
            "# TYPE h histogram\n"
            "h_bucket{le=\"1e-05\"} 0\n"
            "h_bucket{le=\"0.0001\"} 0\n"
            "h_bucket{le=\"0.005\"} 0\n"
            "h_bucket{le=\"1\"} 0\n"
            "h_bucket{le=\"2.5\"} 0\n"
            "h_bucket{le=\"10\"} 0\n"
            "h_bucket{le=\"123456\"} 0\n"
            "h_bucket{le=\"1e+06\"} 0\n"
            "h_bucket{le=\"+Inf\"} 0\n"
            "h_sum 0\n"
            "h_count 0\n");
}

TEST(Metrics, DefaultLatencyBucketsRenderShortest) {
  Registry registry;
  registry.AddHistogram("h", "", {}, DefaultLatencyBuckets());
  const std::string text = registry.Render();
  std::string les;
  for (size_t at = text.find("le=\""); at != std::string::npos; at = text.find("le=\"", at + 1)) {
    les += text.substr(at + 4, text.find('"', at + 4) - at - 4) + " ";
  }
  EXPECT_EQ(les, "0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf ");
}

TEST(Metrics, SampleValuesSpellSpecialAndFractionalNumbers) {
  Registry registry;
  auto& g = registry.AddGauge("g", "", {"v"});
  g.With({"a_nan"}).Set(std::nan(""));
  g.With({"b_inf"}).Set(std::numeric_limits<double>::infinity());
  g.With({"c_minus_inf"}).Set(-std::numeric_limits<double>::infinity());
  g.With({"d_big"}).Set(1e20);
  g.With({"e_tenth"}).Set(0.1);
  g.With({"f_negative"}).Set(-3);
  g.With({"g_tiny"}).Set(1.5e-7);
  auto& c = registry.AddCounter("c", "").With({});
  c.Inc(2);
  c.Add(0.5);
  c.Add(-1);  // ignored: counters never go down
  c.Add(std::nan(""));
  EXPECT_EQ(c.Value(), 2.5);
  EXPECT_EQ(registry.Render(),
            "# TYPE c counter\n"
            "c 2.5\n"
            "# TYPE g gauge\n"
            "g{v=\"a_nan\"} NaN\n"
            "g{v=\"b_inf\"} +Inf\n"
            "g{v=\"c_minus_inf\"} -Inf\n"
            "g{v=\"d_big\"} 1e+20\n"
            "g{v=\"e_tenth\"} 0.1\n"
            "g{v=\"f_negative\"} -3\n"
            "g{v=\"g_tiny\"} 1.5e-07\n");
}

TEST(Metrics, WholeCounterStaysExactPastTwoToThe53) {
  Registry registry;
  Counter& c = registry.AddCounter("c", "").With({});
  c.Inc((uint64_t{1} << 53) + 1);
  EXPECT_EQ(registry.Render(), "# TYPE c counter\nc 9007199254740993\n");
}

TEST(Metrics, LabelValuesAreEscaped) {
  Registry registry;
  registry.AddCounter("c", "", {"v"}).With({"a\\b\"c\nd{}=,"}).Inc();
  EXPECT_EQ(registry.Render(),
            "# TYPE c counter\n"
            "c{v=\"a\\\\b\\\"c\\nd{}=,\"} 1\n");
}

TEST(Metrics, HelpIsEscaped) {
  Registry registry;
  registry.AddGauge("g", "Line one\nback\\slash \"quoted\"");
  EXPECT_EQ(registry.Render(),
            "# HELP g Line one\\nback\\\\slash \"quoted\"\n"
            "# TYPE g gauge\n"
            "g 0\n");
}

TEST(Metrics, InvalidUtf8InLabelValueIsReplaced) {
  Registry registry;
  auto& family = registry.AddCounter("c", "", {"v"});
  Counter& bad = family.With({"ok\xff\xc3"});
  bad.Inc();
  EXPECT_EQ(&family.With({"ok\xef\xbf\xbd\xef\xbf\xbd"}), &bad);  // the same child
  EXPECT_EQ(registry.Render(), "# TYPE c counter\nc{v=\"ok\xef\xbf\xbd\xef\xbf\xbd\"} 1\n");
}

TEST(Metrics, FamiliesAndChildrenRenderInSortedOrderWhateverTheInsertionOrder) {
  Registry a;
  auto& a_z = a.AddCounter("z_total", "", {"k", "l"});
  auto& a_m = a.AddGauge("m", "", {"k"});
  for (const char* k : {"b", "a", "c"}) a_m.With({k}).Set(1);
  for (const char* k : {"y", "x"}) {
    a_z.With({k, "2"}).Inc();
    a_z.With({k, "1"}).Inc();
  }
  Registry b;
  auto& b_m = b.AddGauge("m", "", {"k"});
  auto& b_z = b.AddCounter("z_total", "", {"k", "l"});
  for (const char* k : {"x", "y"}) {
    b_z.With({k, "1"}).Inc();
    b_z.With({k, "2"}).Inc();
  }
  for (const char* k : {"c", "a", "b"}) b_m.With({k}).Set(1);

  const std::string expected =
      "# TYPE m gauge\n"
      "m{k=\"a\"} 1\n"
      "m{k=\"b\"} 1\n"
      "m{k=\"c\"} 1\n"
      "# TYPE z_total counter\n"
      "z_total{k=\"x\",l=\"1\"} 1\n"
      "z_total{k=\"x\",l=\"2\"} 1\n"
      "z_total{k=\"y\",l=\"1\"} 1\n"
      "z_total{k=\"y\",l=\"2\"} 1\n";
  EXPECT_EQ(a.Render(), expected);
  EXPECT_EQ(b.Render(), expected);
  EXPECT_EQ(a.Render(), expected);
}

TEST(Metrics, UnusedFamiliesWithoutLabelsRenderZero) {
  Registry registry;
  registry.AddCounter("c_total", "C.");
  registry.AddGauge("g", "G.");
  registry.AddCallbackGauge("cb", "CB.");
  registry.AddHistogram("h", "H.", {}, {1});
  registry.AddCounter("labelled_total", "L.", {"k"});  // no child yet: no sample
  EXPECT_EQ(registry.Render(),
            "# HELP c_total C.\n# TYPE c_total counter\nc_total 0\n"
            "# HELP cb CB.\n# TYPE cb gauge\ncb 0\n"
            "# HELP g G.\n# TYPE g gauge\ng 0\n"
            "# HELP h H.\n# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"
            "# HELP labelled_total L.\n# TYPE labelled_total counter\n");
}

TEST(Metrics, PastTheCapValuesGoToOneOverflowChildAndAWarningIsLoggedOnce) {
  Registry registry;
  auto& family = registry.AddCounter("c_total", "", {"user", "code"}, /*max_children=*/2);
  family.With({"a", "1"}).Inc();
  family.With({"b", "1"}).Inc();
  testing::internal::CaptureStderr();
  Counter& over_c = family.With({"c", "1"});
  Counter& over_d = family.With({"d", "1"});
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(&over_c, &over_d);
  EXPECT_EQ(&family.With({"_overflow", "_overflow"}), &over_c);
  over_c.Inc(5);
  over_d.Inc();
  family.With({"a", "1"}).Inc();  // existing children are still served

  EXPECT_NE(log.find("\"level\":\"warn\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"event\":\"metrics_cardinality_cap\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"metric\":\"c_total\""), std::string::npos) << log;
  EXPECT_EQ(log.find("\"c\""), std::string::npos) << "label values are not logged: " << log;
  EXPECT_EQ(log.find('\n'), log.size() - 1) << "one line: " << log;
  EXPECT_EQ(registry.Render(),
            "# TYPE c_total counter\n"
            "c_total{user=\"_overflow\",code=\"_overflow\"} 6\n"
            "c_total{user=\"a\",code=\"1\"} 2\n"
            "c_total{user=\"b\",code=\"1\"} 1\n");
}

TEST(Metrics, HistogramOverflowChildHasTheFamilyBuckets) {
  Registry registry;
  auto& family = registry.AddHistogram("h", "", {"k"}, {1}, /*max_children=*/0);
  testing::internal::CaptureStderr();
  family.With({"x"}).Observe(0.5);
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(registry.Render(),
            "# TYPE h histogram\n"
            "h_bucket{k=\"_overflow\",le=\"1\"} 1\n"
            "h_bucket{k=\"_overflow\",le=\"+Inf\"} 1\n"
            "h_sum{k=\"_overflow\"} 0.5\n"
            "h_count{k=\"_overflow\"} 1\n");
}

TEST(Metrics, CallbackGaugeIsReadAtRender) {
  Registry registry;
  auto& depth = registry.AddCallbackGauge("queue_depth", "Waiting.", {"queue"});
  int waiting = 3;
  depth.Set({"recharges"}, [&waiting] { return static_cast<double>(waiting); });
  depth.Set({"webhooks"}, [] { return 0.5; });
  EXPECT_EQ(registry.Render(),
            "# HELP queue_depth Waiting.\n# TYPE queue_depth gauge\n"
            "queue_depth{queue=\"recharges\"} 3\n"
            "queue_depth{queue=\"webhooks\"} 0.5\n");
  waiting = 7;
  depth.Clear({"webhooks"});
  EXPECT_EQ(registry.Render(),
            "# HELP queue_depth Waiting.\n# TYPE queue_depth gauge\n"
            "queue_depth{queue=\"recharges\"} 7\n");
}

TEST(Metrics, CallbackGaugePastTheCapIsDropped) {
  Registry registry;
  auto& family = registry.AddCallbackGauge("g", "", {"k"}, /*max_children=*/1);
  family.Set({"a"}, [] { return 1.0; });
  testing::internal::CaptureStderr();
  family.Set({"b"}, [] { return 2.0; });
  EXPECT_NE(testing::internal::GetCapturedStderr().find("metrics_cardinality_cap"),
            std::string::npos);
  family.Set({"a"}, [] { return 3.0; });  // replacing one is not past the cap
  EXPECT_EQ(registry.Render(), "# TYPE g gauge\ng{k=\"a\"} 3\n");
}

TEST(Metrics, ConcurrentUpdatesFromFourThreadsSumExactly) {
  Registry registry;
  auto& calls = registry.AddCounter("calls_total", "", {"code"});
  Counter& cached = calls.With({"OK"});
  Gauge& in_flight = registry.AddGauge("in_flight", "").With({});
  Histogram& latency = registry.AddHistogram("latency", "", {}, {0.5}).With({});
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        cached.Inc();
        in_flight.Add(1);
        latency.Observe(i % 2 == 0 ? 0.25 : 1.0);
        // Lookups and first uses racing each other: 10 children.
        calls.With({std::to_string((t + i) % 10)}).Add(0.5);
      }
    });
  }
  // A scrape meanwhile: reads every child while they are updated and added.
  std::atomic<bool> done{false};
  size_t renders = 0;
  std::thread scraper([&] {
    while (!done.load()) renders += registry.Render().empty() ? 0 : 1;
  });
  for (auto& th : threads) th.join();
  done = true;
  scraper.join();
  EXPECT_GT(renders, 0u);

  EXPECT_EQ(cached.Value(), kThreads * kPerThread);
  EXPECT_EQ(in_flight.Value(), kThreads * kPerThread);
  EXPECT_EQ(latency.Count(), uint64_t{kThreads * kPerThread});
  EXPECT_EQ(latency.BucketCount(0), uint64_t{kThreads * kPerThread / 2});
  EXPECT_EQ(latency.Sum(), kThreads * kPerThread / 2 * 1.25);
  double spread = 0;
  for (int k = 0; k < 10; ++k) spread += calls.With({std::to_string(k)}).Value();
  EXPECT_EQ(spread, kThreads * kPerThread * 0.5);
}

TEST(Metrics, RegisteringTheSameFamilyTwiceReturnsIt) {
  Registry registry;
  auto& first = registry.AddCounter("c_total", "First help.", {"code"});
  auto& second = registry.AddCounter("c_total", "Other help.", {"code"});
  EXPECT_EQ(&first, &second);
  EXPECT_EQ(&first.With({"OK"}), &second.With({"OK"}));
  auto& h1 = registry.AddHistogram("h", "", {}, {1, 2});
  auto& h2 = registry.AddHistogram("h", "", {}, {1, 2, std::numeric_limits<double>::infinity()});
  EXPECT_EQ(&h1, &h2);
  EXPECT_NE(registry.Render().find("# HELP c_total First help.\n"), std::string::npos);
}

TEST(Metrics, DefaultRegistryIsOneForTheProcess) {
  EXPECT_EQ(&Registry::Default(), &Registry::Default());
  Counter& counter = Registry::Default().AddCounter("metrics_test_default_total", "").With({});
  const double before = counter.Value();  // not 0 when the test repeats
  Registry::Default().AddCounter("metrics_test_default_total", "").With({}).Inc();
  EXPECT_EQ(counter.Value(), before + 1);
  EXPECT_NE(Registry::Default().Render().find("\nmetrics_test_default_total "), std::string::npos);
}

TEST(Metrics, ScopedTimerObservesElapsedSeconds) {
  Registry registry;
  Histogram& h = registry.AddHistogram("t", "", {}, DefaultLatencyBuckets()).With({});
  {
    ScopedTimer timer(h);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  EXPECT_EQ(h.Count(), 1u);
  EXPECT_GE(h.Sum(), 0.003);
  EXPECT_LT(h.Sum(), 5.0);
}

using MetricsDeathTest = testing::Test;

TEST_F(MetricsDeathTest, ReRegisteringUnderAnotherTypeAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Registry registry;
  registry.AddCounter("x", "", {"code"});
  EXPECT_DEATH(registry.AddGauge("x", "", {"code"}), "\"x\" registered twice, as a counter");
  EXPECT_DEATH(registry.AddCallbackGauge("x", "", {"code"}), "registered twice");
  EXPECT_DEATH(registry.AddHistogram("x", "", {"code"}, {1}), "registered twice");
}

TEST_F(MetricsDeathTest, ReRegisteringWithOtherLabelsOrBoundsAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Registry registry;
  registry.AddCounter("x", "", {"code"});
  registry.AddHistogram("h", "", {}, {1, 2});
  EXPECT_DEATH(registry.AddCounter("x", "", {"code", "method"}), "registered twice");
  EXPECT_DEATH(registry.AddCounter("x", "", {"method"}), "registered twice");
  EXPECT_DEATH(registry.AddHistogram("h", "", {}, {1, 3}), "registered twice");
}

TEST_F(MetricsDeathTest, WrongNumberOfLabelValuesAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Registry registry;
  auto& family = registry.AddCounter("x", "", {"code"});
  EXPECT_DEATH(family.With({"OK", "extra"}), "\"x\" takes 1 label values, got 2");
  EXPECT_DEATH(family.With({}), "takes 1 label values, got 0");
}

TEST_F(MetricsDeathTest, InvalidNamesAndBoundsAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Registry registry;
  EXPECT_DEATH(registry.AddCounter("1x", ""), "invalid metric name");
  EXPECT_DEATH(registry.AddCounter("x-y", ""), "invalid metric name");
  EXPECT_DEATH(registry.AddCounter("x", "", {"__reserved"}), "invalid label name");
  EXPECT_DEATH(registry.AddCounter("x", "", {"a:b"}), "invalid label name");
  EXPECT_DEATH(registry.AddCounter("x", "", {"a", "a"}), "named twice");
  EXPECT_DEATH(registry.AddHistogram("x", "", {"le"}, {1}), "invalid label name");
  EXPECT_DEATH(registry.AddHistogram("x", "", {}, {2, 1}), "increase strictly");
  EXPECT_DEATH(registry.AddHistogram("x", "", {}, {1, std::nan("")}), "increase strictly");
}

// ---- Cross-check with an independent parser --------------------------------

// Parses the text with prometheus_client's parser and prints what it saw, one
// line a family and one a sample (label values and help as JSON strings).
constexpr char kParserScript[] = R"(import json, sys
from prometheus_client.parser import text_string_to_metric_families
with open(sys.argv[1], encoding="utf-8", errors="strict") as f:
    text = f.read()
for family in text_string_to_metric_families(text):
    print("family", family.name, family.type, json.dumps(family.documentation))
    for s in family.samples:
        labels = ",".join("%s=%s" % (k, json.dumps(v)) for k, v in sorted(s.labels.items()))
        print("  ", s.name, "{" + labels + "}", repr(s.value))
)";

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

TEST(Metrics, RenderedTextParsesWithPrometheusPythonClient) {
  const std::string python = RECHARGE_PYTHON;
  if (std::system((python + " -c 'import prometheus_client' 2>/dev/null").c_str()) != 0) {
    GTEST_SKIP() << "python3-prometheus-client is not installed";
  }
  Registry registry;
  auto& calls = registry.AddCounter("rpc_calls_total", "RPCs answered.\nBy \\method\\.",
                                    {"method", "code"}, /*max_children=*/2);
  calls.With({"RecordRecharge", "OK"}).Inc(3);
  calls.With({"Get\"Balance\"\n", "NOT_FOUND"}).Inc();
  testing::internal::CaptureStderr();
  calls.With({"third", "OK"}).Add(0.25);  // past the cap
  testing::internal::GetCapturedStderr();
  registry.AddCounter("errors", "No _total suffix.").With({}).Inc(2);
  auto& g = registry.AddGauge("temperature", "", {"where"});
  g.With({"inf"}).Set(std::numeric_limits<double>::infinity());
  g.With({"nan"}).Set(std::nan(""));
  g.With({"neg"}).Set(-1.5e-7);
  g.With({"utf8 \xff"}).Set(1);
  registry.AddCallbackGauge("queue_depth", "Waiting.", {"queue"})
      .Set({"recharges"}, [] { return 4.0; });
  Histogram& h =
      registry.AddHistogram("rpc_seconds", "Latency.", {"method"}, {0.005, 1}).With({"Record"});
  h.Observe(0.00390625);
  h.Observe(0.5);
  h.Observe(2);

  const auto dir = std::filesystem::temp_directory_path();
  const auto stem = "metrics_test_" + std::to_string(::getpid());
  const auto text_path = dir / (stem + ".txt");
  const auto script_path = dir / (stem + ".py");
  const auto out_path = dir / (stem + ".out");
  std::ofstream(text_path, std::ios::binary) << registry.Render();
  std::ofstream(script_path) << kParserScript;
  const int rc = std::system((python + " " + script_path.string() + " " + text_path.string() +
                              " > " + out_path.string() + " 2>&1")
                                 .c_str());
  const std::string seen = ReadFile(out_path);
  std::filesystem::remove(text_path);
  std::filesystem::remove(script_path);
  std::filesystem::remove(out_path);
  ASSERT_EQ(rc, 0) << seen;
  // prometheus_client names a counter family without "_total" and its samples
  // with it.
  EXPECT_EQ(seen,
            "family errors counter \"No _total suffix.\"\n"
            "   errors_total {} 2.0\n"
            "family queue_depth gauge \"Waiting.\"\n"
            "   queue_depth {queue=\"recharges\"} 4.0\n"
            "family rpc_calls counter \"RPCs answered.\\nBy \\\\method\\\\.\"\n"
            "   rpc_calls_total {code=\"NOT_FOUND\",method=\"Get\\\"Balance\\\"\\n\"} 1.0\n"
            "   rpc_calls_total {code=\"OK\",method=\"RecordRecharge\"} 3.0\n"
            "   rpc_calls_total {code=\"_overflow\",method=\"_overflow\"} 0.25\n"
            "family rpc_seconds histogram \"Latency.\"\n"
            "   rpc_seconds_bucket {le=\"0.005\",method=\"Record\"} 1.0\n"
            "   rpc_seconds_bucket {le=\"1\",method=\"Record\"} 2.0\n"
            "   rpc_seconds_bucket {le=\"+Inf\",method=\"Record\"} 3.0\n"
            "   rpc_seconds_sum {method=\"Record\"} 2.50390625\n"
            "   rpc_seconds_count {method=\"Record\"} 3.0\n"
            "family temperature gauge \"\"\n"
            "   temperature {where=\"inf\"} inf\n"
            "   temperature {where=\"nan\"} nan\n"
            "   temperature {where=\"neg\"} -1.5e-07\n"
            "   temperature {where=\"utf8 \\ufffd\"} 1.0\n");
}

}  // namespace
}  // namespace recharge::metrics
