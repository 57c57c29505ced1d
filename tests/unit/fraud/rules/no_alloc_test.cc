// Evaluating rules allocates nothing per call. This file is its own test
// executable (fraud_rules_alloc_test) because it replaces the global
// operator new with one that counts, which the main unit_tests binary should
// not have.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>

#include "fraud/rules/fraud_input_context.h"
#include "fraud/rules/rule_set.h"

namespace {

std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};

void* CountedAlloc(std::size_t size, std::size_t align = 0) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (size == 0) size = 1;
  void* p = align > alignof(std::max_align_t)
                ? std::aligned_alloc(align, (size + align - 1) / align * align)
                : std::malloc(size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t size) { return CountedAlloc(size); }
void* operator new[](std::size_t size) { return CountedAlloc(size); }
void* operator new(std::size_t size, std::align_val_t align) {
  return CountedAlloc(size, static_cast<std::size_t>(align));
}
void* operator new[](std::size_t size, std::align_val_t align) {
  return CountedAlloc(size, static_cast<std::size_t>(align));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace recharge::rules {
namespace {

// Counts the allocations made while it is alive.
class AllocationCounter {
 public:
  AllocationCounter() {
    g_allocations = 0;
    g_counting = true;
  }
  ~AllocationCounter() { g_counting = false; }
  long count() const { return g_allocations.load(); }
};

std::shared_ptr<const RuleSet> LoadDefaults() {
  auto set = RuleSet::LoadFile(RECHARGE_SOURCE_DIR "/configs/fraud_rules.yaml");
  EXPECT_TRUE(set.ok()) << set.status();
  return set.ok() ? *set : nullptr;
}

// Keeps the compiler from eliding an allocation.
void* volatile g_sink = nullptr;

TEST(NoAllocation, TheCounterSeesAnAllocation) {
  long seen = 0;
  {
    AllocationCounter counter;
    auto* s = new std::string(100, 'x');
    g_sink = s;
    delete s;
    std::string t(200, 'y');
    g_sink = t.data();
    seen = counter.count();
  }
  EXPECT_GE(seen, 2);
}

TEST(NoAllocation, EvaluatingTheDefaultRules) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  FraudInput input;
  input.user_id = "a-user-id-longer-than-the-small-string-buffer";
  input.seller_id = "seller-0001";
  input.ip = "203.0.113.7";
  input.device_id = "device-0001";
  input.card_fingerprint = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  input.instrument_fingerprint = input.card_fingerprint;
  input.payment_method = "card";
  input.region = "US";
  input.currency = "USD";
  input.package_id = "coins_100";
  input.coins = 100;
  input.amount_usd_cents = 99;
  std::vector<double> counters(set->counters().size(), 1.0);
  // A ring: 9 accounts on 3 addresses (seller-few-addresses flags it), an
  // account over the daily budget (a shadow hit).
  std::vector<double> reseller = counters;
  reseller[*set->counter_index("seller_users_1h")] = 9;
  reseller[*set->counter_index("seller_ips_1h")] = 3;
  reseller[*set->counter_index("seller_devices_1h")] = 9;
  reseller[*set->counter_index("user_spend_usd_24h")] = 900;
  EvalContext context;
  EvalResult result;
  RuleMask demoted;
  for (size_t i = 0; i < set->rules().size(); ++i) {
    if (set->rules()[i].id() == "seller-few-addresses") demoted.set(i);
  }
  ASSERT_EQ(demoted.count(), 1u);

  Action honest = Action::kBlock, flagged = Action::kAllow, blocked = Action::kAllow,
         demoted_action = Action::kBlock;
  bool flag = false;
  size_t shadow_hits = 0;
  long allocations = 0;
  {
    AllocationCounter counter;
    FillEvalContext(input, &context);
    context.counters = counters;
    set->Evaluate(context, &result);
    honest = result.decision.action;

    context.counters = reseller;
    set->Evaluate(context, &result);
    flagged = result.decision.action;
    flag = result.decision.flag_seller;
    shadow_hits = result.shadow.size();

    set->Evaluate(context, &result, &demoted);
    demoted_action = result.decision.action;

    context.card_blocked = true;
    for (int i = 0; i < 1000; ++i) set->Evaluate(context, &result);
    blocked = result.decision.action;
    allocations = counter.count();
  }
  EXPECT_EQ(allocations, 0);
  // The evaluations did their work.
  EXPECT_EQ(honest, Action::kAllow);
  EXPECT_EQ(flagged, Action::kReview);
  EXPECT_TRUE(flag);
  EXPECT_EQ(shadow_hits, 1u);                 // daily-budget
  EXPECT_EQ(demoted_action, Action::kAllow);  // seller-few-addresses demoted
  EXPECT_EQ(blocked, Action::kBlock);
}

TEST(NoAllocation, EvaluatingStringsListsAndArithmetic) {
  const std::vector<std::string> names = {"c0"};
  auto program = Program::Compile(
      R"(region in ["US", "a region name longer than the small string buffer"] and )"
      R"(package_id != "a package id longer than the small string buffer" and )"
      R"(c0 / 0 == 0 and -coins * 2 + 1 < amount_usd and payment_method not in ["paypal"])",
      names);
  ASSERT_TRUE(program.ok()) << program.status();
  auto text = Program::Compile(R"("a string constant longer than the small string buffer")", names);
  ASSERT_TRUE(text.ok());
  EvalContext context;
  const std::string region = "a region name longer than the small string buffer";
  context.set_string(Field::kRegion, region);
  context.set_number(Field::kCoins, 5);
  const double counters[] = {3};
  context.counters = counters;
  bool matched = false;
  size_t length = 0;
  long allocations = 0;
  {
    AllocationCounter counter;
    matched = program->Matches(context);
    length = text->Evaluate(context).text.size();
    allocations = counter.count();
  }
  EXPECT_EQ(allocations, 0);
  EXPECT_TRUE(matched);
  EXPECT_EQ(length, 53u);
}

}  // namespace
}  // namespace recharge::rules
