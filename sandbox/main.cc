// psp-sandbox: a real HTTPS server playing the payment service providers the
// gateway's adapters call (DESIGN.md §7, §8b): the card (Stripe-like),
// PayPal (OAuth2 + Orders capture) and e-wallet (HMAC-signed) APIs, with
// test instruments, idempotency, a journal of every charge, latency and
// fault injection, and a control API for tests.
//
//   psp-sandbox --host 127.0.0.1 --port 8443 --cert CERT.pem --key KEY.pem
//       --journal PATH.jsonl --card-secret-file FILE
//       [--paypal-credentials-file FILE] [--ewallet-secret-file FILE]
//       [--webhook-secret-file FILE] [--webhook-ca-file FILE]
//       [--latency-ms 0] [--latency-jitter-ms 0] [--error-rate 0.0]
//       [--port-file FILE] [--threads N]
//
// --port 0 binds a free port; --port-file then tells it (written atomically,
// "PORT\n", once listening and the "listening" line is logged). --threads:
// io threads, one per core by default.
// --paypal-credentials-file / --ewallet-secret-file enable those APIs
// (without them their paths answer 404). --webhook-secret-file enables
// signed webhooks (webhooks.h), verifying the receivers' certificates
// against --webhook-ca-file (default: the system's store). Start-up errors exit with 2;
// SIGTERM/SIGINT stop cleanly (exit 0) with the journal complete.
// The APIs: card_api.h, paypal_api.h, ewallet_api.h; control: control_api.h.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/log.h"
#include "io/log_buffering.h"
#include "io/secret.h"
#include "io/strings.h"
#include "sandbox/api.h"
#include "sandbox/card_api.h"
#include "sandbox/config.h"
#include "sandbox/control_api.h"
#include "sandbox/ewallet_api.h"
#include "sandbox/journal.h"
#include "sandbox/paypal_api.h"
#include "sandbox/server.h"
#include "sandbox/webhooks.h"

namespace recharge::sandbox {
namespace {

constexpr char kUsage[] =
    "usage: psp-sandbox --cert CERT.pem --key KEY.pem --journal PATH.jsonl\n"
    "                   --card-secret-file FILE [--host 127.0.0.1] [--port 8443]\n"
    "                   [--paypal-credentials-file FILE] [--ewallet-secret-file FILE]\n"
    "                   [--webhook-secret-file FILE] [--webhook-ca-file FILE]\n"
    "                   [--latency-ms 0] [--latency-jitter-ms 0] [--error-rate 0.0]\n"
    "                   [--port-file FILE] [--threads N]\n";

struct Flags {
  std::string host = "127.0.0.1";
  int port = 8443;
  std::string cert, key, journal, card_secret_file;
  std::string paypal_credentials_file, ewallet_secret_file, port_file;
  std::string webhook_secret_file, webhook_ca_file;
  double latency_ms = 0, latency_jitter_ms = 0, error_rate = 0;
  int threads = 0;
};

int Fail(std::string_view message) {
  LogError("startup_failed", {{"error", std::string(message)}});
  return 2;
}

bool ParseDouble(const std::string& text, double* out) {
  char* end = nullptr;
  errno = 0;
  *out = std::strtod(text.c_str(), &end);
  return !text.empty() && end == text.c_str() + text.size() && errno == 0;
}

bool ParseInt(const std::string& text, int lo, int hi, int* out) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || errno != 0 || v < lo || v > hi) {
    return false;
  }
  *out = static_cast<int>(v);
  return true;
}

// Returns the exit code to stop with (0 for --help), or nullopt to go on.
std::optional<int> ParseFlags(int argc, char** argv, Flags* flags) {
  std::map<std::string, std::string> values;
  static const char* const kKnown[] = {
      "host", "port", "cert", "key", "journal", "card-secret-file", "paypal-credentials-file",
      "ewallet-secret-file", "webhook-secret-file", "webhook-ca-file", "latency-ms",
      "latency-jitter-ms", "error-rate", "port-file", "threads"};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (!arg.starts_with("--")) {
      std::fprintf(stderr, "%spsp-sandbox: unexpected argument %s\n", kUsage, arg.c_str());
      return 2;
    }
    std::string name = arg.substr(2), value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      std::fprintf(stderr, "%spsp-sandbox: --%s expects a value\n", kUsage, name.c_str());
      return 2;
    }
    if (std::find(std::begin(kKnown), std::end(kKnown), name) == std::end(kKnown)) {
      std::fprintf(stderr, "%spsp-sandbox: unknown flag --%s\n", kUsage, name.c_str());
      return 2;
    }
    values[name] = value;
  }
  for (const char* required : {"cert", "key", "journal", "card-secret-file"}) {
    if (!values.count(required)) {
      std::fprintf(stderr, "%spsp-sandbox: --%s is required\n", kUsage, required);
      return 2;
    }
  }
  auto bad = [](const std::string& name, const std::string& value) {
    std::fprintf(stderr, "%spsp-sandbox: invalid --%s value: %s\n", kUsage, name.c_str(),
                 value.c_str());
    return 2;
  };
  for (auto& [name, value] : values) {
    if (name == "host") flags->host = value;
    if (name == "cert") flags->cert = value;
    if (name == "key") flags->key = value;
    if (name == "journal") flags->journal = value;
    if (name == "card-secret-file") flags->card_secret_file = value;
    if (name == "paypal-credentials-file") flags->paypal_credentials_file = value;
    if (name == "ewallet-secret-file") flags->ewallet_secret_file = value;
    if (name == "webhook-secret-file") flags->webhook_secret_file = value;
    if (name == "webhook-ca-file") flags->webhook_ca_file = value;
    if (name == "port-file") flags->port_file = value;
    if (name == "port" && !ParseInt(value, 0, 65535, &flags->port)) return bad(name, value);
    if (name == "threads" && !ParseInt(value, 1, 1024, &flags->threads)) return bad(name, value);
    if (name == "latency-ms" && !ParseDouble(value, &flags->latency_ms)) return bad(name, value);
    if (name == "latency-jitter-ms" && !ParseDouble(value, &flags->latency_jitter_ms)) {
      return bad(name, value);
    }
    if (name == "error-rate" && !ParseDouble(value, &flags->error_rate)) return bad(name, value);
  }
  if (flags->threads == 0) flags->threads = std::max(1u, std::thread::hardware_concurrency());
  return std::nullopt;
}

absl::Status WritePortFile(const std::string& path, uint16_t port) {
  const std::string tmp = StrCat(path, ".tmp.", ::getpid());
  const std::string text = StrCat(port, "\n");
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::UnavailableError(StrCat(tmp, ": ", std::strerror(errno)));
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return absl::UnavailableError(StrCat(path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a closed stderr pipe must not kill the server
  Flags flags;
  if (std::optional<int> rc = ParseFlags(argc, argv, &flags)) return *rc;

  // 1. Secrets (never logged: they are masked in every log line too).
  absl::StatusOr<Secret> card_secret = ReadSecretFile(flags.card_secret_file);
  if (!card_secret.ok()) {
    return Fail(StrCat("cannot read card secret: ", card_secret.status().message()));
  }
  std::optional<PaypalCredentials> paypal;
  if (!flags.paypal_credentials_file.empty()) {
    absl::StatusOr<PaypalCredentials> creds = ReadPaypalCredentials(flags.paypal_credentials_file);
    if (!creds.ok()) {
      return Fail(StrCat("cannot read PayPal credentials: ", creds.status().message()));
    }
    paypal = *std::move(creds);
  }
  std::optional<Secret> ewallet_secret;
  if (!flags.ewallet_secret_file.empty()) {
    absl::StatusOr<Secret> secret = ReadSecretFile(flags.ewallet_secret_file);
    if (!secret.ok()) return Fail(StrCat("cannot read e-wallet secret: ", secret.status().message()));
    ewallet_secret = *std::move(secret);
  }
  std::optional<Secret> webhook_secret;
  if (!flags.webhook_secret_file.empty()) {
    absl::StatusOr<Secret> secret = ReadSecretFile(flags.webhook_secret_file);
    if (!secret.ok()) {
      return Fail(StrCat("cannot read webhook secret: ", secret.status().message()));
    }
    webhook_secret = *std::move(secret);
  }
  std::vector<std::string> redact = {std::string(card_secret->Reveal())};
  if (ewallet_secret) redact.emplace_back(ewallet_secret->Reveal());
  if (paypal) redact.emplace_back(paypal->client_secret.Reveal());
  if (webhook_secret) redact.emplace_back(webhook_secret->Reveal());

  // 2. Runtime config (command-line values apply to every API).
  SandboxConfig config;
  {
    Json initial = Json::object();
    initial["latency_ms"] = flags.latency_ms;
    initial["latency_jitter_ms"] = flags.latency_jitter_ms;
    initial["error_rate"] = flags.error_rate;
    absl::StatusOr<Json> applied = config.Update(initial);
    if (!applied.ok()) return Fail(StrCat(applied.status().message()));
  }

  // 3. Webhooks, the APIs, and their state rebuilt from the journal.
  Stats stats({"card", "paypal", "ewallet"});
  const bool webhooks_enabled = webhook_secret.has_value();
  absl::StatusOr<std::unique_ptr<WebhookSender>> webhooks = WebhookSender::Create(
      std::move(webhook_secret), flags.webhook_ca_file, config, stats, redact);
  if (!webhooks.ok()) {
    return Fail(StrCat("cannot set up webhooks: ", webhooks.status().message()));
  }
  SelfUrl self_url;  // set once listening
  Journal journal(flags.journal);
  const bool paypal_enabled = paypal.has_value();
  const bool ewallet_enabled = ewallet_secret.has_value();
  std::vector<std::unique_ptr<SandboxApi>> apis;
  apis.push_back(MakeCardApi(*std::move(card_secret), journal, config.Register("card"),
                             **webhooks, self_url));
  {
    Json extra = Json::object();
    extra["token_ttl_s"] = kDefaultTokenTtlS;
    apis.push_back(MakePaypalApi(std::move(paypal), journal, config.Register("paypal", extra), stats));
  }
  apis.push_back(MakeEwalletApi(std::move(ewallet_secret), journal, config.Register("ewallet"),
                                **webhooks, self_url));

  Router router;
  AddControlRoutes(router, config, stats, **webhooks);
  for (size_t i = 0; i < apis.size(); ++i) apis[i]->AddRoutes(router, static_cast<int>(i));

  ServerOptions options;
  options.host = flags.host;
  options.port = static_cast<uint16_t>(flags.port);
  options.threads = flags.threads;
  options.cert_file = flags.cert;
  options.key_file = flags.key;
  options.redact = redact;
  Server server(options, router, stats);
  if (absl::Status s = server.LoadCertificates(); !s.ok()) {
    return Fail(StrCat("cannot load certificate/key: ", s.message()));
  }

  absl::StatusOr<std::vector<Json>> records = journal.Load();
  if (!records.ok()) {
    return Fail(StrCat("cannot load journal ", flags.journal, ": ", records.status().message()));
  }
  size_t charges_restored = 0;  // lines without "op"; the others are operations on them
  for (const Json& rec : *records) {
    if (!rec.contains("op")) ++charges_restored;
    const std::string api_name =
        rec.contains("api") && rec["api"].is_string() ? rec["api"].get<std::string>() : "";
    SandboxApi* api = nullptr;
    for (auto& a : apis) {
      if (a->name() == api_name) api = a.get();
    }
    if (api == nullptr) {
      LogWarn("journal_record_skipped", {{"reason", "unknown api"}, {"api", server.Sanitize(api_name)}});
      continue;
    }
    if (absl::Status s = api->Restore(rec); !s.ok()) {
      return Fail(StrCat("cannot load journal ", flags.journal, ": ", s.message()));
    }
  }
  if (absl::Status s = journal.Open(); !s.ok()) {
    return Fail(StrCat("cannot load journal ", flags.journal, ": ", s.message()));
  }

  // 4. Listen, tell the port, serve until SIGTERM/SIGINT.
  if (absl::Status s = server.Listen(); !s.ok()) {
    return Fail(StrCat("cannot listen on ", flags.host, ":", flags.port, ": ", s.message()));
  }
  {
    std::string host = flags.host;
    if (host == "0.0.0.0" || host == "::" || host.empty()) host = "localhost";
    if (host.find(':') != std::string::npos) host = StrCat("[", host, "]");
    self_url.Set(StrCat("https://", host, ":", server.port()));
  }
  std::string enabled = "card";
  if (paypal_enabled) enabled += ",paypal";
  if (ewallet_enabled) enabled += ",ewallet";
  if (webhooks_enabled) enabled += "; webhooks";
  LogInfo("listening",
          {{"msg", server.Sanitize(StrCat("listening on https://", flags.host, ":", server.port(),
                                          " (apis ", enabled, "; journal ", flags.journal, ", ",
                                          charges_restored, " charges restored, ",
                                          records->size() - charges_restored,
                                          " operations restored)"))},
           {"threads", std::to_string(flags.threads)},
           {"config", JsonBytes(config.Snapshot())}});
  // The port file last: whoever waits for it finds the listening line logged.
  if (!flags.port_file.empty()) {
    if (absl::Status s = WritePortFile(flags.port_file, server.port()); !s.ok()) {
      return Fail(StrCat("cannot write port file: ", s.message()));
    }
  }
  // A log line per request: written in batches, not one write(2) each.
  EnableBufferedLogging(std::chrono::milliseconds(5));
  server.Run();
  (*webhooks)->Stop();  // pending deliveries and retries are abandoned
  journal.Close();      // everything appended is on disk
  StopBufferedLogging();
  LogInfo("stopped");
  return 0;
}

}  // namespace
}  // namespace recharge::sandbox

int main(int argc, char** argv) { return recharge::sandbox::Main(argc, argv); }
