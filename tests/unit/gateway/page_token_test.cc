#include <gtest/gtest.h>

#include "gateway/service.h"

namespace recharge {
namespace {

TEST(PageToken, RoundTripsForTheSameUser) {
  const std::string t = EncodePageToken({1795629291123456, 1234}, "user-1");
  auto c = DecodePageToken(t, "user-1");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->created_at_us, 1795629291123456);
  EXPECT_EQ(c->seq, 1234);
}

TEST(PageToken, IsRejectedForAnotherUserOrWhenForged) {
  const std::string t = EncodePageToken({1795629291123456, 1234}, "user-1");
  auto other = DecodePageToken(t, "user-2");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(other.status().message()).rfind("page_token:", 0), 0u);
  EXPECT_FALSE(DecodePageToken("not-a-token", "user-1").ok());
  EXPECT_FALSE(DecodePageToken("", "user-1").ok());
  EXPECT_FALSE(DecodePageToken(EncodePageToken({-5, 1}, "u"), "u").ok());
}

TEST(GrpcStatus, KeepsCodeAndMessage) {
  grpc::Status s = ToGrpcStatus(absl::InvalidArgumentError("card.number: bad"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "card.number: bad");
  EXPECT_EQ(ToGrpcStatus(absl::AbortedError("x")).error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(ToGrpcStatus(absl::AlreadyExistsError("x")).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace recharge
