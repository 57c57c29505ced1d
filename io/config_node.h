// ConfigNode: a node of a YAML configuration file that knows where it came
// from, so that every error names the file, the line, the column and the
// field path ("configs/gateway.yaml:12:3: ledger.path: must not be empty").
//
// Scalars of the form ${NAME} or ${NAME:-default} are taken from the
// environment. Durations are written with a unit (250ms, 5s, 10m, 24h).
// Unknown keys are errors (a misspelt option must not be silently ignored).
//
// Thread-safety: immutable after loading; safe to read from any thread.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace recharge {

class ConfigNode {
 public:
  // Parses `path`. A syntax error is reported with its line and column.
  static absl::StatusOr<ConfigNode> LoadFile(const std::string& path);
  // Parses `text` as if it were the file `name` (tests, backtests).
  static absl::StatusOr<ConfigNode> LoadString(const std::string& text, const std::string& name);

  bool IsMap() const { return node_.IsMap(); }
  bool IsSequence() const { return node_.IsSequence(); }
  bool Has(std::string_view key) const;
  // REQUIRES: this is a map. The child may not exist (check Has()).
  ConfigNode Child(std::string_view key) const;
  const std::string& path() const { return path_; }
  const std::string& file() const { return *file_; }

  // Map entries in file order, and sequence items.
  std::vector<std::pair<std::string, ConfigNode>> Entries() const;
  std::vector<ConfigNode> Items() const;

  // Typed access to this node's own scalar value.
  absl::StatusOr<std::string> AsString() const;
  absl::StatusOr<int64_t> AsInt(int64_t min, int64_t max) const;
  absl::StatusOr<bool> AsBool() const;
  absl::StatusOr<std::chrono::milliseconds> AsDuration() const;
  absl::StatusOr<std::vector<std::string>> AsStringList() const;

  // Typed access to a child; `def` is used when the key is absent, and a
  // missing key without a default is an error.
  absl::StatusOr<std::string> GetString(std::string_view key,
                                        std::optional<std::string> def = std::nullopt) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key, std::optional<int64_t> def, int64_t min,
                                 int64_t max) const;
  absl::StatusOr<bool> GetBool(std::string_view key, std::optional<bool> def = std::nullopt) const;
  absl::StatusOr<std::chrono::milliseconds> GetDuration(
      std::string_view key, std::optional<std::chrono::milliseconds> def = std::nullopt) const;

  // Fails naming the first key of this map that is not in `allowed`.
  absl::Status CheckKeys(std::initializer_list<std::string_view> allowed) const;
  absl::Status CheckKeys(const std::vector<std::string_view>& allowed) const;
  // INVALID_ARGUMENT "file:line:col: path: message" at this node.
  absl::Status Error(std::string_view message) const;

 private:
  ConfigNode(std::shared_ptr<const std::string> file, YAML::Node node, std::string path,
             YAML::Mark mark)
      : file_(std::move(file)), node_(std::move(node)), path_(std::move(path)), mark_(mark) {}
  static absl::StatusOr<ConfigNode> FromRoot(const std::string& name, YAML::Node root);

  std::shared_ptr<const std::string> file_;
  YAML::Node node_;
  std::string path_;
  YAML::Mark mark_;  // where the node is, or its parent for a missing key
};

// Parses "250ms", "5s", "10m", "24h", "7d". Returns nullopt if malformed.
std::optional<std::chrono::milliseconds> ParseDuration(std::string_view text);

// Replaces ${NAME} and ${NAME:-default} with the environment's value.
std::string ExpandEnv(std::string_view text);

}  // namespace recharge
