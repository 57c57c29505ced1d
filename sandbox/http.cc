#include "sandbox/http.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cctype>
#include <chrono>
#include <ctime>
#include <set>

namespace recharge::sandbox {

Response Response::FromJson(int status, const Json& body,
                            std::vector<std::pair<std::string, std::string>> headers) {
  Response r;
  r.status = status;
  r.body = JsonBytes(body);
  r.headers = std::move(headers);
  return r;
}

Response Response::Html(int status, std::string html) {
  Response r;
  r.status = status;
  r.body = std::move(html);
  r.content_type = "text/html; charset=utf-8";
  return r;
}

Response Response::Drop(std::string reason) {
  Response r;
  r.drop = true;
  r.drop_reason = std::move(reason);
  return r;
}

std::string JsonBytes(const Json& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/true, Json::error_handler_t::replace);
}

void JsonWriter::BeforeValue() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (depth_ > 0) {
    if (need_comma_[depth_]) out_->push_back(',');
    need_comma_[depth_] = true;
  }
}

JsonWriter& JsonWriter::Open(char c) {
  BeforeValue();
  out_->push_back(c);
  ++depth_;
  need_comma_[depth_] = false;
  return *this;
}

JsonWriter& JsonWriter::Close(char c) {
  out_->push_back(c);
  --depth_;
  return *this;
}

JsonWriter& JsonWriter::Key(std::string_view key) {
  String(key);
  out_->push_back(':');
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::String(std::string_view value) {
  BeforeValue();
  static constexpr char kHex[] = "0123456789abcdef";
  auto escape_unit = [this](uint32_t u) {
    char buf[6] = {'\\', 'u', kHex[(u >> 12) & 0xf], kHex[(u >> 8) & 0xf], kHex[(u >> 4) & 0xf],
                   kHex[u & 0xf]};
    out_->append(buf, 6);
  };
  out_->push_back('"');
  const auto* p = reinterpret_cast<const unsigned char*>(value.data());
  const size_t n = value.size();
  size_t i = 0;
  static const auto kPlain = [] {  // bytes copied as they are
    std::array<bool, 256> t{};
    for (int c = 0x20; c < 0x7f; ++c) t[c] = c != '"' && c != '\\';
    return t;
  }();
  out_->reserve(out_->size() + n + 2);
  while (i < n) {
    size_t run = i;
    while (run < n && kPlain[p[run]]) ++run;
    out_->append(value.data() + i, run - i);
    i = run;
    if (i >= n) break;
    const unsigned char c = p[i];
    if (c == '"' || c == '\\') {
      out_->push_back('\\');
      out_->push_back(static_cast<char>(c));
      ++i;
    } else if (c < 0x80) {
      switch (c) {
        case '\b': out_->append("\\b"); break;
        case '\f': out_->append("\\f"); break;
        case '\n': out_->append("\\n"); break;
        case '\r': out_->append("\\r"); break;
        case '\t': out_->append("\\t"); break;
        default: escape_unit(c);
      }
      ++i;
    } else {  // a UTF-8 sequence: \uXXXX, as a surrogate pair above U+FFFF
      size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      uint32_t cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
      for (size_t k = 1; k < len && i + k < n; ++k) cp = (cp << 6) | (p[i + k] & 0x3F);
      if (cp >= 0x10000) {
        cp -= 0x10000;
        escape_unit(0xD800 + (cp >> 10));
        escape_unit(0xDC00 + (cp & 0x3FF));
      } else {
        escape_unit(cp);
      }
      i += len;
    }
  }
  out_->push_back('"');
  return *this;
}

JsonWriter& JsonWriter::Int(int64_t value) {
  BeforeValue();
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  out_->append(buf, static_cast<size_t>(end - buf));
  return *this;
}

JsonWriter& JsonWriter::Double(double value) {
  BeforeValue();
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::fixed);
  std::string_view text(buf, static_cast<size_t>(end - buf));
  out_->append(text);
  if (text.find('.') == std::string_view::npos) out_->append(".0");
  return *this;
}

JsonWriter& JsonWriter::Bool(bool value) {
  BeforeValue();
  out_->append(value ? "true" : "false");
  return *this;
}

JsonWriter& JsonWriter::Null() {
  BeforeValue();
  out_->append("null");
  return *this;
}

JsonWriter& JsonWriter::Raw(std::string_view json) {
  BeforeValue();
  out_->append(json);
  return *this;
}

Response InternalError() {
  Json err = Json::object();
  err["type"] = "api_error";
  err["code"] = "internal_error";
  err["charged"] = false;
  Json body = Json::object();
  body["error"] = std::move(err);
  return Response::FromJson(500, body);
}

Response ErrorResponse(int status, std::string_view type, std::string_view code,
                       std::string_view message, Json extra,
                       std::vector<std::pair<std::string, std::string>> headers) {
  Json err = Json::object();
  err["type"] = type;
  err["code"] = code;
  for (auto& [k, v] : extra.items()) err[k] = v;
  err["message"] = message;
  Json body = Json::object();
  body["error"] = std::move(err);
  return Response::FromJson(status, body, std::move(headers));
}

// ---------------------------------------------------------------- Router

namespace {

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    out.emplace_back(path.substr(start, slash == std::string_view::npos ? path.npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

}  // namespace

void Router::Add(std::string method, std::string pattern, Handler handler, int api_index) {
  routes_.push_back(Route{std::move(method), SplitPath(pattern), std::move(handler), api_index});
}

Router::Match Router::Find(Request& request) const {
  std::set<std::string> allowed;
  std::vector<std::string_view> params;
  for (const Route& route : routes_) {
    params.clear();
    std::string_view rest = request.path;
    bool ok = true;
    for (size_t i = 0; i < route.segments.size(); ++i) {
      size_t slash = rest.find('/');
      const bool last = i + 1 == route.segments.size();
      if (last != (slash == std::string_view::npos)) {
        ok = false;
        break;
      }
      std::string_view seg = last ? rest : rest.substr(0, slash);
      if (route.segments[i] == "*") {
        if (seg.empty()) {
          ok = false;
          break;
        }
        params.push_back(seg);
      } else if (seg != route.segments[i]) {
        ok = false;
        break;
      }
      if (!last) rest.remove_prefix(slash + 1);
    }
    if (!ok) continue;
    if (route.method != request.method) {
      allowed.insert(route.method);
      continue;
    }
    request.path_params = params;
    return Match{&route.handler, route.api_index, {}};
  }
  if (!allowed.empty()) {
    std::string allow;
    for (const std::string& m : allowed) {
      if (!allow.empty()) allow += ", ";
      allow += m;
    }
    return Match{nullptr, -1,
                 ErrorResponse(405, "invalid_request_error", "method_not_allowed",
                               "Method not allowed for this URL.", Json::object(),
                               {{"Allow", allow}})};
  }
  return Match{nullptr, -1,
               ErrorResponse(404, "invalid_request_error", "resource_missing",
                             "Unrecognized request URL.")};
}

// ---------------------------------------------------------------- text

bool ValidUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      while (i < n && s[i] < 0x80) ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

size_t Utf8Length(std::string_view text) {
  size_t n = 0;
  for (unsigned char c : text) {
    if ((c & 0xC0) != 0x80) ++n;
  }
  return n;
}

std::string_view Utf8Prefix(std::string_view text, size_t n) {
  size_t count = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      if (count == n) return text.substr(0, i);
      ++count;
    }
  }
  return text;
}

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string FormDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const size_t special = in.find_first_of("%+", i);
    if (special == std::string_view::npos) {
      out.append(in.substr(i));
      break;
    }
    out.append(in.substr(i, special - i));
    i = special;
    const char c = in[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < in.size() && HexValue(in[i + 1]) >= 0 &&
               HexValue(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(in[i + 1]) * 16 + HexValue(in[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

std::optional<FormPairs> ParseForm(std::string_view text, bool strict_utf8) {
  FormPairs out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t amp = text.find('&', start);
    std::string_view part =
        text.substr(start, amp == std::string_view::npos ? text.npos : amp - start);
    start = amp == std::string_view::npos ? text.size() + 1 : amp + 1;
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string name = FormDecode(part.substr(0, eq));
    std::string value = eq == std::string_view::npos ? std::string() : FormDecode(part.substr(eq + 1));
    if (strict_utf8 && (!ValidUtf8(name) || !ValidUtf8(value))) return std::nullopt;
    out.emplace_back(std::move(name), std::move(value));
  }
  return out;
}

std::vector<std::string> QueryValues(std::string_view query, std::string_view name) {
  std::vector<std::string> out;
  std::optional<FormPairs> pairs = ParseForm(query, /*strict_utf8=*/false);
  for (auto& [k, v] : *pairs) {
    if (k == name) out.push_back(std::move(v));
  }
  return out;
}

std::optional<FormPairs> ParsePageForm(const Request& req) {
  if (MediaType(req.header("Content-Type")) != "application/x-www-form-urlencoded" ||
      !ValidUtf8(req.body) || req.body.size() > 4096) {
    return std::nullopt;
  }
  return ParseForm(req.body, /*strict_utf8=*/true);
}

bool LuhnValid(std::string_view digits) {
  int total = 0;
  for (size_t i = 0; i < digits.size(); ++i) {
    int d = digits[digits.size() - 1 - i] - '0';
    if (i % 2 == 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    total += d;
  }
  return total % 10 == 0;
}

bool IsVisibleAscii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

bool IsAsciiDigits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::pair<std::string_view, std::string_view> SplitAuthorization(
    std::optional<std::string_view> header) {
  std::string_view auth = TrimSpace(header.value_or(""));
  size_t sp = auth.find(' ');
  if (sp == std::string_view::npos) return {auth, {}};
  return {auth.substr(0, sp), TrimSpace(auth.substr(sp + 1))};
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

double NowSeconds() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count() / 1e6;
}

std::string IsoTime(double ts) {
  std::time_t t = static_cast<std::time_t>(ts);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string HtmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

Response HtmlPage(int status, std::string_view title, std::string_view message) {
  std::string html(kHtmlHead);
  html += "<title>";
  html += HtmlEscape(title);
  html += "</title></head><body>\n<h1 id=\"title\">";
  html += HtmlEscape(title);
  html += "</h1>\n<p id=\"message\">";
  html += HtmlEscape(message);
  html += "</p>\n</body></html>\n";
  return Response::Html(status, std::move(html));
}

std::string MediaType(std::optional<std::string_view> content_type) {
  std::string_view v = content_type.value_or("");
  v = v.substr(0, v.find(';'));
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  std::string out(v);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace recharge::sandbox
