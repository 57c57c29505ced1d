#include "io/config_node.h"

#include <charconv>
#include <cstdlib>

#include "io/strings.h"

namespace recharge {
namespace {

std::string JoinPath(const std::string& parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return StrCat(parent, ".", key);
}

}  // namespace

std::string ExpandEnv(std::string_view text) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '$' && i + 1 < text.size() && text[i + 1] == '{') {
      size_t end = text.find('}', i + 2);
      if (end != std::string_view::npos) {
        std::string_view inner = text.substr(i + 2, end - i - 2);
        std::string_view name = inner;
        std::optional<std::string_view> def;
        if (size_t sep = inner.find(":-"); sep != std::string_view::npos) {
          name = inner.substr(0, sep);
          def = inner.substr(sep + 2);
        }
        const char* value = std::getenv(std::string(name).c_str());
        if (value != nullptr && *value != '\0') {
          out += value;
        } else if (def) {
          out += *def;
        }
        i = end + 1;
        continue;
      }
    }
    out += text[i++];
  }
  return out;
}

std::optional<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits == text.size()) return std::nullopt;
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, n);
  if (ec != std::errc() || ptr != text.data() + digits) return std::nullopt;
  std::string_view unit = text.substr(digits);
  int64_t ms_per = 0;
  if (unit == "ms") ms_per = 1;
  else if (unit == "s") ms_per = 1000;
  else if (unit == "m") ms_per = 60'000;
  else if (unit == "h") ms_per = 3'600'000;
  else if (unit == "d") ms_per = 86'400'000;
  else return std::nullopt;
  if (n > INT64_MAX / ms_per) return std::nullopt;
  return std::chrono::milliseconds(n * ms_per);
}

// Every mapping key must be a plain name: a key that is a list or a mapping
// ("? [a]: 1") is refused where it stands.
static absl::Status CheckKeysAreNames(const std::string& name, const YAML::Node& node) {
  if (node.IsMap()) {
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) {
        return absl::InvalidArgumentError(StrCat(name, ":", kv.first.Mark().line + 1, ":",
                                                 kv.first.Mark().column + 1,
                                                 ": a key must be a name, not a list or a mapping"));
      }
      if (absl::Status s = CheckKeysAreNames(name, kv.second); !s.ok()) return s;
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) {
      if (absl::Status s = CheckKeysAreNames(name, item); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ConfigNode> ConfigNode::FromRoot(const std::string& name, YAML::Node root) {
  if (absl::Status s = CheckKeysAreNames(name, root); !s.ok()) return s;
  auto file = std::make_shared<const std::string>(name);
  YAML::Mark mark = root.Mark();
  if (mark.line < 0) mark = YAML::Mark();
  ConfigNode node(file, std::move(root), "", mark);
  if (!node.IsMap()) return node.Error("the file must be a YAML mapping");
  return node;
}

absl::StatusOr<ConfigNode> ConfigNode::LoadFile(const std::string& path) {
  try {
    return FromRoot(path, YAML::LoadFile(path));
  } catch (const YAML::BadFile&) {
    return absl::InvalidArgumentError(StrCat(path, ": cannot open the file"));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(StrCat(path, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": ", e.msg));
  }
}

absl::StatusOr<ConfigNode> ConfigNode::LoadString(const std::string& text,
                                                  const std::string& name) {
  try {
    return FromRoot(name, YAML::Load(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(StrCat(name, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": ", e.msg));
  }
}

absl::Status ConfigNode::Error(std::string_view message) const {
  std::string where = *file_;
  if (mark_.line >= 0) StrAppend(&where, ":", mark_.line + 1, ":", mark_.column + 1);
  if (path_.empty()) return absl::InvalidArgumentError(StrCat(where, ": ", message));
  return absl::InvalidArgumentError(StrCat(where, ": ", path_, ": ", message));
}

bool ConfigNode::Has(std::string_view key) const {
  return node_.IsMap() && node_[std::string(key)].IsDefined() && !node_[std::string(key)].IsNull();
}

ConfigNode ConfigNode::Child(std::string_view key) const {
  YAML::Node child = node_.IsMap() ? node_[std::string(key)] : YAML::Node();
  YAML::Mark mark = child.IsDefined() ? child.Mark() : mark_;
  return ConfigNode(file_, child, JoinPath(path_, key), mark);
}

std::vector<std::pair<std::string, ConfigNode>> ConfigNode::Entries() const {
  std::vector<std::pair<std::string, ConfigNode>> out;
  if (!node_.IsMap()) return out;
  for (const auto& kv : node_) {
    std::string key = kv.first.Scalar();  // a name: checked at load
    out.emplace_back(key, ConfigNode(file_, kv.second, JoinPath(path_, key),
                                     kv.second.IsNull() ? kv.first.Mark() : kv.second.Mark()));
  }
  return out;
}

std::vector<ConfigNode> ConfigNode::Items() const {
  std::vector<ConfigNode> out;
  if (!node_.IsSequence()) return out;
  for (size_t i = 0; i < node_.size(); ++i) {
    out.push_back(ConfigNode(file_, node_[i], StrCat(path_, "[", i, "]"), node_[i].Mark()));
  }
  return out;
}

absl::StatusOr<std::string> ConfigNode::AsString() const {
  if (!node_.IsDefined() || node_.IsNull()) return Error("is required");
  if (!node_.IsScalar()) return Error("must be a single value, not a list or a mapping");
  return ExpandEnv(node_.Scalar());
}

absl::StatusOr<int64_t> ConfigNode::AsInt(int64_t min, int64_t max) const {
  absl::StatusOr<std::string> s = AsString();
  if (!s.ok()) return s.status();
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
  if (ec != std::errc() || ptr != s->data() + s->size()) {
    return Error(StrCat("must be an integer, got \"", *s, "\""));
  }
  if (v < min || v > max) return Error(StrCat("must be between ", min, " and ", max));
  return v;
}

absl::StatusOr<bool> ConfigNode::AsBool() const {
  absl::StatusOr<std::string> s = AsString();
  if (!s.ok()) return s.status();
  if (*s == "true") return true;
  if (*s == "false") return false;
  return Error(StrCat("must be true or false, got \"", *s, "\""));
}

absl::StatusOr<std::chrono::milliseconds> ConfigNode::AsDuration() const {
  absl::StatusOr<std::string> s = AsString();
  if (!s.ok()) return s.status();
  std::optional<std::chrono::milliseconds> d = ParseDuration(*s);
  if (!d) return Error(StrCat("must be a duration such as 250ms, 5s, 10m or 24h, got \"", *s, "\""));
  return *d;
}

absl::StatusOr<std::vector<std::string>> ConfigNode::AsStringList() const {
  if (!node_.IsSequence()) return Error("must be a list");
  std::vector<std::string> out;
  for (const ConfigNode& item : Items()) {
    absl::StatusOr<std::string> s = item.AsString();
    if (!s.ok()) return s.status();
    out.push_back(*std::move(s));
  }
  return out;
}

absl::StatusOr<std::string> ConfigNode::GetString(std::string_view key,
                                                  std::optional<std::string> def) const {
  if (!Has(key) && def) return *def;
  return Child(key).AsString();
}

absl::StatusOr<int64_t> ConfigNode::GetInt(std::string_view key, std::optional<int64_t> def,
                                           int64_t min, int64_t max) const {
  if (!Has(key) && def) return *def;
  return Child(key).AsInt(min, max);
}

absl::StatusOr<bool> ConfigNode::GetBool(std::string_view key, std::optional<bool> def) const {
  if (!Has(key) && def) return *def;
  return Child(key).AsBool();
}

absl::StatusOr<std::chrono::milliseconds> ConfigNode::GetDuration(
    std::string_view key, std::optional<std::chrono::milliseconds> def) const {
  if (!Has(key) && def) return *def;
  return Child(key).AsDuration();
}

absl::Status ConfigNode::CheckKeys(std::initializer_list<std::string_view> allowed) const {
  return CheckKeys(std::vector<std::string_view>(allowed));
}

absl::Status ConfigNode::CheckKeys(const std::vector<std::string_view>& allowed) const {
  if (!node_.IsMap()) return Error("must be a mapping");
  for (const auto& [key, child] : Entries()) {
    bool known = false;
    for (std::string_view a : allowed) known = known || a == key;
    if (!known) {
      return child.Error(StrCat("unknown option (expected one of: ",
                                      StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace recharge
