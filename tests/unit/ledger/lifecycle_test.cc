#include "ledger/lifecycle.h"

#include <gtest/gtest.h>

#include <map>
#include <utility>

namespace recharge {
namespace {

namespace v1 = recharge::v1;
using v1::RechargeEventType;
using v1::RechargeStatus;

constexpr RechargeStatus kAll[] = {
    v1::RECHARGE_STATUS_UNSPECIFIED, v1::RECHARGE_STATUS_APPROVED,   v1::RECHARGE_STATUS_DECLINED,
    v1::RECHARGE_STATUS_BLOCKED,     v1::RECHARGE_STATUS_PENDING_REVIEW, v1::RECHARGE_STATUS_FAILED,
    v1::RECHARGE_STATUS_PENDING,     v1::RECHARGE_STATUS_REFUNDED,   v1::RECHARGE_STATUS_CHARGED_BACK,
    v1::RECHARGE_STATUS_REQUIRES_ACTION,
};

// Every arrow of docs/lifecycle.md, written out; anything else is refused.
const std::map<std::pair<RechargeStatus, RechargeStatus>, RechargeEventType>& Arrows() {
  static const auto* arrows = new std::map<std::pair<RechargeStatus, RechargeStatus>, RechargeEventType>{
      {{v1::RECHARGE_STATUS_UNSPECIFIED, v1::RECHARGE_STATUS_APPROVED}, v1::RECHARGE_EVENT_DECIDED},
      {{v1::RECHARGE_STATUS_UNSPECIFIED, v1::RECHARGE_STATUS_DECLINED}, v1::RECHARGE_EVENT_DECIDED},
      {{v1::RECHARGE_STATUS_UNSPECIFIED, v1::RECHARGE_STATUS_BLOCKED}, v1::RECHARGE_EVENT_DECIDED},
      {{v1::RECHARGE_STATUS_UNSPECIFIED, v1::RECHARGE_STATUS_PENDING_REVIEW}, v1::RECHARGE_EVENT_DECIDED},
      {{v1::RECHARGE_STATUS_UNSPECIFIED, v1::RECHARGE_STATUS_FAILED}, v1::RECHARGE_EVENT_DECIDED},
      {{v1::RECHARGE_STATUS_UNSPECIFIED, v1::RECHARGE_STATUS_PENDING}, v1::RECHARGE_EVENT_DECIDED},
      {{v1::RECHARGE_STATUS_UNSPECIFIED, v1::RECHARGE_STATUS_REQUIRES_ACTION}, v1::RECHARGE_EVENT_DECIDED},
      {{v1::RECHARGE_STATUS_REQUIRES_ACTION, v1::RECHARGE_STATUS_APPROVED}, v1::RECHARGE_EVENT_SETTLED},
      {{v1::RECHARGE_STATUS_REQUIRES_ACTION, v1::RECHARGE_STATUS_DECLINED}, v1::RECHARGE_EVENT_SETTLED},
      {{v1::RECHARGE_STATUS_REQUIRES_ACTION, v1::RECHARGE_STATUS_FAILED}, v1::RECHARGE_EVENT_SETTLED},
      {{v1::RECHARGE_STATUS_REQUIRES_ACTION, v1::RECHARGE_STATUS_PENDING_REVIEW},
       v1::RECHARGE_EVENT_ACTION_COMPLETED},
      {{v1::RECHARGE_STATUS_PENDING, v1::RECHARGE_STATUS_APPROVED}, v1::RECHARGE_EVENT_SETTLED},
      {{v1::RECHARGE_STATUS_PENDING, v1::RECHARGE_STATUS_DECLINED}, v1::RECHARGE_EVENT_SETTLED},
      {{v1::RECHARGE_STATUS_PENDING, v1::RECHARGE_STATUS_FAILED}, v1::RECHARGE_EVENT_SETTLED},
      {{v1::RECHARGE_STATUS_PENDING_REVIEW, v1::RECHARGE_STATUS_APPROVED}, v1::RECHARGE_EVENT_REVIEW_RESOLVED},
      {{v1::RECHARGE_STATUS_PENDING_REVIEW, v1::RECHARGE_STATUS_DECLINED}, v1::RECHARGE_EVENT_REVIEW_RESOLVED},
      {{v1::RECHARGE_STATUS_PENDING_REVIEW, v1::RECHARGE_STATUS_PENDING}, v1::RECHARGE_EVENT_REVIEW_RESOLVED},
      {{v1::RECHARGE_STATUS_APPROVED, v1::RECHARGE_STATUS_REFUNDED}, v1::RECHARGE_EVENT_REFUNDED},
      {{v1::RECHARGE_STATUS_APPROVED, v1::RECHARGE_STATUS_CHARGED_BACK}, v1::RECHARGE_EVENT_CHARGED_BACK},
  };
  return *arrows;
}

TEST(Lifecycle, EveryPairOfStatusesIsAllowedExactlyWhenItIsAnArrow) {
  int allowed = 0, refused = 0;
  for (RechargeStatus from : kAll) {
    for (RechargeStatus to : kAll) {
      absl::StatusOr<RechargeEventType> event = EventOf(from, to);
      auto it = Arrows().find({from, to});
      const std::string what = v1::RechargeStatus_Name(from) + " -> " + v1::RechargeStatus_Name(to);
      if (it != Arrows().end()) {
        ASSERT_TRUE(event.ok()) << what << ": " << event.status();
        EXPECT_EQ(*event, it->second) << what;
        ++allowed;
      } else {
        ASSERT_FALSE(event.ok()) << what << " was allowed";
        EXPECT_EQ(event.status().code(), absl::StatusCode::kFailedPrecondition) << what;
        EXPECT_NE(event.status().message().find(v1::RechargeStatus_Name(from)), std::string::npos);
        EXPECT_NE(event.status().message().find(v1::RechargeStatus_Name(to)), std::string::npos);
        ++refused;
      }
    }
  }
  EXPECT_EQ(allowed, 19);
  EXPECT_EQ(refused, 10 * 10 - 19);
}

TEST(Lifecycle, FinalStatusesHaveNoWayOut) {
  for (RechargeStatus from : kAll) {
    bool has_arrow = false;
    for (RechargeStatus to : kAll) has_arrow |= EventOf(from, to).ok();
    EXPECT_EQ(IsFinal(from), !has_arrow && from != v1::RECHARGE_STATUS_UNSPECIFIED)
        << v1::RechargeStatus_Name(from);
  }
}

TEST(Lifecycle, CoinsAreCreditedOnceApprovedAndTakenBackOnRefundOrChargeback) {
  v1::Recharge r;
  r.set_coins(330);
  r.set_status(v1::RECHARGE_STATUS_APPROVED);
  EXPECT_EQ(CoinsDelta(v1::RECHARGE_EVENT_DECIDED, r), 330);
  EXPECT_EQ(CoinsDelta(v1::RECHARGE_EVENT_SETTLED, r), 330);
  EXPECT_EQ(CoinsDelta(v1::RECHARGE_EVENT_REVIEW_RESOLVED, r), 330);
  for (RechargeStatus s : {v1::RECHARGE_STATUS_DECLINED, v1::RECHARGE_STATUS_PENDING,
                           v1::RECHARGE_STATUS_PENDING_REVIEW, v1::RECHARGE_STATUS_FAILED,
                           v1::RECHARGE_STATUS_BLOCKED}) {
    r.set_status(s);
    EXPECT_EQ(CoinsDelta(v1::RECHARGE_EVENT_DECIDED, r), 0) << v1::RechargeStatus_Name(s);
    EXPECT_EQ(CoinsDelta(v1::RECHARGE_EVENT_SETTLED, r), 0) << v1::RechargeStatus_Name(s);
    EXPECT_EQ(CoinsDelta(v1::RECHARGE_EVENT_REVIEW_RESOLVED, r), 0) << v1::RechargeStatus_Name(s);
  }
  r.set_status(v1::RECHARGE_STATUS_REFUNDED);
  EXPECT_EQ(CoinsDelta(v1::RECHARGE_EVENT_REFUNDED, r), -330);
  r.set_status(v1::RECHARGE_STATUS_CHARGED_BACK);
  EXPECT_EQ(CoinsDelta(v1::RECHARGE_EVENT_CHARGED_BACK, r), -330);
}

}  // namespace
}  // namespace recharge
