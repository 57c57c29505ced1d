// Router::Charge with fake adapters: failover, no failover after an
// ambiguous outcome, circuit breakers.
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include <deque>

#include "adapters/router.h"

namespace recharge {
namespace {

using namespace std::chrono_literals;

// Answers Charge with scripted outcomes and counts the calls.
class FakeAdapter final : public PaymentAdapter {
 public:
  FakeAdapter(std::string name, ChargeResult result) : name_(std::move(name)), result_(result) {}
  std::string_view name() const override { return name_; }
  asio::awaitable<ChargeOutcome> Charge(const ChargeRequest&) override {
    ++charges;
    ChargeOutcome o;
    o.result = result_;
    o.message = name_ + " says " + std::string(ChargeResultName(result_));
    co_return o;
  }
  asio::awaitable<ChargeOutcome> Lookup(std::string_view, std::chrono::steady_clock::time_point) override {
    co_return ChargeOutcome{};
  }
  void set_result(ChargeResult r) { result_ = r; }
  int charges = 0;

 private:
  std::string name_;
  ChargeResult result_;
};

class RouterChargeTest : public ::testing::Test {
 protected:
  void Build(std::vector<std::pair<std::string, ChargeResult>> adapters,
             CircuitBreaker::Options breaker = {.window = 4, .min_calls = 2, .failure_rate = 0.5,
                                                .open_for = 1h}) {
    std::map<std::string, Router::Instance> instances;
    std::vector<std::string> order;
    for (auto& [name, result] : adapters) {
      auto fake = std::make_unique<FakeAdapter>(name, result);
      fakes_[name] = fake.get();
      instances.emplace(name, Router::Instance{std::move(fake), std::make_unique<CircuitBreaker>(breaker), {}, {}});
      order.push_back(name);
    }
    Router::Route route;
    route.method = "card";
    for (const std::string& n : order) route.instances.push_back(&instances.at(n));
    router_ = std::make_unique<Router>(std::move(instances), std::vector<Router::Route>{route});
  }
  Router::Routed Charge() {
    auto route = router_->Select("card", "", "US", "USD");
    EXPECT_TRUE(route.ok());
    ChargeRequest req;
    req.recharge_id = "rch_test";
    return asio::co_spawn(io_, router_->Charge(**route, req), asio::use_future).get();
  }
  void SetUp() override {
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    work_.reset();
    thread_.join();
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::thread thread_;
  std::unique_ptr<Router> router_;
  std::map<std::string, FakeAdapter*> fakes_;
};

TEST_F(RouterChargeTest, DefiniteFailureFailsOverToTheNextInstance) {
  Build({{"primary", ChargeResult::kFailed}, {"fallback", ChargeResult::kApproved}});
  Router::Routed r = Charge();
  EXPECT_EQ(r.outcome.result, ChargeResult::kApproved);
  EXPECT_EQ(r.adapter, "fallback");
  EXPECT_EQ(fakes_["primary"]->charges, 1);
  EXPECT_EQ(fakes_["fallback"]->charges, 1);
}

TEST_F(RouterChargeTest, AmbiguousOutcomeNeverFailsOver) {
  Build({{"primary", ChargeResult::kUnknown}, {"fallback", ChargeResult::kApproved}});
  Router::Routed r = Charge();
  EXPECT_EQ(r.outcome.result, ChargeResult::kUnknown);
  EXPECT_EQ(r.adapter, "primary");
  EXPECT_EQ(fakes_["fallback"]->charges, 0);
}

TEST_F(RouterChargeTest, DeclineIsAnAnswerNotAFailure) {
  Build({{"primary", ChargeResult::kDeclined}, {"fallback", ChargeResult::kApproved}});
  EXPECT_EQ(Charge().outcome.result, ChargeResult::kDeclined);
  EXPECT_EQ(fakes_["fallback"]->charges, 0);
}

TEST_F(RouterChargeTest, AllInstancesFailingIsAFailureNamingThem) {
  Build({{"a", ChargeResult::kFailed}, {"b", ChargeResult::kFailed}});
  Router::Routed r = Charge();
  EXPECT_EQ(r.outcome.result, ChargeResult::kFailed);
  EXPECT_NE(r.outcome.message.find("a: a says failed"), std::string::npos);
  EXPECT_NE(r.outcome.message.find("b: b says failed"), std::string::npos);
}

TEST_F(RouterChargeTest, OpenCircuitIsSkippedWithoutCallingTheInstance) {
  Build({{"primary", ChargeResult::kFailed}, {"fallback", ChargeResult::kApproved}});
  Charge();
  Charge();  // 2 of 2 failed: primary's breaker opens
  EXPECT_EQ(router_->Breaker("primary")->state(CircuitBreaker::Clock::now()),
            CircuitBreaker::State::kOpen);
  fakes_["primary"]->set_result(ChargeResult::kApproved);
  Router::Routed r = Charge();
  EXPECT_EQ(r.adapter, "fallback");
  EXPECT_EQ(fakes_["primary"]->charges, 2);  // not called while open
  EXPECT_EQ(fakes_["fallback"]->charges, 3);
}

}  // namespace
}  // namespace recharge
