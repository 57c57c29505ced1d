// Helpers for unit tests that need a file on disk (config loaders).
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

namespace recharge::testing {

// Writes `text` to `name` in the temp directory and returns the path.
inline std::string WriteTemp(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / name;
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace recharge::testing
