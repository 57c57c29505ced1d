#include "fraud/counter_store.h"

#include <openssl/sha.h>

#include <algorithm>
#include <charconv>

#include "io/crypto.h"
#include "io/log.h"
#include "io/redis_slot.h"
#include "io/when_all.h"
#include "io/strings.h"

namespace recharge {
namespace {

// One key per counter, whatever its number of buckets (a bucket is the
// integer now_ms / bucket_ms; the live ones are the last `buckets` of them):
//   count, sum  a hash: field = bucket, value = that bucket's count or sum;
//               buckets that left the window are deleted when read;
//   distinct    a sorted set: member = 8 bytes of the value's SHA-256,
//               score = the last bucket it was seen in; members that left
//               the window are removed when updated. Exact (but for 64-bit
//               hash collisions), up to 100,000 members (past that the
//               oldest are dropped, so the count stays at 100,000).
// The TTL (window + one bucket) is renewed when the key gets a new bucket or
// a member a newer score, which is all the renewal the data needs.
//
// KEYS: one per counter; then the keys whose existence is asked.
// ARGV: [1] number of counters; per counter: kind (c|s|d), current bucket,
//       buckets, ttl ms, value, update, gate ("" or "<i> <op> <number>":
//       update only if counter i of this call compares so); then the number
//       of existence keys.
//       update is 1 (update, then read), 0 (read) or 2 (read what it is and
//       what it would be after the update, "<now> <after>", and change
//       nothing: a gate in another hash slot decides later, see below).
//       Then links: the number LI of instruments' sellers sets to record the
//       seller in, and the number LS of members to add to the seller's
//       instruments set; if LI + LS > 0: the seller, now (ms), the window
//       (ms), and the LS members "<kind>:<value>".
// KEYS (links, after the existence keys): the LI instruments' sellers sets,
//       then (LS > 0) the seller's instruments set.
// Returns: one value per counter (as a string), then 0/1 per existence key,
//          then per instruments' sellers set the other sellers,
//          comma-separated.
constexpr std::string_view kUpdateAndRead = R"lua(
local n = tonumber(ARGV[1])
local a = 2
local out = {}
local cap = 100000
local function gate_open(gate)
  local gi, gop, gv = string.match(gate, '^(%d+) (%S+) (%S+)$')
  local x, v = tonumber(out[tonumber(gi)]), tonumber(gv)
  if gop == '>' then return x > v elseif gop == '>=' then return x >= v
  elseif gop == '<' then return x < v elseif gop == '<=' then return x <= v
  elseif gop == '==' then return x == v else return x ~= v end
end
for i = 1, n do
  local kind, cur, b, ttl, val, upd, gate = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
                                            ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  a = a + 7
  if upd == '1' and gate ~= '' and not gate_open(gate) then upd = '0' end
  local key, curs = KEYS[i], ARGV[a - 6]
  local oldest = cur - b + 1
  if upd == '2' then
    local now_value, after
    if kind == 'd' then
      now_value = redis.call('ZCOUNT', key, string.format('%d', oldest), '+inf')
      local seen = redis.call('ZSCORE', key, val)
      after = now_value
      if not seen or tonumber(seen) < oldest then after = math.min(now_value + 1, cap) end
    else
      now_value = 0
      local fields = redis.call('HGETALL', key)
      for j = 1, #fields, 2 do
        if tonumber(fields[j]) >= oldest then now_value = now_value + tonumber(fields[j + 1]) end
      end
      after = now_value + tonumber(val)
    end
    out[i] = tostring(now_value) .. ' ' .. tostring(after)
  elseif kind == 'd' then
    if upd == '1' then
      if redis.call('ZADD', key, 'CH', curs, val) == 1 then redis.call('PEXPIRE', key, ttl) end
      redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('(%d', oldest))
      local size = redis.call('ZCARD', key)
      if size > cap then redis.call('ZPOPMIN', key, size - cap); size = cap end
      out[i] = tostring(size)
    else
      out[i] = tostring(redis.call('ZCOUNT', key, string.format('%d', oldest), '+inf'))
    end
  else
    if upd == '1' then
      local now_value
      if kind == 'c' then now_value = redis.call('HINCRBY', key, curs, val)
      else now_value = redis.call('HINCRBYFLOAT', key, curs, val) end
      if tonumber(now_value) == tonumber(val) then redis.call('PEXPIRE', key, ttl) end
    end
    local total, stale = 0, {}
    local fields = redis.call('HGETALL', key)
    for j = 1, #fields, 2 do
      if tonumber(fields[j]) >= oldest then total = total + tonumber(fields[j + 1])
      else stale[#stale + 1] = fields[j] end
    end
    if #stale > 0 and upd == '1' then redis.call('HDEL', key, unpack(stale)) end
    out[i] = tostring(total)
  end
end
local k = n + 1
local m = tonumber(ARGV[a])
for j = 0, m - 1 do out[n + 1 + j] = redis.call('EXISTS', KEYS[k + j]) end
local li, ls = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
if li + ls > 0 then
  local seller, now, win = ARGV[a + 3], tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  for j = 1, li do
    local ikey = KEYS[k + m + j - 1]
    redis.call('ZADD', ikey, now, seller)
    redis.call('ZREMRANGEBYSCORE', ikey, '-inf', now - win)
    redis.call('PEXPIRE', ikey, win)
    local others = {}
    for _, s in ipairs(redis.call('ZRANGE', ikey, 0, 20)) do
      if s ~= seller then others[#others + 1] = s end
    end
    out[n + m + j] = table.concat(others, ',')
  end
  if ls > 0 then
    local skey = KEYS[k + m + li]
    for j = 1, ls do redis.call('ZADD', skey, now, ARGV[a + 5 + j]) end
    redis.call('ZREMRANGEBYSCORE', skey, '-inf', now - win)
    redis.call('PEXPIRE', skey, win)
  end
end
return out
)lua";

std::string Sha1Hex(std::string_view text) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

const std::string& ScriptSha() {
  static const std::string sha = Sha1Hex(kUpdateAndRead);
  return sha;
}

int64_t Millis(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// The entity tag of a counter key: one hash slot per entity.
std::string EntityTag(const std::string& field, const std::string& value) {
  if (field == "user_id") return StrCat("{u:", value, "}");
  if (field == "seller_id") return StrCat("{s:", value, "}");
  if (field == "card_fingerprint") return StrCat("{c:", value, "}");
  if (field == "instrument_fingerprint") return StrCat("{i:", value, "}");
  if (field == "device_id") return StrCat("{d:", value, "}");
  if (field == "ip") return StrCat("{ip:", value, "}");
  return StrCat("{", field, ":", value, "}");
}

// How a counter is sent: its `update` ARGV (see the script).
enum class Mode { kRead, kUpdate, kDeferred };

void AppendBucketArgs(const CounterUpdate& c, std::chrono::system_clock::time_point now, Mode mode,
                      const std::string& gate, std::vector<std::string>* keys,
                      std::vector<std::string>* args) {
  const int64_t bucket_ms = std::max<int64_t>(1, c.window.count() / std::max(1, c.buckets));
  const int64_t current = Millis(now) / bucket_ms;
  keys->push_back(c.key);
  const char* kind = c.kind == CounterUpdate::Kind::kCount ? "c"
                     : c.kind == CounterUpdate::Kind::kSum ? "s"
                                                           : "d";
  args->push_back(kind);
  args->push_back(std::to_string(current));
  args->push_back(std::to_string(c.buckets));
  args->push_back(std::to_string(c.window.count() + bucket_ms));
  if (c.kind == CounterUpdate::Kind::kDistinct) {
    // A distinct value is kept as the first 8 bytes of its SHA-256: small and
    // fixed-size whatever the value, nothing of the value itself in Redis,
    // and a collision among 100,000 values has odds of about 3e-10.
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(c.value.data()), c.value.size(), digest);
    args->emplace_back(reinterpret_cast<const char*>(digest), 8);
  } else {
    args->push_back(c.kind == CounterUpdate::Kind::kCount && c.value.empty() ? "1" : c.value);
  }
  args->push_back(mode == Mode::kRead ? "0" : mode == Mode::kUpdate ? "1" : "2");
  args->push_back(gate);
}

// A parsed CounterUpdate::gate: counter `source` (0-based) compares to `value`.
struct Gate {
  size_t source = 0;
  std::string op;
  double value = 0;
  std::string number;  // `value` as written
};

std::optional<Gate> ParseGate(const std::string& text) {
  const size_t a = text.find(' ');
  const size_t b = a == std::string::npos ? a : text.find(' ', a + 1);
  if (b == std::string::npos) return std::nullopt;
  size_t index = 0;
  auto [p, e] = std::from_chars(text.data(), text.data() + a, index);
  if (e != std::errc() || p != text.data() + a || index == 0) return std::nullopt;
  Gate g;
  g.source = index - 1;
  g.op = text.substr(a + 1, b - a - 1);
  g.number = text.substr(b + 1);
  auto [q, f] = std::from_chars(text.data() + b + 1, text.data() + text.size(), g.value);
  if (f != std::errc() || q != text.data() + text.size()) return std::nullopt;
  static const char* const kOps[] = {">", ">=", "<", "<=", "==", "!="};
  if (std::find(std::begin(kOps), std::end(kOps), g.op) == std::end(kOps)) return std::nullopt;
  return g;
}

// The script's gate_open, for a gate decided here.
bool GateOpen(const Gate& g, double x) {
  if (g.op == ">") return x > g.value;
  if (g.op == ">=") return x >= g.value;
  if (g.op == "<") return x < g.value;
  if (g.op == "<=") return x <= g.value;
  if (g.op == "==") return x == g.value;
  return x != g.value;
}

// One script call of a request: the keys of one hash slot.
struct SlotCall {
  uint16_t slot = 0;
  std::vector<size_t> counters;     // indices into the request's counters
  std::vector<size_t> checks;       // into its existence keys
  std::vector<size_t> instruments;  // into its link instruments
  bool seller_instruments = false;  // the seller's instruments set lives here
};

absl::StatusOr<double> ParseNumber(const RedisReply& r) {
  if (r.type == RedisReply::Type::kInteger) return static_cast<double>(r.integer);
  if (r.type == RedisReply::Type::kString) {
    double v = 0;
    auto [ptr, ec] = std::from_chars(r.str.data(), r.str.data() + r.str.size(), v);
    if (ec == std::errc()) return v;
  }
  return absl::InternalError("redis: unexpected counter value");
}

}  // namespace

RedisCounterStore::RedisCounterStore(RedisCommands& redis, std::string prefix,
                                     std::chrono::milliseconds timeout)
    : redis_(redis), prefix_(std::move(prefix)), timeout_(timeout) {}

std::chrono::steady_clock::time_point RedisCounterStore::Deadline() const {
  return std::chrono::steady_clock::now() + timeout_;
}

std::string RedisCounterStore::SellerFlagKey(const std::string& seller_id) const {
  return StrCat(prefix_, ":{s:", seller_id, "}:flag");
}
std::string RedisCounterStore::CardBlockKey(const std::string& card_fingerprint) const {
  return StrCat(prefix_, ":{c:", card_fingerprint, "}:blocked");
}
std::string RedisCounterStore::DeviceBlockKey(const std::string& device_id) const {
  return StrCat(prefix_, ":{d:", device_id, "}:blocked");
}
std::string RedisCounterStore::InstrumentSellersKey(const std::string& kind,
                                                   const std::string& value) const {
  return StrCat(prefix_, ":", EntityTag(kind, value), ":sellers");
}
std::string RedisCounterStore::SellerInstrumentsKey(const std::string& seller_id) const {
  return StrCat(prefix_, ":{s:", seller_id, "}:instruments");
}
std::string RedisCounterStore::CounterKey(const std::string& per_field, const std::string& per_value,
                                          const std::string& counter_name) const {
  return StrCat(prefix_, ":", EntityTag(per_field, per_value), ":", counter_name);
}

asio::awaitable<absl::StatusOr<RedisReply>> RedisCounterStore::Eval(std::vector<std::string> keys,
                                                                    std::vector<std::string> args) {
  std::vector<std::string> command = {"EVALSHA", ScriptSha(), std::to_string(keys.size())};
  command.insert(command.end(), keys.begin(), keys.end());
  command.insert(command.end(), args.begin(), args.end());
  const auto deadline = Deadline();
  absl::StatusOr<RedisReply> r = co_await redis_.Command(command, deadline);
  if (r.ok() && r->type == RedisReply::Type::kError && r->str.rfind("NOSCRIPT", 0) == 0) {
    // First call on this server (or it restarted, or on a cluster the slot
    // is being imported by a node that never ran it): send the script itself
    // once, which also caches it there for the next EVALSHA. EVAL carries
    // its script, so it works on whichever node a redirect leads to.
    command[0] = "EVAL";
    command[1] = std::string(kUpdateAndRead);
    r = co_await redis_.Command(std::move(command), deadline);
  }
  if (r.ok() && r->type == RedisReply::Type::kError) {
    co_return absl::InternalError(StrCat("redis: ", r->str));
  }
  co_return r;
}

asio::awaitable<absl::StatusOr<CounterReadout>> RedisCounterStore::UpdateAndRead(
    std::vector<CounterUpdate> counters, std::vector<std::string> check_keys,
    std::chrono::system_clock::time_point now, std::optional<LinkUpdate> links) {
  const size_t n_links =
      links && !links->seller_id.empty() ? links->instruments.size() : 0;
  // Group the keys by hash slot: one script call per slot (one call in all
  // on a single server), the calls sent at once.
  const bool sharded = redis_.sharded();
  std::vector<SlotCall> calls;
  auto call_for = [&](const std::string& key) -> SlotCall& {
    const uint16_t slot = sharded ? RedisKeySlot(key) : 0;
    for (SlotCall& c : calls) {
      if (c.slot == slot) return c;
    }
    calls.emplace_back().slot = slot;
    return calls.back();
  };
  // A gate on a counter of another slot (or on a deferred one) cannot be
  // decided in the script: that counter is read as it is and as it would be,
  // the gate decided here, and the update sent afterwards (deferred).
  std::vector<Mode> modes(counters.size(), Mode::kRead);
  std::vector<std::optional<Gate>> gates(counters.size());
  std::vector<size_t> call_of(counters.size());
  for (size_t i = 0; i < counters.size(); ++i) {
    const CounterUpdate& c = counters[i];
    SlotCall& call = call_for(c.key);
    call_of[i] = static_cast<size_t>(&call - calls.data());
    call.counters.push_back(i);
    if (!c.update) continue;
    modes[i] = Mode::kUpdate;
    // One server: one script holds every counter, the gate goes as it is.
    if (c.gate.empty() || !sharded) continue;
    gates[i] = ParseGate(c.gate);
    if (!gates[i] || gates[i]->source >= i) {
      co_return absl::InternalError(StrCat("counter ", c.key, ": bad gate \"", c.gate, "\""));
    }
    const size_t source = gates[i]->source;
    if (call_of[source] != call_of[i] || modes[source] == Mode::kDeferred) modes[i] = Mode::kDeferred;
  }
  for (size_t j = 0; j < check_keys.size(); ++j) call_for(check_keys[j]).checks.push_back(j);
  std::vector<std::string> instrument_keys;
  for (size_t j = 0; j < n_links; ++j) {
    const LinkUpdate::Instrument& in = links->instruments[j];
    instrument_keys.push_back(InstrumentSellersKey(in.kind, in.value));
    call_for(instrument_keys.back()).instruments.push_back(j);
  }
  const std::string seller_key = n_links > 0 ? SellerInstrumentsKey(links->seller_id) : "";
  if (n_links > 0) call_for(seller_key).seller_instruments = true;

  std::vector<asio::awaitable<absl::StatusOr<RedisReply>>> sends;
  for (const SlotCall& call : calls) {
    std::vector<std::string> keys;
    std::vector<std::string> args = {std::to_string(call.counters.size())};
    for (size_t i : call.counters) {
      std::string gate;
      if (modes[i] == Mode::kUpdate && gates[i]) {
        // The source is in this call: its 1-based place here.
        const auto at = std::find(call.counters.begin(), call.counters.end(), gates[i]->source);
        gate = StrCat(at - call.counters.begin() + 1, " ", gates[i]->op, " ", gates[i]->number);
      } else if (modes[i] == Mode::kUpdate) {
        gate = counters[i].gate;  // one server: the call's places are the request's
      }
      AppendBucketArgs(counters[i], now, modes[i], gate, &keys, &args);
    }
    args.push_back(std::to_string(call.checks.size()));
    for (size_t j : call.checks) keys.push_back(check_keys[j]);
    args.push_back(std::to_string(call.instruments.size()));
    args.push_back(call.seller_instruments ? std::to_string(n_links) : "0");
    if (!call.instruments.empty() || call.seller_instruments) {
      args.push_back(links->seller_id);
      args.push_back(std::to_string(Millis(now)));
      args.push_back(std::to_string(links->window.count()));
      for (size_t j : call.instruments) keys.push_back(instrument_keys[j]);
      if (call.seller_instruments) {
        keys.push_back(seller_key);
        for (const LinkUpdate::Instrument& in : links->instruments) {
          args.push_back(StrCat(in.kind, ":", in.value));
        }
      }
    }
    sends.push_back(Eval(std::move(keys), std::move(args)));
  }
  std::vector<absl::StatusOr<RedisReply>> replies;
  if (sends.size() == 1) {
    replies.push_back(co_await std::move(sends.front()));
  } else {
    replies = co_await WhenAll(std::move(sends));
  }

  CounterReadout out;
  out.values.assign(counters.size(), 0);
  out.exists.assign(check_keys.size(), false);
  out.linked.resize(n_links);
  std::vector<double> after(counters.size(), 0);  // deferred counters: the value if updated
  for (size_t k = 0; k < calls.size(); ++k) {
    const SlotCall& call = calls[k];
    absl::StatusOr<RedisReply>& r = replies[k];
    if (!r.ok()) co_return r.status();
    if (r->type != RedisReply::Type::kArray ||
        r->elements.size() != call.counters.size() + call.checks.size() + call.instruments.size()) {
      co_return absl::InternalError("redis: unexpected script reply");
    }
    size_t e = 0;
    for (size_t i : call.counters) {
      const RedisReply& element = r->elements[e++];
      if (modes[i] == Mode::kDeferred) {
        const size_t space = element.str.find(' ');
        RedisReply now_value, after_value;
        now_value.type = after_value.type = RedisReply::Type::kString;
        now_value.str = element.str.substr(0, space);
        after_value.str = space == std::string::npos ? "" : element.str.substr(space + 1);
        absl::StatusOr<double> a = ParseNumber(now_value);
        absl::StatusOr<double> b = ParseNumber(after_value);
        if (!a.ok() || !b.ok()) co_return absl::InternalError("redis: unexpected counter value");
        out.values[i] = *a;
        after[i] = *b;
        continue;
      }
      absl::StatusOr<double> v = ParseNumber(element);
      if (!v.ok()) co_return v.status();
      out.values[i] = *v;
    }
    for (size_t j : call.checks) out.exists[j] = r->elements[e++].integer != 0;
    for (size_t j : call.instruments) {
      const std::string& joined = r->elements[e++].str;
      std::vector<std::string>& others = out.linked[j];
      size_t start = 0;
      while (start < joined.size()) {
        const size_t comma = joined.find(',', start);
        const size_t end = comma == std::string::npos ? joined.size() : comma;
        if (end > start) others.push_back(joined.substr(start, end - start));
        start = end + 1;
      }
    }
  }
  // The deferred gates, in order (a gate's source comes before it), and the
  // updates they let through, sent without holding up the decision.
  std::vector<CounterUpdate> deferred;
  for (size_t i = 0; i < counters.size(); ++i) {
    if (modes[i] != Mode::kDeferred || !GateOpen(*gates[i], out.values[gates[i]->source])) continue;
    out.values[i] = after[i];
    CounterUpdate update = counters[i];
    update.gate.clear();
    deferred.push_back(std::move(update));
  }
  if (!deferred.empty()) {
    ++deferred_in_flight_;
    asio::co_spawn(co_await asio::this_coro::executor, ApplyDeferred(std::move(deferred), now),
                   asio::detached);
  }
  co_return out;
}

asio::awaitable<void> RedisCounterStore::ApplyDeferred(std::vector<CounterUpdate> updates,
                                                       std::chrono::system_clock::time_point now) {
  std::vector<std::string> no_checks;
  absl::StatusOr<CounterReadout> r = co_await UpdateAndRead(std::move(updates), no_checks, now);
  if (!r.ok()) LogWarn("counter_update_failed", {{"error", std::string(r.status().message())}});
  --deferred_in_flight_;
}

asio::awaitable<absl::StatusOr<std::vector<LinkedSeller>>> RedisCounterStore::LinkedSellers(
    std::string seller_id, std::chrono::milliseconds window,
    std::chrono::system_clock::time_point now) {
  const std::string since = std::to_string(Millis(now) - window.count());
  std::vector<std::string> range = {"ZRANGEBYSCORE", SellerInstrumentsKey(seller_id), since, "+inf"};
  absl::StatusOr<RedisReply> members = co_await redis_.Command(std::move(range), Deadline());
  if (!members.ok()) co_return members.status();
  std::vector<LinkedSeller> out;
  for (const RedisReply& m : members->elements) {
    const size_t colon = m.str.find(':');
    if (colon == std::string::npos) continue;
    const std::string kind = m.str.substr(0, colon);
    std::vector<std::string> sellers = {"ZRANGEBYSCORE",
                                        InstrumentSellersKey(kind, m.str.substr(colon + 1)),
                                        since, "+inf"};
    absl::StatusOr<RedisReply> users = co_await redis_.Command(std::move(sellers), Deadline());
    if (!users.ok()) co_return users.status();
    for (const RedisReply& other : users->elements) {
      if (other.str == seller_id) continue;
      auto it = std::find_if(out.begin(), out.end(),
                             [&](const LinkedSeller& l) { return l.seller_id == other.str; });
      if (it == out.end()) it = out.insert(out.end(), LinkedSeller{other.str, {}, 0});
      ++it->shared;
      if (std::find(it->by.begin(), it->by.end(), kind) == it->by.end()) it->by.push_back(kind);
    }
  }
  co_return out;
}

asio::awaitable<absl::Status> RedisCounterStore::Increment(std::vector<CounterUpdate> counters,
                                                           std::chrono::system_clock::time_point now) {
  std::vector<std::string> no_checks;
  absl::StatusOr<CounterReadout> r = co_await UpdateAndRead(std::move(counters), no_checks, now);
  co_return r.status();
}

asio::awaitable<absl::StatusOr<std::vector<double>>> RedisCounterStore::Read(
    std::vector<CounterUpdate> counters, std::chrono::system_clock::time_point now) {
  for (CounterUpdate& c : counters) c.update = false;
  std::vector<std::string> no_checks;
  absl::StatusOr<CounterReadout> r = co_await UpdateAndRead(std::move(counters), no_checks, now);
  if (!r.ok()) co_return r.status();
  co_return std::move(r->values);
}

asio::awaitable<absl::Status> RedisCounterStore::FlagSeller(SellerFlag flag) {
  const std::string key = SellerFlagKey(flag.seller_id);
  const int64_t ttl = std::max<int64_t>(1, flag.expires_at_ms - flag.flagged_at_ms);
  const auto deadline = Deadline();
  std::vector<std::string> hset = {"HSET", key, "rule_id", flag.rule_id, "reason", flag.reason,
                                   "flagged_at", std::to_string(flag.flagged_at_ms),
                                   "expires_at", std::to_string(flag.expires_at_ms)};
  absl::StatusOr<RedisReply> a = co_await redis_.Command(std::move(hset), deadline);
  if (!a.ok()) co_return a.status();
  std::vector<std::string> expire = {"PEXPIRE", key, std::to_string(ttl)};
  absl::StatusOr<RedisReply> b = co_await redis_.Command(std::move(expire), deadline);
  if (!b.ok()) co_return b.status();
  // An index of flagged sellers for ListFlaggedSellers, scored by expiry.
  std::vector<std::string> zadd = {"ZADD", StrCat(prefix_, ":flagged"),
                                   std::to_string(flag.expires_at_ms), flag.seller_id};
  absl::StatusOr<RedisReply> c = co_await redis_.Command(std::move(zadd), deadline);
  if (!c.ok()) co_return c.status();
  // The index lives as long as its longest flag (GT: only ever extended).
  std::vector<std::string> expire_index = {"PEXPIREAT", StrCat(prefix_, ":flagged"),
                                           std::to_string(flag.expires_at_ms), "GT"};
  absl::StatusOr<RedisReply> d = co_await redis_.Command(std::move(expire_index), deadline);
  if (d.ok() && d->type == RedisReply::Type::kInteger && d->integer == 0) {
    // GT does not set an expiry on a key that has none (a new index).
    std::vector<std::string> nx = {"PEXPIREAT", StrCat(prefix_, ":flagged"),
                                   std::to_string(flag.expires_at_ms), "NX"};
    d = co_await redis_.Command(std::move(nx), deadline);
  }
  co_return d.status();
}

asio::awaitable<absl::StatusOr<std::optional<SellerFlag>>> RedisCounterStore::GetFlag(
    std::string seller_id) {
  std::vector<std::string> hgetall = {"HGETALL", SellerFlagKey(seller_id)};
  absl::StatusOr<RedisReply> r = co_await redis_.Command(std::move(hgetall), Deadline());
  if (!r.ok()) co_return r.status();
  if (r->type != RedisReply::Type::kArray || r->elements.empty()) {
    co_return std::optional<SellerFlag>();
  }
  SellerFlag f;
  f.seller_id = seller_id;
  for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
    const std::string& field = r->elements[i].str;
    const std::string& value = r->elements[i + 1].str;
    if (field == "rule_id") f.rule_id = value;
    if (field == "reason") f.reason = value;
    if (field == "flagged_at") std::from_chars(value.data(), value.data() + value.size(), f.flagged_at_ms);
    if (field == "expires_at") std::from_chars(value.data(), value.data() + value.size(), f.expires_at_ms);
  }
  co_return std::optional<SellerFlag>(std::move(f));
}

asio::awaitable<absl::StatusOr<std::vector<SellerFlag>>> RedisCounterStore::ListFlags(int64_t now_ms) {
  const std::string index = StrCat(prefix_, ":flagged");
  std::vector<std::string> prune = {"ZREMRANGEBYSCORE", index, "-inf", std::to_string(now_ms)};
  absl::StatusOr<RedisReply> pruned = co_await redis_.Command(std::move(prune), Deadline());
  if (!pruned.ok()) co_return pruned.status();
  std::vector<std::string> range = {"ZRANGE", index, "0", "-1"};
  absl::StatusOr<RedisReply> members = co_await redis_.Command(std::move(range), Deadline());
  if (!members.ok()) co_return members.status();
  std::vector<SellerFlag> out;
  for (const RedisReply& m : members->elements) {
    absl::StatusOr<std::optional<SellerFlag>> f = co_await GetFlag(m.str);
    if (!f.ok()) co_return f.status();
    if (*f) out.push_back(**f);
  }
  co_return out;
}

asio::awaitable<absl::StatusOr<bool>> RedisCounterStore::ClearFlag(std::string seller_id) {
  std::vector<std::string> del = {"DEL", SellerFlagKey(seller_id)};
  absl::StatusOr<RedisReply> r = co_await redis_.Command(std::move(del), Deadline());
  if (!r.ok()) co_return r.status();
  std::vector<std::string> zrem = {"ZREM", StrCat(prefix_, ":flagged"), seller_id};
  absl::StatusOr<RedisReply> z = co_await redis_.Command(std::move(zrem), Deadline());
  if (!z.ok()) co_return z.status();
  co_return r->integer > 0;
}

asio::awaitable<absl::Status> RedisCounterStore::Block(std::string key,
                                                       std::chrono::milliseconds ttl) {
  std::vector<std::string> set = {"SET", key, "1", "PX", std::to_string(ttl.count())};
  absl::StatusOr<RedisReply> r = co_await redis_.Command(std::move(set), Deadline());
  co_return r.status();
}

}  // namespace recharge
