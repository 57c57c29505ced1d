// What only the SQLite ledger does: the writer without reader threads,
// WAL checkpoints, an unopenable path. The ledger suite itself runs on both
// backends in tests/integration/ledger_store_test.cc.
#include "ledger/sqlite/sqlite_ledger_store.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include "io/crypto.h"
#include "tests/unit/ledger/ledger_test_util.h"

namespace recharge {
namespace {

using recharge::v1::RECHARGE_STATUS_APPROVED;
using recharge::v1::RECHARGE_STATUS_FAILED;
using recharge::v1::RECHARGE_STATUS_PENDING;
using Kind = BeginResult::Kind;
using testing::LedgerClaim;
using testing::LedgerDone;

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("ledger_test_" + RandomHex(6));
    std::filesystem::create_directories(dir_);
    Open();
  }
  void TearDown() override {
    store_.reset();
    io_.Stop();
    std::filesystem::remove_all(dir_);
  }
  void Open() {
    auto s = SqliteLedgerStore::Open({.path = (dir_ / "ledger.db").string()});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  template <typename T>
  T Run(asio::awaitable<T> a) {
    return io_.Run(std::move(a));
  }

  std::filesystem::path dir_;
  testing::LedgerIo io_;
  std::unique_ptr<SqliteLedgerStore> store_;
};

TEST_F(LedgerTest, WithoutReaderThreadsTheWriterAnswersEverything) {
  store_.reset();
  auto s = SqliteLedgerStore::Open({.path = (dir_ / "ledger.db").string(), .reader_threads = 0});
  ASSERT_TRUE(s.ok()) << s.status();
  store_ = *std::move(s);
  KeyClaim c = LedgerClaim("no-readers", "fp");
  ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
  EXPECT_EQ(Run(store_->Begin(c))->kind, Kind::kInFlight);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, RECHARGE_STATUS_APPROVED))).ok());
  const uint64_t commits_before = store_->commits();
  EXPECT_EQ(Run(store_->Begin(c))->kind, Kind::kReplay);
  EXPECT_EQ(store_->commits(), commits_before + 1);
  EXPECT_EQ(Run(store_->GetRecharge("rch_no-readers"))->status(), RECHARGE_STATUS_APPROVED);
  auto unresolved = Run(store_->ListUnresolved(std::chrono::system_clock::now()));
  ASSERT_TRUE(unresolved.ok()) << unresolved.status();
  EXPECT_TRUE(unresolved->empty());
}

TEST_F(LedgerTest, TheWalIsCheckpointedBetweenBatches) {
  store_.reset();
  auto s = SqliteLedgerStore::Open({.path = (dir_ / "ledger.db").string(), .checkpoint_pages = 8});
  ASSERT_TRUE(s.ok()) << s.status();
  store_ = *std::move(s);
  for (int i = 0; i < 20; ++i) {
    KeyClaim c = LedgerClaim("ckpt-" + std::to_string(i), "fp");
    ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
    ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, RECHARGE_STATUS_APPROVED))).ok());
  }
  EXPECT_GT(store_->checkpoints(), 0u);
  EXPECT_LT(std::filesystem::file_size(dir_ / "ledger.db-wal"), 64u * 4096u);
  store_.reset();
  Open();
  EXPECT_EQ(Run(store_->Begin(LedgerClaim("ckpt-19", "fp")))->kind, Kind::kReplay);
}

TEST(SqliteLedgerStore, UnopenablePathIsUnavailableAndNamed) {
  auto s = SqliteLedgerStore::Open({.path = "/nonexistent-dir/ledger.db"});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.status().message()), ::testing::HasSubstr("/nonexistent-dir/ledger.db"));
}

}  // namespace
}  // namespace recharge
