// The ledger test suite (DESIGN §5): the idempotency state machine, the
// lists, the outbox, refunds and notifications, run against every backend
// on real servers: SQLite (a file in a temp directory) and PostgreSQL (a
// throwaway cluster this binary starts once; a database per test).
// Backend-specific tests live with each store (tests/unit/ledger/).
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include "io/crypto.h"
#include "ledger/postgres/postgres_ledger_store.h"
#include "ledger/sqlite/sqlite_ledger_store.h"
#include "tests/integration/postgres_server.h"
#include "tests/unit/ledger/ledger_test_util.h"

namespace recharge {
namespace {

using recharge::v1::RECHARGE_STATUS_APPROVED;
using recharge::v1::RECHARGE_STATUS_FAILED;
using recharge::v1::RECHARGE_STATUS_PENDING;
using Kind = BeginResult::Kind;
using testing::LedgerClaim;
using testing::LedgerDone;

// The PostgreSQL cluster of this test binary, started on first use and
// stopped when the binary ends.
testing::PostgresServer& Postgres() {
  static std::unique_ptr<testing::PostgresServer> server;
  if (server == nullptr) server = std::make_unique<testing::PostgresServer>();
  return *server;
}

class LedgerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "sqlite") {
      dir_ = std::filesystem::temp_directory_path() / ("ledger_test_" + RandomHex(6));
      std::filesystem::create_directories(dir_);
    } else {
      database_ = Postgres().CreateDatabase("ledger");
    }
    Open();
  }
  void TearDown() override {
    store_.reset();
    io_.Stop();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  // Opens the store on the test's data (again after store_.reset()).
  void Open() {
    if (GetParam() == "sqlite") {
      auto s = SqliteLedgerStore::Open({.path = (dir_ / "ledger.db").string()});
      ASSERT_TRUE(s.ok()) << s.status();
      sqlite_ = s->get();
      store_ = *std::move(s);
    } else {
      auto s = Run(PostgresLedgerStore::Open(
          io_.executor(), {.conninfo = Postgres().conninfo(database_)}));
      ASSERT_TRUE(s.ok()) << s.status();
      postgres_ = s->get();
      store_ = *std::move(s);
    }
  }
  // Write transactions committed so far.
  uint64_t Commits() const {
    return GetParam() == "sqlite" ? sqlite_->commits() : postgres_->commits();
  }
  // Batches in which a write failed after others were batched with it.
  uint64_t Reruns() const {
    return GetParam() == "sqlite" ? sqlite_->savepoint_reruns() : postgres_->batch_reruns();
  }
  template <typename T>
  T Run(asio::awaitable<T> a) {
    return io_.Run(std::move(a));
  }

  testing::LedgerIo io_;
  std::filesystem::path dir_;  // sqlite
  std::string database_;       // postgres
  std::unique_ptr<LedgerStore> store_;
  SqliteLedgerStore* sqlite_ = nullptr;
  PostgresLedgerStore* postgres_ = nullptr;
};

TEST_P(LedgerTest, NewKeyIsClaimedThenInFlightThenReplayed) {
  KeyClaim c = LedgerClaim("key-1", "fp-A");
  auto first = Run(store_->Begin(c));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->kind, Kind::kClaimed);
  EXPECT_EQ(first->recharge_id, "rch_key-1");

  auto again = Run(store_->Begin(c));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->kind, Kind::kInFlight);

  auto stored = Run(store_->Complete(LedgerDone(c, RECHARGE_STATUS_APPROVED)));
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->status(), RECHARGE_STATUS_APPROVED);

  auto replay = Run(store_->Begin(c));
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->kind, Kind::kReplay);
  EXPECT_EQ(replay->stored.recharge_id(), "rch_key-1");
  EXPECT_EQ(replay->stored.status(), RECHARGE_STATUS_APPROVED);
}

TEST_P(LedgerTest, SameKeyOtherRequestIsAMismatchInEveryState) {
  KeyClaim c = LedgerClaim("key-2", "fp-A");
  ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
  EXPECT_EQ(Run(store_->Begin(LedgerClaim("key-2", "fp-B")))->kind, Kind::kMismatch);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, RECHARGE_STATUS_APPROVED))).ok());
  EXPECT_EQ(Run(store_->Begin(LedgerClaim("key-2", "fp-B")))->kind, Kind::kMismatch);
}

TEST_P(LedgerTest, SecondCompletionKeepsTheFirstOutcome) {
  KeyClaim c = LedgerClaim("key-3", "fp");
  ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, RECHARGE_STATUS_APPROVED))).ok());
  auto second = Run(store_->Complete(LedgerDone(c, RECHARGE_STATUS_FAILED)));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->status(), RECHARGE_STATUS_APPROVED);
  EXPECT_EQ(Run(store_->GetRecharge("rch_key-3"))->status(), RECHARGE_STATUS_APPROVED);
}

TEST_P(LedgerTest, GetUnknownRechargeIsNotFound) {
  auto r = Run(store_->GetRecharge("rch_nope"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST_P(LedgerTest, StateSurvivesReopening) {
  KeyClaim c = LedgerClaim("key-4", "fp");
  ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, RECHARGE_STATUS_APPROVED))).ok());
  KeyClaim started = LedgerClaim("key-5", "fp");
  ASSERT_EQ(Run(store_->Begin(started))->kind, Kind::kClaimed);
  store_.reset();
  Open();
  EXPECT_EQ(Run(store_->Begin(c))->kind, Kind::kReplay);
  EXPECT_EQ(Run(store_->Begin(started))->kind, Kind::kInFlight);
}

TEST_P(LedgerTest, ListIsNewestFirstWithCursorPaging) {
  for (int i = 0; i < 5; ++i) {
    KeyClaim c = LedgerClaim("list-" + std::to_string(i), "fp", "lister");
    ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
    ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, RECHARGE_STATUS_APPROVED))).ok());
  }
  KeyClaim other = LedgerClaim("other-0", "fp", "someone-else");
  ASSERT_EQ(Run(store_->Begin(other))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(other, RECHARGE_STATUS_APPROVED))).ok());

  std::vector<std::string> seen;
  std::optional<RechargeCursor> cursor;
  std::vector<size_t> sizes;
  do {
    auto page = Run(store_->ListRecharges("lister", 2, cursor));
    ASSERT_TRUE(page.ok());
    sizes.push_back(page->recharges.size());
    for (const auto& r : page->recharges) seen.push_back(r.idempotency_key());
    cursor = page->next_cursor;
  } while (cursor);
  EXPECT_THAT(sizes, ::testing::ElementsAre(2, 2, 1));
  EXPECT_THAT(seen, ::testing::ElementsAre("list-4", "list-3", "list-2", "list-1", "list-0"));
}

TEST_P(LedgerTest, ListOrdersByCreationTimeNotByCompletion) {
  // A recharge made first but recorded last (recovered after a crash) is
  // listed by when it was made.
  KeyClaim older = LedgerClaim("made-first", "fp", "orderer");
  older.draft.mutable_created_at()->set_seconds(1000);
  KeyClaim newer = LedgerClaim("made-second", "fp", "orderer");
  newer.draft.mutable_created_at()->set_seconds(2000);
  ASSERT_EQ(Run(store_->Begin(older))->kind, Kind::kClaimed);
  ASSERT_EQ(Run(store_->Begin(newer))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(newer, RECHARGE_STATUS_APPROVED))).ok());
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(older, RECHARGE_STATUS_APPROVED))).ok());
  auto page = Run(store_->ListRecharges("orderer", 1, std::nullopt));
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->recharges.size(), 1u);
  EXPECT_EQ(page->recharges[0].idempotency_key(), "made-second");
  auto next = Run(store_->ListRecharges("orderer", 1, page->next_cursor));
  ASSERT_TRUE(next.ok());
  ASSERT_EQ(next->recharges.size(), 1u);
  EXPECT_EQ(next->recharges[0].idempotency_key(), "made-first");
  EXPECT_FALSE(next->next_cursor.has_value());
}

TEST_P(LedgerTest, UnresolvedListsOldStartedKeysAndPendingRecharges) {
  KeyClaim started = LedgerClaim("started-1", "fp");
  ASSERT_EQ(Run(store_->Begin(started))->kind, Kind::kClaimed);
  KeyClaim pending = LedgerClaim("pending-1", "fp");
  ASSERT_EQ(Run(store_->Begin(pending))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(pending, RECHARGE_STATUS_PENDING))).ok());

  // A cutoff in the past excludes the fresh started key but not the PENDING one.
  auto early = Run(store_->ListUnresolved(std::chrono::system_clock::now() - std::chrono::hours(1)));
  ASSERT_TRUE(early.ok());
  ASSERT_EQ(early->size(), 1u);
  EXPECT_EQ((*early)[0].idempotency_key, "pending-1");
  EXPECT_FALSE((*early)[0].started);

  auto later = Run(store_->ListUnresolved(std::chrono::system_clock::now() + std::chrono::seconds(1)));
  ASSERT_TRUE(later.ok());
  ASSERT_EQ(later->size(), 2u);
  EXPECT_EQ((*later)[0].idempotency_key, "started-1");
  EXPECT_TRUE((*later)[0].started);
  EXPECT_EQ((*later)[0].recharge.recharge_id(), "rch_started-1");

  // Resolving the PENDING recharge updates the record and the replayed response, once.
  Recharge resolved = pending.draft;
  resolved.set_status(RECHARGE_STATUS_APPROVED);
  RecordRechargeResponse response;
  response.set_recharge_id(resolved.recharge_id());
  response.set_status(RECHARGE_STATUS_APPROVED);
  response.set_coins_credited(65);
  auto ok = Run(store_->Transition(resolved, response, RECHARGE_STATUS_PENDING));
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(*ok);
  EXPECT_FALSE(*Run(store_->Transition(resolved, response, RECHARGE_STATUS_PENDING)));
  auto replay = Run(store_->Begin(pending));
  EXPECT_EQ(replay->kind, Kind::kReplay);
  EXPECT_EQ(replay->stored.coins_credited(), 65);
}

TEST_P(LedgerTest, PurgeForgetsOldCompletedKeysButNeverPendingOrStarted) {
  KeyClaim done = LedgerClaim("purge-done", "fp");
  ASSERT_EQ(Run(store_->Begin(done))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(done, RECHARGE_STATUS_APPROVED))).ok());
  KeyClaim pending = LedgerClaim("purge-pending", "fp");
  ASSERT_EQ(Run(store_->Begin(pending))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(pending, RECHARGE_STATUS_PENDING))).ok());
  KeyClaim started = LedgerClaim("purge-started", "fp");
  ASSERT_EQ(Run(store_->Begin(started))->kind, Kind::kClaimed);

  EXPECT_EQ(*Run(store_->PurgeKeys(std::chrono::system_clock::now() - std::chrono::hours(1))), 0);
  EXPECT_EQ(*Run(store_->PurgeKeys(std::chrono::system_clock::now() + std::chrono::seconds(1))), 1);
  // The purged key may be used again; the recharge itself stays.
  EXPECT_EQ(Run(store_->Begin(LedgerClaim("purge-done", "fp")))->kind, Kind::kClaimed);
  EXPECT_TRUE(Run(store_->GetRecharge("rch_purge-done")).ok());
  EXPECT_EQ(Run(store_->Begin(pending))->kind, Kind::kReplay);
  EXPECT_EQ(Run(store_->Begin(started))->kind, Kind::kInFlight);
}

TEST_P(LedgerTest, ConcurrentClaimsOfOneKeyHaveExactlyOneWinnerAndShareCommits) {
  constexpr int kCalls = 400;
  std::vector<std::future<absl::StatusOr<BeginResult>>> results;
  KeyClaim c = LedgerClaim("race-1", "fp");
  const uint64_t commits_before = Commits();
  for (int i = 0; i < kCalls; ++i) {
    results.push_back(asio::co_spawn(io_.context(), store_->Begin(c), asio::use_future));
  }
  int claimed = 0, in_flight = 0;
  for (auto& f : results) {
    auto r = f.get();
    ASSERT_TRUE(r.ok());
    claimed += r->kind == Kind::kClaimed;
    in_flight += r->kind == Kind::kInFlight;
  }
  EXPECT_EQ(claimed, 1);
  EXPECT_EQ(in_flight, kCalls - 1);
  // Group commit: far fewer transactions than operations.
  EXPECT_LT(Commits() - commits_before, static_cast<uint64_t>(kCalls / 2));
}

TEST_P(LedgerTest, AuditEventsAreKeptAcrossReopenAndListedNewestFirstInPages) {
  for (int i = 0; i < 5; ++i) {
    recharge::v1::AuditEvent e;
    e.mutable_at()->set_seconds(1'800'000'000 + i);
    e.mutable_at()->set_nanos(123'456'000);
    e.set_caller("ops-" + std::to_string(i));
    e.set_rpc("ClearSellerFlag");
    e.set_target("seller-" + std::to_string(i));
    e.set_note("note " + std::to_string(i));
    e.set_outcome("OK");
    ASSERT_TRUE(Run(store_->AppendAudit(e)).ok());
  }
  store_.reset();  // durably stored: a new store on the same file sees them
  Open();
  auto first = Run(store_->ListAudit(2, std::nullopt));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->events.size(), 2u);
  EXPECT_EQ(first->events[0].target(), "seller-4");
  EXPECT_EQ(first->events[1].target(), "seller-3");
  EXPECT_EQ(first->events[0].at().seconds(), 1'800'000'004);
  EXPECT_EQ(first->events[0].at().nanos(), 123'456'000);
  EXPECT_EQ(first->events[0].caller(), "ops-4");
  EXPECT_EQ(first->events[0].note(), "note 4");
  ASSERT_TRUE(first->next_before_seq.has_value());
  auto second = Run(store_->ListAudit(2, first->next_before_seq));
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->events.size(), 2u);
  EXPECT_EQ(second->events[0].target(), "seller-2");
  auto last = Run(store_->ListAudit(2, second->next_before_seq));
  ASSERT_TRUE(last.ok());
  ASSERT_EQ(last->events.size(), 1u);
  EXPECT_EQ(last->events[0].target(), "seller-0");
  EXPECT_FALSE(last->next_before_seq.has_value());
}

TEST_P(LedgerTest, ReplayMismatchAndInFlightAreAnsweredWithoutAWriterCommit) {
  KeyClaim done = LedgerClaim("reader-done", "fp-A");
  ASSERT_EQ(Run(store_->Begin(done))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(done, RECHARGE_STATUS_APPROVED))).ok());
  KeyClaim started = LedgerClaim("reader-started", "fp-A");
  ASSERT_EQ(Run(store_->Begin(started))->kind, Kind::kClaimed);

  const uint64_t commits_before = Commits();
  for (int i = 0; i < 20; ++i) {
    auto replay = Run(store_->Begin(done));
    ASSERT_TRUE(replay.ok());
    EXPECT_EQ(replay->kind, Kind::kReplay);
    EXPECT_EQ(replay->recharge_id, "rch_reader-done");
    EXPECT_EQ(replay->stored.status(), RECHARGE_STATUS_APPROVED);
  }
  EXPECT_EQ(Run(store_->Begin(LedgerClaim("reader-done", "fp-B")))->kind, Kind::kMismatch);
  EXPECT_EQ(Run(store_->Begin(started))->kind, Kind::kInFlight);
  EXPECT_EQ(Run(store_->Begin(LedgerClaim("reader-started", "fp-B")))->kind, Kind::kMismatch);
  EXPECT_TRUE(Run(store_->GetRecharge("rch_reader-done")).ok());
  EXPECT_TRUE(Run(store_->ListRecharges("u1", 10, std::nullopt)).ok());
  EXPECT_EQ(Commits(), commits_before);

  // A new key still needs the writer.
  EXPECT_EQ(Run(store_->Begin(LedgerClaim("reader-new", "fp-A")))->kind, Kind::kClaimed);
  EXPECT_EQ(Commits(), commits_before + 1);
}

TEST_P(LedgerTest, ClaimsRacingReplayReadsOfOneKeyHaveExactlyOneClaim) {
  // Every caller retries until it sees the stored response; the one that
  // claims the key completes it. Readers and the writer answer concurrently.
  constexpr int kCallers = 200;
  const KeyClaim c = LedgerClaim("race-replay", "fp");
  std::atomic<int> claimed{0}, replayed{0}, errors{0};
  auto caller = [&]() -> asio::awaitable<void> {
    for (int attempt = 0; attempt < 10'000; ++attempt) {
      absl::StatusOr<BeginResult> r = co_await store_->Begin(c);
      if (!r.ok()) {
        ++errors;
        co_return;
      }
      if (r->kind == Kind::kClaimed) {
        ++claimed;
        absl::StatusOr<RecordRechargeResponse> stored =
            co_await store_->Complete(LedgerDone(c, RECHARGE_STATUS_APPROVED));
        if (!stored.ok()) ++errors;
        co_return;
      }
      if (r->kind == Kind::kReplay) {
        ++replayed;
        co_return;
      }
      if (r->kind != Kind::kInFlight) {
        ++errors;
        co_return;
      }
    }
    ++errors;  // never saw the outcome
  };
  std::vector<std::future<void>> calls;
  for (int i = 0; i < kCallers; ++i) calls.push_back(asio::co_spawn(io_.context(), caller(), asio::use_future));
  for (auto& f : calls) f.get();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(claimed.load(), 1);
  EXPECT_EQ(replayed.load(), kCallers - 1);
}

TEST_P(LedgerTest, AnOperationFailingAfterItWroteIsUndoneAloneAndItsBatchCommits) {
  // Two keys whose drafts share a recharge id: the second completion updates
  // its key, then fails on the recharge's unique id. That update must be
  // undone while the operations batched with it commit.
  KeyClaim first = LedgerClaim("dup-1", "fp");
  KeyClaim second = LedgerClaim("dup-2", "fp");
  second.draft.set_recharge_id(first.draft.recharge_id());
  ASSERT_EQ(Run(store_->Begin(first))->kind, Kind::kClaimed);
  ASSERT_EQ(Run(store_->Begin(second))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(first, RECHARGE_STATUS_APPROVED))).ok());

  const uint64_t reruns_before = Reruns();
  std::vector<std::future<absl::StatusOr<BeginResult>>> others;
  for (int i = 0; i < 20; ++i) {
    others.push_back(asio::co_spawn(io_.context(), store_->Begin(LedgerClaim("batched-" + std::to_string(i), "fp")),
                                    asio::use_future));
  }
  Completion dup = LedgerDone(second, RECHARGE_STATUS_APPROVED);
  auto failed = Run(store_->Complete(dup));
  EXPECT_FALSE(failed.ok());
  EXPECT_GE(Reruns(), reruns_before + 1);
  for (auto& f : others) {
    auto r = f.get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->kind, Kind::kClaimed);
  }

  store_.reset();  // what was committed is on disk
  Open();
  EXPECT_EQ(Run(store_->Begin(second))->kind, Kind::kInFlight);  // still `started`
  EXPECT_EQ(Run(store_->Begin(first))->kind, Kind::kReplay);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(Run(store_->Begin(LedgerClaim("batched-" + std::to_string(i), "fp")))->kind, Kind::kInFlight);
  }
}

// The outbox: every change is one event, in commit order, with the change.
TEST_P(LedgerTest, EveryChangeAppendsOneEventInCommitOrder) {
  EXPECT_EQ(*Run(store_->LatestEventSeq()), 0);
  KeyClaim a = LedgerClaim("event-a", "fp", "u-a");
  KeyClaim b = LedgerClaim("event-b", "fp", "u-b");
  ASSERT_EQ(Run(store_->Begin(a))->kind, Kind::kClaimed);
  ASSERT_EQ(Run(store_->Begin(b))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(a, RECHARGE_STATUS_PENDING))).ok());
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(b, RECHARGE_STATUS_APPROVED))).ok());
  // A replayed completion changes nothing, so it adds no event.
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(b, RECHARGE_STATUS_APPROVED))).ok());
  Recharge settled = LedgerDone(a, RECHARGE_STATUS_APPROVED).recharge;
  ASSERT_TRUE(*Run(store_->Transition(settled, RecordRechargeResponse(), RECHARGE_STATUS_PENDING)));
  Recharge back = LedgerDone(b, recharge::v1::RECHARGE_STATUS_CHARGED_BACK).recharge;
  ASSERT_TRUE(*Run(store_->Transition(back, RecordRechargeResponse(), RECHARGE_STATUS_APPROVED)));

  auto events = Run(store_->ListEvents(0, 100));
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 4u);
  const std::vector<std::pair<std::string, recharge::v1::RechargeEventType>> want = {
      {"rch_event-a", recharge::v1::RECHARGE_EVENT_DECIDED},
      {"rch_event-b", recharge::v1::RECHARGE_EVENT_DECIDED},
      {"rch_event-a", recharge::v1::RECHARGE_EVENT_SETTLED},
      {"rch_event-b", recharge::v1::RECHARGE_EVENT_CHARGED_BACK}};
  const std::vector<int64_t> deltas = {0, 65, 65, -65};
  for (size_t i = 0; i < want.size(); ++i) {
    const FeedEvent& e = (*events)[i];
    EXPECT_EQ(e.event.recharge().recharge_id(), want[i].first) << i;
    EXPECT_EQ(e.event.type(), want[i].second) << i;
    EXPECT_EQ(e.event.coins_delta(), deltas[i]) << i;
    EXPECT_GT(e.event.at().seconds(), 0) << i;
    if (i > 0) {
      EXPECT_GT(e.seq, (*events)[i - 1].seq);
    }
  }
  EXPECT_EQ((*events)[3].event.recharge().status(), recharge::v1::RECHARGE_STATUS_CHARGED_BACK);
  EXPECT_EQ(*Run(store_->LatestEventSeq()), (*events)[3].seq);

  // Resuming after a cursor gives exactly the later events; a page limit holds.
  auto after = Run(store_->ListEvents((*events)[1].seq, 100));
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 2u);
  EXPECT_EQ((*after)[0].seq, (*events)[2].seq);
  auto page = Run(store_->ListEvents(0, 3));
  ASSERT_EQ(page->size(), 3u);
  auto tail = Run(store_->ListEvents((*events)[3].seq, 100));
  ASSERT_TRUE(tail.ok());
  EXPECT_TRUE(tail->empty());

  // Kept across a restart.
  store_.reset();
  Open();
  auto reopened = Run(store_->ListEvents(0, 100));
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(reopened->size(), 4u);
}

TEST_P(LedgerTest, ARefusedOrLostTransitionWritesNoEvent) {
  KeyClaim a = LedgerClaim("refused-a", "fp");
  ASSERT_EQ(Run(store_->Begin(a))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(a, recharge::v1::RECHARGE_STATUS_DECLINED))).ok());
  // DECLINED is final: no arrow leaves it.
  Recharge approved = LedgerDone(a, RECHARGE_STATUS_APPROVED).recharge;
  auto refused =
      Run(store_->Transition(approved, RecordRechargeResponse(), recharge::v1::RECHARGE_STATUS_DECLINED));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  // An allowed arrow from a status the recharge is not in: lost the race.
  auto lost = Run(store_->Transition(approved, RecordRechargeResponse(), RECHARGE_STATUS_PENDING));
  ASSERT_TRUE(lost.ok());
  EXPECT_FALSE(*lost);
  EXPECT_EQ(Run(store_->GetRecharge("rch_refused-a"))->status(), recharge::v1::RECHARGE_STATUS_DECLINED);
  EXPECT_EQ(Run(store_->ListEvents(0, 100))->size(), 1u);  // its DECIDED only
}

TEST_P(LedgerTest, PurgedEventsMakeOlderCursorsOutOfRange) {
  KeyClaim a = LedgerClaim("purge-ev-a", "fp");
  ASSERT_EQ(Run(store_->Begin(a))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(a, RECHARGE_STATUS_APPROVED))).ok());
  const auto cut = std::chrono::system_clock::now() + std::chrono::milliseconds(1);
  while (std::chrono::system_clock::now() <= cut) std::this_thread::yield();
  KeyClaim b = LedgerClaim("purge-ev-b", "fp");
  ASSERT_EQ(Run(store_->Begin(b))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(b, RECHARGE_STATUS_APPROVED))).ok());
  auto all = Run(store_->ListEvents(0, 100));
  ASSERT_EQ(all->size(), 2u);
  const int64_t first = (*all)[0].seq, second = (*all)[1].seq;

  EXPECT_EQ(*Run(store_->PurgeEvents(cut)), 1);
  // A consumer at 0 missed the purged event: told so, never silently skipped.
  auto stale = Run(store_->ListEvents(0, 100));
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(stale.status().message()), ::testing::HasSubstr("after_cursor"));
  // One starting from the oldest retained event gets what is left.
  auto oldest = Run(store_->ListEvents(std::nullopt, 100));
  ASSERT_TRUE(oldest.ok()) << oldest.status();
  ASSERT_EQ(oldest->size(), 1u);
  EXPECT_EQ((*oldest)[0].seq, second);
  // One that had seen it resumes with the rest.
  auto resumed = Run(store_->ListEvents(first, 100));
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_EQ(resumed->size(), 1u);
  EXPECT_EQ((*resumed)[0].seq, second);
  // Everything purged: the newest seq is still known, and nothing past it exists.
  EXPECT_EQ(*Run(store_->PurgeEvents(std::chrono::system_clock::now() + std::chrono::seconds(1))), 1);
  EXPECT_EQ(*Run(store_->LatestEventSeq()), second);
  auto at_tail = Run(store_->ListEvents(second, 100));
  ASSERT_TRUE(at_tail.ok()) << at_tail.status();
  EXPECT_TRUE(at_tail->empty());
  auto future = Run(store_->ListEvents(second + 1, 100));
  ASSERT_FALSE(future.ok());
  EXPECT_EQ(future.status().code(), absl::StatusCode::kOutOfRange);
}

RefundClaim RefundOf(const std::string& key, const std::string& recharge_id,
                     const std::string& fp = "rfp") {
  RefundClaim c;
  c.idempotency_key = key;
  c.recharge_id = recharge_id;
  c.fingerprint = fp;
  c.info.set_reason("duplicate");
  c.info.set_refunded_by("dev-app");
  return c;
}

TEST_P(LedgerTest, RefundClaimIsExclusivePerRechargeAndCompletesWithItsEvent) {
  KeyClaim c = LedgerClaim("refund-1", "fp");
  ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, RECHARGE_STATUS_APPROVED))).ok());
  const int64_t before = *Run(store_->LatestEventSeq());

  auto claimed = Run(store_->BeginRefund(RefundOf("rk-1", "rch_refund-1")));
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_EQ(claimed->kind, RefundBegin::Kind::kClaimed);
  EXPECT_EQ(claimed->recharge.status(), RECHARGE_STATUS_APPROVED);
  // While it is made: the same key is in flight, another key must wait,
  // another request under the key is a mismatch.
  EXPECT_EQ(Run(store_->BeginRefund(RefundOf("rk-1", "rch_refund-1")))->kind,
            RefundBegin::Kind::kInFlight);
  auto other = Run(store_->BeginRefund(RefundOf("rk-2", "rch_refund-1")));
  EXPECT_EQ(other->kind, RefundBegin::Kind::kOtherRefund);
  EXPECT_FALSE(other->other_done);
  EXPECT_EQ(Run(store_->BeginRefund(RefundOf("rk-1", "rch_refund-1", "other-fp")))->kind,
            RefundBegin::Kind::kMismatch);
  auto started = Run(store_->ListStartedRefunds(std::chrono::system_clock::now() + std::chrono::seconds(1)));
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_EQ(started->size(), 1u);
  EXPECT_EQ((*started)[0].idempotency_key, "rk-1");
  EXPECT_EQ((*started)[0].info.reason(), "duplicate");

  Recharge refunded = claimed->recharge;
  refunded.set_status(recharge::v1::RECHARGE_STATUS_REFUNDED);
  refunded.mutable_refund()->set_provider_reference("re_1");
  auto done = Run(store_->CompleteRefund("rk-1", refunded));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(*done);
  EXPECT_EQ(Run(store_->GetRecharge("rch_refund-1"))->status(), recharge::v1::RECHARGE_STATUS_REFUNDED);
  auto events = Run(store_->ListEvents(before, 10));
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].event.type(), recharge::v1::RECHARGE_EVENT_REFUNDED);
  EXPECT_EQ((*events)[0].event.coins_delta(), -65);

  auto replay = Run(store_->BeginRefund(RefundOf("rk-1", "rch_refund-1")));
  EXPECT_EQ(replay->kind, RefundBegin::Kind::kReplay);
  EXPECT_EQ(replay->recharge.refund().provider_reference(), "re_1");
  auto again = Run(store_->BeginRefund(RefundOf("rk-3", "rch_refund-1")));
  EXPECT_EQ(again->kind, RefundBegin::Kind::kOtherRefund);
  EXPECT_TRUE(again->other_done);
  EXPECT_TRUE(Run(store_->ListStartedRefunds(std::chrono::system_clock::now() + std::chrono::seconds(1)))->empty());
  // Completing twice changes nothing more.
  EXPECT_FALSE(*Run(store_->CompleteRefund("rk-1", refunded)));
  EXPECT_EQ(*Run(store_->LatestEventSeq()), (*events)[0].seq);
}

TEST_P(LedgerTest, RefundOfAnythingButApprovedIsRefusedAndClaimsNothing) {
  KeyClaim c = LedgerClaim("refund-declined", "fp");
  ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, recharge::v1::RECHARGE_STATUS_DECLINED))).ok());
  auto refused = Run(store_->BeginRefund(RefundOf("rk-d", "rch_refund-declined")));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->kind, RefundBegin::Kind::kNotRefundable);
  EXPECT_EQ(refused->recharge.status(), recharge::v1::RECHARGE_STATUS_DECLINED);
  EXPECT_TRUE(Run(store_->ListStartedRefunds(std::chrono::system_clock::now() + std::chrono::seconds(1)))->empty());
  auto missing = Run(store_->BeginRefund(RefundOf("rk-m", "rch_nope")));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST_P(LedgerTest, ReleasedRefundFreesTheKeyAndTheRecharge) {
  KeyClaim c = LedgerClaim("refund-release", "fp");
  ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, RECHARGE_STATUS_APPROVED))).ok());
  ASSERT_EQ(Run(store_->BeginRefund(RefundOf("rk-r", "rch_refund-release")))->kind,
            RefundBegin::Kind::kClaimed);
  ASSERT_TRUE(Run(store_->ReleaseRefund("rk-r")).ok());
  EXPECT_EQ(Run(store_->GetRecharge("rch_refund-release"))->status(), RECHARGE_STATUS_APPROVED);
  EXPECT_EQ(Run(store_->BeginRefund(RefundOf("rk-r2", "rch_refund-release")))->kind,
            RefundBegin::Kind::kClaimed);
  // A recharge that left APPROVED meanwhile (a chargeback): the refund is
  // not recorded and its claim is released.
  Recharge charged_back = *Run(store_->GetRecharge("rch_refund-release"));
  charged_back.set_status(recharge::v1::RECHARGE_STATUS_CHARGED_BACK);
  ASSERT_TRUE(*Run(store_->Transition(charged_back, RecordRechargeResponse(), RECHARGE_STATUS_APPROVED)));
  Recharge refunded = charged_back;
  refunded.set_status(recharge::v1::RECHARGE_STATUS_REFUNDED);
  EXPECT_FALSE(*Run(store_->CompleteRefund("rk-r2", refunded)));
  EXPECT_EQ(Run(store_->GetRecharge("rch_refund-release"))->status(), recharge::v1::RECHARGE_STATUS_CHARGED_BACK);
  EXPECT_TRUE(Run(store_->ListStartedRefunds(std::chrono::system_clock::now() + std::chrono::seconds(1)))->empty());
}

TEST_P(LedgerTest, ANotificationChangesTheRechargeOnceWithOneEvent) {
  KeyClaim c = LedgerClaim("waiting-1", "fp");
  ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION))).ok());
  // A waiting recharge is the reconciler's, and found by its key.
  auto unresolved = Run(store_->ListUnresolved(std::chrono::system_clock::now()));
  ASSERT_TRUE(unresolved.ok());
  ASSERT_EQ(unresolved->size(), 1u);
  EXPECT_EQ((*unresolved)[0].recharge.status(), recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION);
  auto by_key = Run(store_->GetRechargeByKey("waiting-1"));
  ASSERT_TRUE(by_key.ok()) << by_key.status();
  EXPECT_EQ(by_key->recharge_id(), "rch_waiting-1");
  EXPECT_EQ(Run(store_->GetRechargeByKey("no-such-key")).status().code(),
            absl::StatusCode::kNotFound);
  // A key claimed and not completed: not recorded yet (a notification for it
  // is asked again, not dropped).
  ASSERT_EQ(Run(store_->Begin(LedgerClaim("in-flight-1", "fp")))->kind, Kind::kClaimed);
  EXPECT_EQ(Run(store_->GetRechargeByKey("in-flight-1")).status().code(),
            absl::StatusCode::kUnavailable);

  const NotificationRef ref{"gcash-ph", "EV-1"};
  EXPECT_FALSE(*Run(store_->NotificationSeen(ref)));
  Recharge approved = LedgerDone(c, RECHARGE_STATUS_APPROVED).recharge;
  RecordRechargeResponse response;
  response.set_recharge_id(approved.recharge_id());
  response.set_status(RECHARGE_STATUS_APPROVED);
  auto first = Run(store_->TransitionOnNotification(ref, approved, response,
                                                    recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, NotificationApplied::kApplied);
  EXPECT_TRUE(*Run(store_->NotificationSeen(ref)));
  // The same notification again: nothing changes, no second event.
  auto again = Run(store_->TransitionOnNotification(ref, approved, response,
                                                    recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, NotificationApplied::kReplay);
  // Another notification for the settled recharge: recorded, nothing changes.
  Recharge failed = LedgerDone(c, recharge::v1::RECHARGE_STATUS_FAILED).recharge;
  auto other = Run(store_->TransitionOnNotification({"gcash-ph", "EV-2"}, failed, response,
                                                    recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION));
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(*other, NotificationApplied::kNoChange);
  // The same event id from another instance is another notification.
  EXPECT_FALSE(*Run(store_->NotificationSeen({"dana-id", "EV-1"})));

  EXPECT_EQ(Run(store_->GetRecharge("rch_waiting-1"))->status(), RECHARGE_STATUS_APPROVED);
  auto events = Run(store_->ListEvents(0, 100));
  ASSERT_EQ(events->size(), 2u);  // DECIDED, then one SETTLED
  EXPECT_EQ((*events)[1].event.type(), recharge::v1::RECHARGE_EVENT_SETTLED);
  EXPECT_EQ(Run(store_->Begin(c))->stored.status(), RECHARGE_STATUS_APPROVED);
  // Nothing left waiting (the in-flight key above is younger than the cutoff).
  EXPECT_TRUE(Run(store_->ListUnresolved(std::chrono::system_clock::now() - std::chrono::hours(1)))
                  ->empty());
}

TEST_P(LedgerTest, AnArrowTheMachineRefusesRecordsNoNotification) {
  KeyClaim c = LedgerClaim("waiting-2", "fp");
  ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION))).ok());
  Recharge refunded = LedgerDone(c, recharge::v1::RECHARGE_STATUS_REFUNDED).recharge;
  auto refused = Run(store_->TransitionOnNotification(
      {"card-primary", "evt_1"}, refunded, RecordRechargeResponse(),
      recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(*Run(store_->NotificationSeen({"card-primary", "evt_1"})));
}

TEST_P(LedgerTest, PurgeKeepsTheKeysOfWaitingRecharges) {
  KeyClaim c = LedgerClaim("purge-waiting", "fp");
  ASSERT_EQ(Run(store_->Begin(c))->kind, Kind::kClaimed);
  ASSERT_TRUE(Run(store_->Complete(LedgerDone(c, recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION))).ok());
  EXPECT_EQ(*Run(store_->PurgeKeys(std::chrono::system_clock::now() + std::chrono::seconds(1))), 0);
  EXPECT_TRUE(Run(store_->GetRechargeByKey("purge-waiting")).ok());
}

// The PostgreSQL store's own faults: the server restarted, the server
// paused past the round-trip timeout. Each call answers (an error while the
// server is away, never a hang) and the store serves again once it is back.
class PostgresFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = Postgres().CreateDatabase("fault");
    auto s = Run(PostgresLedgerStore::Open(
        io_.executor(), {.conninfo = Postgres().conninfo(database_),
                             .timeout = std::chrono::milliseconds(500),
                             .reconnect_min = std::chrono::milliseconds(20),
                             .reconnect_max = std::chrono::milliseconds(100)}));
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  void TearDown() override {
    store_.reset();
    io_.Stop();
  }
  template <typename T>
  T Run(asio::awaitable<T> a) {
    return io_.Run(std::move(a));
  }
  // Begin(claim) until it answers OK (bounded: 30 s of attempts).
  absl::StatusOr<BeginResult> BeginWhenBack(const KeyClaim& claim) {
    absl::StatusOr<BeginResult> r = absl::UnavailableError("not tried");
    for (int i = 0; i < 300 && !r.ok(); ++i) {
      r = Run(store_->Begin(claim));
      if (!r.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(100));  // retry pause
    }
    return r;
  }

  testing::LedgerIo io_;
  std::string database_;
  std::unique_ptr<PostgresLedgerStore> store_;
};

TEST_F(PostgresFaultTest, CallsFailWhileTheServerIsDownAndSucceedOnceItIsBack) {
  ASSERT_EQ(Run(store_->Begin(LedgerClaim("before-restart", "fp")))->kind, Kind::kClaimed);
  Postgres().Stop();
  auto down = Run(store_->Begin(LedgerClaim("during-restart", "fp")));
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
  EXPECT_THAT(std::string(down.status().message()), ::testing::HasSubstr("ledger: postgres"));
  EXPECT_FALSE(Run(store_->GetRecharge("rch_before-restart")).ok());
  Postgres().Start();

  auto back = BeginWhenBack(LedgerClaim("during-restart", "fp"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kind, Kind::kClaimed);  // the failed attempt claimed nothing
  // What was committed before the restart is there.
  EXPECT_EQ(Run(store_->Begin(LedgerClaim("before-restart", "fp")))->kind, Kind::kInFlight);
  Completion done;
  done.idempotency_key = "before-restart";
  done.recharge = LedgerClaim("before-restart", "fp").draft;
  done.recharge.set_status(RECHARGE_STATUS_APPROVED);
  done.response.set_status(RECHARGE_STATUS_APPROVED);
  ASSERT_TRUE(Run(store_->Complete(done)).ok());
  EXPECT_EQ(Run(store_->Begin(LedgerClaim("before-restart", "fp")))->kind, Kind::kReplay);
}

TEST_F(PostgresFaultTest, APausedServerFailsCallsAtTheTimeoutNotAHang) {
  ASSERT_EQ(Run(store_->Begin(LedgerClaim("before-pause", "fp")))->kind, Kind::kClaimed);
  Postgres().Pause();
  auto paused = Run(store_->Begin(LedgerClaim("during-pause", "fp")));
  Postgres().Resume();
  ASSERT_FALSE(paused.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(paused.status()) || absl::IsUnavailable(paused.status()))
      << paused.status();
  auto back = BeginWhenBack(LedgerClaim("after-pause", "fp"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kind, Kind::kClaimed);
  EXPECT_EQ(Run(store_->Begin(LedgerClaim("before-pause", "fp")))->kind, Kind::kInFlight);
}

INSTANTIATE_TEST_SUITE_P(Backends, LedgerTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace recharge
