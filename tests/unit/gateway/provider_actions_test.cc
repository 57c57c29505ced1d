// SettleAction with a fake adapter: what the provider's word on a payment
// that waited for the buyer makes of its recharge, and the one capture of an
// authenticated card.
#include "gateway/provider_actions.h"

#include <boost/asio/use_future.hpp>
#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include <thread>

namespace recharge {
namespace {

using recharge::v1::RECHARGE_STATUS_APPROVED;
using recharge::v1::RECHARGE_STATUS_DECLINED;
using recharge::v1::RECHARGE_STATUS_FAILED;
using recharge::v1::RECHARGE_STATUS_PENDING_REVIEW;
using recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION;

// Answers Capture with a scripted result and records the keys it was given.
class FakeCardAdapter final : public PaymentAdapter {
 public:
  std::string_view name() const override { return "card-primary"; }
  asio::awaitable<ChargeOutcome> Charge(const ChargeRequest&) override { co_return ChargeOutcome{}; }
  asio::awaitable<ChargeOutcome> Lookup(std::string_view,
                                        std::chrono::steady_clock::time_point) override {
    co_return ChargeOutcome{};
  }
  bool SupportsHolds() const override { return true; }
  asio::awaitable<ChargeOutcome> Capture(const PaymentOperation& op) override {
    capture_keys.push_back(op.idempotency_key);
    ChargeOutcome o;
    o.result = capture_result;
    o.decline_code = capture_result == ChargeResult::kDeclined ? "charge_expired" : "";
    co_return o;
  }
  ChargeResult capture_result = ChargeResult::kApproved;
  std::vector<std::string> capture_keys;
};

Recharge Waiting(recharge::v1::FraudAction decision = recharge::v1::FRAUD_ACTION_ALLOW) {
  Recharge r;
  r.set_recharge_id("rch_wait");
  r.set_status(RECHARGE_STATUS_REQUIRES_ACTION);
  r.set_coins(65);
  r.mutable_payment()->set_adapter("card-primary");
  r.mutable_payment()->set_provider_reference("ch_1");
  r.mutable_fraud()->set_decision(decision);
  *r.mutable_created_at() = google::protobuf::util::TimeUtil::SecondsToTimestamp(1'800'000'000);
  return r;
}

ChargeOutcome Outcome(ChargeResult result, bool captured = true, std::string code = "") {
  ChargeOutcome o;
  o.result = result;
  o.captured = captured;
  o.provider_reference = "ch_1";
  o.decline_code = std::move(code);
  return o;
}

class SettleActionTest : public ::testing::Test {
 protected:
  std::optional<Recharge> Settle(const Recharge& r, const ChargeOutcome& o) {
    auto run = [&]() -> asio::awaitable<std::optional<Recharge>> {
      co_return co_await SettleAction(r, o, adapter_, std::chrono::hours(168),
                                      std::chrono::steady_clock::now() + std::chrono::seconds(5));
    };
    return asio::co_spawn(io_, run(), asio::use_future).get();
  }
  void SetUp() override { thread_ = std::thread([this] { io_.run(); }); }
  void TearDown() override {
    work_.reset();
    thread_.join();
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::thread thread_;
  FakeCardAdapter adapter_;
};

TEST_F(SettleActionTest, AnAuthenticatedHoldIsCapturedOnceUnderTheRechargesKey) {
  std::optional<Recharge> next = Settle(Waiting(), Outcome(ChargeResult::kApproved, false));
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->status(), RECHARGE_STATUS_APPROVED);
  EXPECT_EQ(adapter_.capture_keys, std::vector<std::string>{"rch_wait:capture"});
  // A payment taken already (a wallet) needs no capture.
  std::optional<Recharge> paid = Settle(Waiting(), Outcome(ChargeResult::kApproved, true));
  EXPECT_EQ(paid->status(), RECHARGE_STATUS_APPROVED);
  EXPECT_EQ(adapter_.capture_keys.size(), 1u);
}

TEST_F(SettleActionTest, ACaptureWhoseAnswerIsLostLeavesTheRechargeWaiting) {
  adapter_.capture_result = ChargeResult::kUnknown;
  EXPECT_FALSE(Settle(Waiting(), Outcome(ChargeResult::kApproved, false)).has_value());
  adapter_.capture_result = ChargeResult::kDeclined;
  std::optional<Recharge> refused = Settle(Waiting(), Outcome(ChargeResult::kApproved, false));
  EXPECT_EQ(refused->status(), RECHARGE_STATUS_DECLINED);
  EXPECT_EQ(refused->payment().decline_code(), "charge_expired");
}

TEST_F(SettleActionTest, AReviewedCardIsHeldForItsReviewNotCaptured) {
  std::optional<Recharge> next =
      Settle(Waiting(recharge::v1::FRAUD_ACTION_REVIEW), Outcome(ChargeResult::kApproved, false));
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->status(), RECHARGE_STATUS_PENDING_REVIEW);
  EXPECT_TRUE(next->has_hold_expires_at());
  EXPECT_TRUE(adapter_.capture_keys.empty());
}

TEST_F(SettleActionTest, DeclinesCancellationsAndStillWaitingPayments) {
  std::optional<Recharge> declined =
      Settle(Waiting(), Outcome(ChargeResult::kDeclined, true, "authentication_failed"));
  EXPECT_EQ(declined->status(), RECHARGE_STATUS_DECLINED);
  EXPECT_EQ(declined->payment().decline_code(), "authentication_failed");
  std::optional<Recharge> cancelled = Settle(Waiting(), Outcome(ChargeResult::kFailed, true, "cancelled"));
  EXPECT_EQ(cancelled->status(), RECHARGE_STATUS_FAILED);
  // A lookup that could not be made, or a payment still waiting: no change.
  EXPECT_FALSE(Settle(Waiting(), Outcome(ChargeResult::kFailed)).has_value());
  EXPECT_FALSE(Settle(Waiting(), Outcome(ChargeResult::kRequiresAction, false)).has_value());
  EXPECT_FALSE(Settle(Waiting(), Outcome(ChargeResult::kUnknown)).has_value());
  EXPECT_TRUE(adapter_.capture_keys.empty());
}

TEST(ActionExpiry, PastExpiresAtOnly) {
  Recharge r = Waiting();
  const auto now = std::chrono::system_clock::now();
  *r.mutable_next_action()->mutable_expires_at() =
      google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(
          std::chrono::duration_cast<std::chrono::microseconds>(
              (now + std::chrono::minutes(15)).time_since_epoch()).count());
  EXPECT_FALSE(ActionPastExpiry(r, now));
  EXPECT_TRUE(ActionPastExpiry(r, now + std::chrono::minutes(16)));
  Recharge expired = ActionExpired(r);
  EXPECT_EQ(expired.status(), RECHARGE_STATUS_FAILED);
  EXPECT_EQ(expired.payment().decline_code(), "action_expired");
}

}  // namespace
}  // namespace recharge
