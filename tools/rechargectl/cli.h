// The command-line frame of rechargectl, the ops CLI over the gateway's gRPC
// API: the global options, the table of command groups and subcommands (each
// with its usage, flags and help), the argument parser, and the connection
// to the gateway with the exit-code convention every command follows:
//
//   0  success
//   1  a refusal or a failed check (a gRPC error answered by the gateway,
//      `rules validate` finding errors)
//   2  a usage error (unknown command or flag, missing argument)
//   3  the gateway cannot be reached (UNAVAILABLE, DEADLINE_EXCEEDED)
//
// A command is a function of the parsed arguments returning its exit code;
// it prints its answer on stdout (a table, or with --json one JSON document)
// and any error on stderr.
//
// Thread-safety: single-threaded, except where a command says otherwise.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace recharge::ctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRefused = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

// The global flags, accepted before or after the command words.
struct GlobalOptions {
  std::string addr = "127.0.0.1:50051";
  std::string token_file;  // empty: no authorization metadata
  std::string tls_ca, tls_cert, tls_key;
  bool json = false;
  std::chrono::milliseconds timeout{10'000};
};

// One flag of a subcommand: `--name VALUE`, or `--name` alone when
// !takes_value. `--name=VALUE` works too.
struct FlagSpec {
  std::string name;  // without the dashes
  bool takes_value = true;
  std::string help;
  std::string value_name;  // in the help; default: the name in capitals
};

// A subcommand's parsed arguments.
struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;  // a value-less flag maps to ""

  bool Has(const std::string& name) const { return flags.contains(name); }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
};

// The connection to the gateway, made on first use by the commands that
// need it (`rules validate` never connects).
class Gateway {
 public:
  explicit Gateway(const GlobalOptions& options) : options_(options) {}

  // Builds the channel (TLS when --tls-ca is given, plaintext otherwise) and
  // waits up to --timeout for it to connect. On failure prints the reason
  // on stderr and returns the exit code (kExitUnreachable, or kExitUsage for
  // an unreadable credential file); nullopt when connected.
  std::optional<int> Connect();

  // A context for one call: the deadline (--timeout from now; none when
  // `streaming`) and the bearer token.
  std::unique_ptr<grpc::ClientContext> NewContext(bool streaming = false) const;

  // REQUIRES: Connect() returned nullopt.
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

 private:
  const GlobalOptions& options_;
  std::string token_;
  std::shared_ptr<grpc::Channel> channel_;
};

// What a command gets: the global options and the gateway.
struct Context {
  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  GlobalOptions options;
  Gateway gateway{options};
};

// Prints "rechargectl: CODE: message" on stderr and returns the exit code
// the status means: 0 for OK, 3 for UNAVAILABLE or DEADLINE_EXCEEDED, 1 for
// any other answer of the gateway.
int ReportStatus(const grpc::Status& status);

// Connects and makes one call on a `Stub` (e.g. v1::FraudAdmin::Stub):
// `call(stub, context)` returns its grpc::Status. Returns the exit code: 0,
// or that of the failure, already reported on stderr.
template <typename Stub, typename Call>
int CallGateway(Context& context, Call&& call);

// Prints "rechargectl: <message>" on stderr; returns kExitUsage.
int UsageError(absl::string_view message);

struct Command {
  std::string name;      // "validate"; empty for a group that is itself the command
  std::string operands;  // "FILE", "ID --reason R"
  std::string summary;   // one line
  std::string details;   // more lines for --help, may be empty
  std::vector<FlagSpec> flags;
  size_t min_positional = 0;
  size_t max_positional = 0;
  std::function<int(Context&, const Args&)> run;
};

struct Group {
  std::string name;  // "rules"
  std::string summary;
  std::vector<Command> commands;
};

// The command groups, one function per commands_*.cc file.
Group RulesCommands();
Group SellersCommands();
Group ReviewsCommands();
Group RechargesCommands();
Group ChargebackCommands();
Group AuditCommands();

// Parses argv and runs the command it names; returns the exit code.
int Run(int argc, char** argv);

// Parsing helpers for flag values; each returns INVALID_ARGUMENT naming the
// flag when the value does not parse.
absl::StatusOr<std::chrono::milliseconds> ParseDurationFlag(absl::string_view flag,
                                                            absl::string_view value);
absl::StatusOr<int> ParsePositiveIntFlag(absl::string_view flag, absl::string_view value);

template <typename Stub, typename Call>
int CallGateway(Context& context, Call&& call) {
  if (std::optional<int> code = context.gateway.Connect()) return *code;
  Stub stub(context.gateway.channel());
  std::unique_ptr<grpc::ClientContext> client_context = context.gateway.NewContext();
  return ReportStatus(call(stub, client_context.get()));
}

}  // namespace recharge::ctl
