// The small HTTP abstraction the sandbox's provider APIs are written against:
// a parsed Request, the Response a handler returns, a Router from (method,
// path pattern) to handlers, and the encoding helpers every API shares
// (compact ASCII JSON, form/query decoding, strict UTF-8). The TLS and socket
// side lives in server.h; handlers never see a socket.
//
// Thread-safety: Router is immutable once built and may dispatch from any
// thread; the free functions are pure.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/asio.h"

namespace recharge::sandbox {

using Json = nlohmann::ordered_json;

// What a handler may ask of the connection it runs on.
class RequestContext {
 public:
  virtual ~RequestContext() = default;
  // Sleeps `seconds` on a timer (never a thread). Returns false when the
  // sandbox is stopping and the request must be abandoned.
  virtual asio::awaitable<bool> Sleep(double seconds) = 0;
};

struct Request {
  std::string_view method;   // "GET", "POST", ...
  std::string_view target;   // the request target exactly as sent
  std::string_view path;     // target without "?query" / "#fragment"
  std::string_view query;    // raw, after '?'
  std::string_view body;
  std::string_view client;   // peer address
  // Header lookup, case-insensitive; first value of a repeated header.
  std::function<std::optional<std::string_view>(std::string_view)> header;
  std::vector<std::string_view> path_params;  // the '*' segments of the route
  RequestContext* context = nullptr;
};

struct Response {
  int status = 200;
  std::string body;  // JSON unless content_type says otherwise
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  // What the access log shows as the idempotency key (never card data or a
  // secret); nullopt: the server picks it from the request.
  std::optional<std::string> log_key;
  bool replayed = false;
  // Close the connection without any response (fault injection, or a
  // request abandoned at shutdown); drop_reason goes to the log line.
  bool drop = false;
  std::string drop_reason;

  static Response FromJson(int status, const Json& body,
                           std::vector<std::pair<std::string, std::string>> headers = {});
  // A small HTML page (the sandbox's 3-D Secure and wallet approval pages).
  static Response Html(int status, std::string html);
  static Response Drop(std::string reason);
};

// Deterministic compact JSON, non-ASCII escaped: the same object always
// gives the same bytes (replays are byte-identical).
std::string JsonBytes(const Json& value);

// Appends compact JSON to a string, non-ASCII escaped: the same bytes as
// JsonBytes for the same members in the same order, without building a Json
// (for the hot paths: a charge's answer and its journal line).
class JsonWriter {
 public:
  explicit JsonWriter(std::string* out) : out_(out) {}
  JsonWriter& BeginObject() { return Open('{'); }
  JsonWriter& EndObject() { return Close('}'); }
  JsonWriter& BeginArray() { return Open('['); }
  JsonWriter& EndArray() { return Close(']'); }
  JsonWriter& Key(std::string_view key);  // then exactly one value
  JsonWriter& String(std::string_view value);  // REQUIRES: valid UTF-8
  JsonWriter& Int(int64_t value);
  JsonWriter& Double(double value);  // shortest round-trip, always with a '.'
  JsonWriter& Bool(bool value);
  JsonWriter& Null();
  JsonWriter& Raw(std::string_view json);  // an already encoded value

 private:
  JsonWriter& Open(char c);
  JsonWriter& Close(char c);
  void BeforeValue();
  std::string* out_;
  bool after_key_ = false;
  int depth_ = 0;
  bool need_comma_[16] = {};
};

// Stripe-style error envelope {"error":{"type","code",<extra...>,"message"}}.
Response ErrorResponse(int status, std::string_view type, std::string_view code,
                       std::string_view message, Json extra = Json::object(),
                       std::vector<std::pair<std::string, std::string>> headers = {});

// 500 {"error":{"type":"api_error","code":"internal_error","charged":false}}:
// a failure before anything was charged (injected, or a handler's exception).
Response InternalError();

using Handler = std::function<asio::awaitable<Response>(Request&)>;

// Routes (method, pattern) to handlers. A pattern is a path whose segments
// are literals or '*' (one non-empty segment, captured in path_params).
// A path that matches with another method is 405 (with Allow), no match 404.
class Router {
 public:
  // `api_index` >= 0: a request routed here is counted for that API.
  void Add(std::string method, std::string pattern, Handler handler, int api_index = -1);

  struct Match {
    const Handler* handler = nullptr;  // null: `error` is the answer
    int api_index = -1;
    Response error;
  };
  Match Find(Request& request) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    Handler handler;
    int api_index;
  };
  std::vector<Route> routes_;
};

// True if `text` is well-formed UTF-8 (no overlongs, surrogates or code
// points above U+10FFFF), as Python's strict decoder demands.
bool ValidUtf8(std::string_view text);
// Number of code points of valid UTF-8 text.
size_t Utf8Length(std::string_view text);
// The first `n` code points of valid UTF-8 text.
std::string_view Utf8Prefix(std::string_view text, size_t n);

// application/x-www-form-urlencoded pairs the way Python's parse_qsl does
// with keep_blank_values=True: '&'-separated, empty parts skipped, a part
// without '=' has an empty value, '+' is a space, %XX decoded (malformed
// escapes kept as they are). Returns nullopt when `strict_utf8` and a
// decoded name or value is not valid UTF-8.
using FormPairs = std::vector<std::pair<std::string, std::string>>;
std::optional<FormPairs> ParseForm(std::string_view text, bool strict_utf8);
// All values of `name` in a query string.
std::vector<std::string> QueryValues(std::string_view query, std::string_view name);
// The form a page's button posts (the sandbox's HTML pages): form-encoded
// UTF-8 of at most 4 KiB, or nullopt.
std::optional<FormPairs> ParsePageForm(const Request& req);

// The Luhn check over a string of ASCII digits.
bool LuhnValid(std::string_view digits);

// True if every character is printable ASCII other than space (0x21..0x7e).
bool IsVisibleAscii(std::string_view text);
bool IsAsciiDigits(std::string_view text);  // non-empty, all '0'..'9'

// `text` without leading and trailing ASCII whitespace.
std::string_view TrimSpace(std::string_view text);
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
// "Scheme credentials" of an Authorization header, trimmed the way Python's
// strip()/partition(" ") does: {scheme, credentials}.
std::pair<std::string_view, std::string_view> SplitAuthorization(
    std::optional<std::string_view> header);

// Constant-time equality (length may leak).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// Seconds since the epoch, with sub-second precision.
double NowSeconds();
// "2024-05-01T12:00:00Z" for int(ts).
std::string IsoTime(double ts);

// `text` escaped for HTML text and attribute values (& < > " ').
std::string HtmlEscape(std::string_view text);
// The start of every HTML page of the sandbox, up to the <title>.
inline constexpr std::string_view kHtmlHead =
    "<!doctype html>\n<html><head><meta charset=\"utf-8\">";
// A page with a title (<h1 id="title">) and one message (<p id="message">):
// the answers and errors of the sandbox's pages.
Response HtmlPage(int status, std::string_view title, std::string_view message);

// Lower-cased media type of a Content-Type value ("Application/JSON; x" ->
// "application/json").
std::string MediaType(std::optional<std::string_view> content_type);

}  // namespace recharge::sandbox
