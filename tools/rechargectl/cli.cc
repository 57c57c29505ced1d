// The command-line frame of rechargectl: see cli.h.
#include "tools/rechargectl/cli.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "io/grpc_code_name.h"

namespace recharge::ctl {
namespace {

constexpr const char* kDefaultTokenFile = "var/dev/ops.token";

// The global flags, for the parser and the help text.
const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> flags = {
      {"addr", true, "HOST:PORT of the gateway (default 127.0.0.1:50051)", "HOST:PORT"},
      {"token-file", true,
       "file holding the bearer token (default var/dev/ops.token when it exists)", "FILE"},
      {"tls-ca", true, "CA certificate (PEM) of the gateway: connect over TLS", "FILE"},
      {"tls-cert", true, "client certificate (PEM) for mutual TLS (with --tls-key)", "FILE"},
      {"tls-key", true, "client private key (PEM) for mutual TLS", "FILE"},
      {"json", false, "print one JSON document on stdout instead of tables", ""},
      {"timeout", true, "connect and per-call deadline, e.g. 500ms, 10s (default 10s)", "DURATION"},
      {"help", false, "show help for the current level", ""},
  };
  return flags;
}

const FlagSpec* FindFlag(const std::vector<FlagSpec>& flags, absl::string_view name) {
  for (const FlagSpec& flag : flags) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

std::string FlagUsage(const FlagSpec& flag) {
  std::string upper = flag.value_name.empty() ? flag.name : flag.value_name;
  if (flag.value_name.empty()) {
    for (char& c : upper) c = c == '-' ? '_' : absl::ascii_toupper(c);
  }
  return flag.takes_value ? absl::StrCat("--", flag.name, " ", upper) : absl::StrCat("--", flag.name);
}

void PrintFlags(std::ostream& out, const std::vector<FlagSpec>& flags) {
  size_t width = 0;
  for (const FlagSpec& flag : flags) width = std::max(width, FlagUsage(flag).size());
  for (const FlagSpec& flag : flags) {
    std::string usage = FlagUsage(flag);
    out << "  " << usage << std::string(width - usage.size() + 2, ' ') << flag.help << "\n";
  }
}

std::string CommandLine(const Group& group, const Command& command) {
  std::string line = group.name;
  if (!command.name.empty()) absl::StrAppend(&line, " ", command.name);
  if (!command.operands.empty()) absl::StrAppend(&line, " ", command.operands);
  return line;
}

void PrintCommandList(std::ostream& out, const std::vector<Group>& groups) {
  size_t width = 0;
  for (const Group& group : groups) {
    for (const Command& command : group.commands) {
      width = std::max(width, CommandLine(group, command).size());
    }
  }
  for (const Group& group : groups) {
    for (const Command& command : group.commands) {
      std::string line = CommandLine(group, command);
      out << "  " << line << std::string(width - line.size() + 2, ' ') << command.summary << "\n";
    }
  }
}

constexpr absl::string_view kExitCodes =
    "Exit codes: 0 success, 1 refused by the gateway or a failed check, 2 usage error,\n"
    "3 the gateway cannot be reached.\n";

void PrintTopHelp(std::ostream& out, const std::vector<Group>& groups) {
  out << "rechargectl: the ops CLI of the recharge gateway (gRPC API recharge.v1).\n\n"
         "Usage: rechargectl [GLOBAL FLAGS] GROUP COMMAND [ARGS] [FLAGS]\n\n"
         "Commands:\n";
  PrintCommandList(out, groups);
  out << "\nGlobal flags:\n";
  PrintFlags(out, GlobalFlags());
  out << "\n" << kExitCodes << "Run 'rechargectl GROUP --help' or 'rechargectl GROUP COMMAND --help' for more.\n";
}

void PrintGroupHelp(std::ostream& out, const Group& group) {
  out << "rechargectl " << group.name << ": " << group.summary << "\n\nCommands:\n";
  PrintCommandList(out, {group});
  out << "\nGlobal flags (rechargectl --help) apply too.\n";
}

void PrintCommandHelp(std::ostream& out, const Group& group, const Command& command) {
  out << "Usage: rechargectl " << CommandLine(group, command) << "\n\n" << command.summary << "\n";
  if (!command.details.empty()) out << "\n" << command.details << "\n";
  if (!command.flags.empty()) {
    out << "\nFlags:\n";
    PrintFlags(out, command.flags);
  }
  out << "\nGlobal flags (rechargectl --help) apply too.\n" << kExitCodes;
}


absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the ", what, " ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Applies a global flag; INVALID_ARGUMENT on a bad value.
absl::Status SetGlobal(GlobalOptions& options, bool& token_file_given, const std::string& name,
                       const std::string& value) {
  if (name == "addr") options.addr = value;
  else if (name == "token-file") { options.token_file = value; token_file_given = true; }
  else if (name == "tls-ca") options.tls_ca = value;
  else if (name == "tls-cert") options.tls_cert = value;
  else if (name == "tls-key") options.tls_key = value;
  else if (name == "json") options.json = true;
  else if (name == "timeout") {
    absl::StatusOr<std::chrono::milliseconds> timeout = ParseDurationFlag("--timeout", value);
    if (!timeout.ok()) return timeout.status();
    options.timeout = *timeout;
  }
  return absl::OkStatus();
}

}  // namespace

std::string Args::Get(const std::string& name, const std::string& fallback) const {
  auto it = flags.find(name);
  return it == flags.end() ? fallback : it->second;
}

int UsageError(absl::string_view message) {
  std::cerr << "rechargectl: " << message << "\n";
  return kExitUsage;
}

int ReportStatus(const grpc::Status& status) {
  if (status.ok()) return kExitOk;
  std::cerr << "rechargectl: " << GrpcCodeName(status.error_code()) << ": " << status.error_message()
            << "\n";
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return kExitUnreachable;
  }
  return kExitRefused;
}

absl::StatusOr<std::chrono::milliseconds> ParseDurationFlag(absl::string_view flag,
                                                            absl::string_view value) {
  absl::Duration duration;
  int64_t days = 0;
  if (absl::ConsumeSuffix(&value, "d") && absl::SimpleAtoi(value, &days)) {
    duration = absl::Hours(24 * days);
  } else if (!absl::ParseDuration(value, &duration)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": not a duration: '", value, "' (e.g. 500ms, 10s, 30m, 24h, 7d)"));
  }
  if (duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": must be positive"));
  }
  return absl::ToChronoMilliseconds(duration);
}

absl::StatusOr<int> ParsePositiveIntFlag(absl::string_view flag, absl::string_view value) {
  int n = 0;
  if (!absl::SimpleAtoi(value, &n) || n <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": not a positive number: '", value, "'"));
  }
  return n;
}

std::optional<int> Gateway::Connect() {
  if (channel_ != nullptr) return std::nullopt;
  if (!options_.token_file.empty()) {
    absl::StatusOr<std::string> token = ReadFile(options_.token_file, "token file");
    if (!token.ok()) return UsageError(token.status().message());
    token_ = std::string(absl::StripAsciiWhitespace(*token));
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options_.tls_ca.empty() && options_.tls_cert.empty() && options_.tls_key.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    if (options_.tls_cert.empty() != options_.tls_key.empty()) {
      return UsageError("--tls-cert and --tls-key go together");
    }
    grpc::SslCredentialsOptions ssl;
    for (auto [path, field, what] :
         {std::tuple{&options_.tls_ca, &ssl.pem_root_certs, "CA file"},
          std::tuple{&options_.tls_cert, &ssl.pem_cert_chain, "certificate file"},
          std::tuple{&options_.tls_key, &ssl.pem_private_key, "key file"}}) {
      if (path->empty()) continue;
      absl::StatusOr<std::string> pem = ReadFile(*path, what);
      if (!pem.ok()) return UsageError(pem.status().message());
      *field = *pem;
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  // Retry a refused connection quickly within --timeout (the default backoff
  // starts at 1 s).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  channel_ = grpc::CreateCustomChannel(options_.addr, credentials, args);
  if (!channel_->WaitForConnected(std::chrono::system_clock::now() + options_.timeout)) {
    std::cerr << "rechargectl: UNAVAILABLE: cannot reach the gateway at " << options_.addr
              << " within " << absl::FormatDuration(absl::FromChrono(options_.timeout)) << "\n";
    channel_ = nullptr;
    return kExitUnreachable;
  }
  return std::nullopt;
}

std::unique_ptr<grpc::ClientContext> Gateway::NewContext(bool streaming) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!streaming) context->set_deadline(std::chrono::system_clock::now() + options_.timeout);
  if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
  return context;
}

int Run(int argc, char** argv) {
  const std::vector<Group> groups = {RulesCommands(),     SellersCommands(),
                                     ReviewsCommands(),   RechargesCommands(),
                                     ChargebackCommands(), AuditCommands()};
  Context context;
  bool token_file_given = false;
  bool help = false;
  const Group* group = nullptr;
  const Command* command = nullptr;
  Args args;
  std::vector<std::string> unknown_flags;

  std::vector<std::string> tokens(argv + 1, argv + argc);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& token = tokens[i];
    if (token == "-h") { help = true; continue; }
    if (token.size() > 2 && token.starts_with("--")) {
      std::string name = token.substr(2);
      std::optional<std::string> value;
      if (size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
      }
      const FlagSpec* global = FindFlag(GlobalFlags(), name);
      const FlagSpec* own = command != nullptr ? FindFlag(command->flags, name) : nullptr;
      const FlagSpec* spec = own != nullptr ? own : global;
      if (spec == nullptr) { unknown_flags.push_back(token); continue; }
      if (spec->takes_value && !value) {
        if (i + 1 >= tokens.size()) return UsageError(absl::StrCat("flag --", name, " needs a value"));
        value = tokens[++i];
      } else if (!spec->takes_value && value) {
        return UsageError(absl::StrCat("flag --", name, " takes no value"));
      }
      if (own != nullptr) {
        args.flags[name] = value.value_or("");
      } else if (name == "help") {
        help = true;
      } else if (absl::Status s = SetGlobal(context.options, token_file_given, name, value.value_or(""));
                 !s.ok()) {
        return UsageError(s.message());
      }
      continue;
    }
    if (group == nullptr) {
      for (const Group& g : groups) if (g.name == token) group = &g;
      if (group == nullptr) {
        return UsageError(absl::StrCat("unknown command '", token, "' (see rechargectl --help)"));
      }
      // A group that is itself the command (chargeback).
      if (group->commands.size() == 1 && group->commands[0].name.empty()) command = &group->commands[0];
      continue;
    }
    if (command == nullptr) {
      for (const Command& c : group->commands) if (c.name == token) command = &c;
      if (command == nullptr) {
        return UsageError(absl::StrCat("unknown command '", group->name, " ", token,
                                       "' (see rechargectl ", group->name, " --help)"));
      }
      continue;
    }
    args.positional.push_back(token);
  }

  if (help) {
    if (group == nullptr) PrintTopHelp(std::cout, groups);
    else if (command == nullptr) PrintGroupHelp(std::cout, *group);
    else PrintCommandHelp(std::cout, *group, *command);
    return kExitOk;
  }
  if (group == nullptr) {
    PrintTopHelp(std::cerr, groups);
    return UsageError("missing command");
  }
  const std::string where =
      command == nullptr ? group->name : CommandLine(*group, *command);
  if (!unknown_flags.empty()) {
    return UsageError(absl::StrCat("unknown flag '", unknown_flags.front(), "' for '", where,
                                   "' (see rechargectl ", group->name, " --help)"));
  }
  if (command == nullptr) {
    return UsageError(absl::StrCat("missing command after '", group->name, "' (see rechargectl ",
                                   group->name, " --help)"));
  }
  if (args.positional.size() < command->min_positional) {
    return UsageError(absl::StrCat("missing argument for '", where, "' (usage: rechargectl ",
                                   where, ")"));
  }
  if (args.positional.size() > command->max_positional) {
    return UsageError(absl::StrCat("unexpected argument '", args.positional[command->max_positional],
                                   "' for '", where, "'"));
  }
  if (!token_file_given && std::filesystem::exists(kDefaultTokenFile)) {
    context.options.token_file = std::string(kDefaultTokenFile);
  }
  return command->run(context, args);
}

}  // namespace recharge::ctl
