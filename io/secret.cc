#include "io/secret.h"

#include <cctype>
#include <fstream>
#include <sstream>

#include "io/strings.h"

namespace recharge {

absl::StatusOr<Secret> ReadSecretFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(StrCat("cannot read secret file \"", path, "\""));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string value = ss.str();
  while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back()))) value.pop_back();
  size_t start = 0;
  while (start < value.size() && std::isspace(static_cast<unsigned char>(value[start]))) ++start;
  if (start == value.size()) {
    return absl::InvalidArgumentError(StrCat("secret file \"", path, "\" is empty"));
  }
  return Secret(value.substr(start));
}

}  // namespace recharge
