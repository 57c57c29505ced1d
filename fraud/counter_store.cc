#include "fraud/counter_store.h"

#include <openssl/sha.h>

#include <algorithm>
#include <charconv>

#include "io/crypto.h"
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
//       buckets, ttl ms, value, update (1|0), gate ("" or "<i> <op> <number>":
//       update only if counter i of this call compares so); then the number
//       of existence keys.
//       Then the number of link instruments L; if L > 0: the seller, now
//       (ms), the window (ms), and per instrument its member "<kind>:<value>".
// KEYS (links, after the existence keys): the seller's instruments set, then
//       per instrument its sellers set.
// Returns: one value per counter (as a string), then 0/1 per existence key,
//          then per link instrument the other sellers, comma-separated.
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
  if kind == 'd' then
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
local l = tonumber(ARGV[a + 1] or '0')
if l > 0 then
  local seller, now, win = ARGV[a + 2], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local skey = KEYS[k + m]
  for j = 1, l do
    local ikey = KEYS[k + m + j]
    redis.call('ZADD', ikey, now, seller)
    redis.call('ZREMRANGEBYSCORE', ikey, '-inf', now - win)
    redis.call('PEXPIRE', ikey, win)
    redis.call('ZADD', skey, now, ARGV[a + 4 + j])
    local others = {}
    for _, s in ipairs(redis.call('ZRANGE', ikey, 0, 20)) do
      if s ~= seller then others[#others + 1] = s end
    end
    out[n + m + j] = table.concat(others, ',')
  end
  redis.call('ZREMRANGEBYSCORE', skey, '-inf', now - win)
  redis.call('PEXPIRE', skey, win)
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

void AppendBucketArgs(const CounterUpdate& c, std::chrono::system_clock::time_point now,
                      std::vector<std::string>* keys, std::vector<std::string>* args) {
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
  args->push_back(c.update ? "1" : "0");
  args->push_back(c.gate);
}

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
    // First call on this server (or it restarted): load the script, retry once.
    // On a cluster, SCRIPT LOAD goes to the node that serves the script's keys.
    std::vector<std::string> load = {"SCRIPT", "LOAD", std::string(kUpdateAndRead)};
    std::string route_key = keys.empty() ? std::string() : keys.front();
    absl::StatusOr<RedisReply> loaded =
        co_await redis_.Command(std::move(load), deadline, std::move(route_key));
    if (!loaded.ok()) co_return loaded.status();
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
  std::vector<std::string> keys;
  std::vector<std::string> args = {std::to_string(counters.size())};
  for (const CounterUpdate& c : counters) AppendBucketArgs(c, now, &keys, &args);
  args.push_back(std::to_string(check_keys.size()));
  keys.insert(keys.end(), check_keys.begin(), check_keys.end());
  const size_t n_links =
      links && !links->seller_id.empty() ? links->instruments.size() : 0;
  args.push_back(std::to_string(n_links));
  if (n_links > 0) {
    args.push_back(links->seller_id);
    args.push_back(std::to_string(Millis(now)));
    args.push_back(std::to_string(links->window.count()));
    keys.push_back(SellerInstrumentsKey(links->seller_id));
    for (const LinkUpdate::Instrument& in : links->instruments) {
      keys.push_back(InstrumentSellersKey(in.kind, in.value));
      args.push_back(StrCat(in.kind, ":", in.value));
    }
  }
  absl::StatusOr<RedisReply> r = co_await Eval(std::move(keys), std::move(args));
  if (!r.ok()) co_return r.status();
  if (r->type != RedisReply::Type::kArray ||
      r->elements.size() != counters.size() + check_keys.size() + n_links) {
    co_return absl::InternalError("redis: unexpected script reply");
  }
  CounterReadout out;
  for (size_t i = 0; i < counters.size(); ++i) {
    absl::StatusOr<double> v = ParseNumber(r->elements[i]);
    if (!v.ok()) co_return v.status();
    out.values.push_back(*v);
  }
  for (size_t i = 0; i < check_keys.size(); ++i) {
    out.exists.push_back(r->elements[counters.size() + i].integer != 0);
  }
  for (size_t i = 0; i < n_links; ++i) {
    const std::string& joined = r->elements[counters.size() + check_keys.size() + i].str;
    std::vector<std::string>& others = out.linked.emplace_back();
    size_t start = 0;
    while (start < joined.size()) {
      const size_t comma = joined.find(',', start);
      const size_t end = comma == std::string::npos ? joined.size() : comma;
      if (end > start) others.push_back(joined.substr(start, end - start));
      start = end + 1;
    }
  }
  co_return out;
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
