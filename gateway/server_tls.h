// ServerTls: the TLS credentials of the gRPC port (DESIGN §8), with the
// certificate, its key and (for mTLS) the client CA read from files and
// re-read on Reload() (SIGHUP), so that a certificate is rotated without a
// restart.
//
// How: gRPC's FileWatcherCertificateProvider serves whatever its files hold
// and re-reads them every second. The files it watches are not the
// configured ones but in-memory files (memfd) of this process: Reload()
// reads the configured files, checks them (the key matches the certificate,
// the certificate is valid now, the CA parses), and only then swaps the
// in-memory copy atomically (dup2). A bad file is refused, named in the
// error, and the certificate served before stays. No copy of the private
// key is ever written to disk.
//
// Thread-safety: Reload() may be called from any thread (calls are
// serialised); credentials() is fixed after Create().
#pragma once

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"

namespace recharge {

class ServerTls {
 public:
  struct Options {
    std::string cert_file;       // PEM certificate chain, leaf first
    std::string key_file;        // PEM private key
    std::string client_ca_file;  // PEM CA bundle; set: clients must present a certificate it signed
  };

  // Reads and checks the files. Errors (INVALID_ARGUMENT) name the file.
  static absl::StatusOr<std::unique_ptr<ServerTls>> Create(Options options);
  ~ServerTls();

  std::shared_ptr<grpc::ServerCredentials> credentials() const { return credentials_; }

  // Re-reads the files; on success the new certificate is served to new
  // connections within about a second. On error nothing changes.
  // Returns a description of what is now served (subject, serial, expiry).
  absl::StatusOr<std::string> Reload();

 private:
  explicit ServerTls(Options options) : options_(std::move(options)) {}
  // Reads and checks the configured files: the PEM to serve (key followed
  // by the chain) and the CA bundle (empty without mTLS).
  absl::StatusOr<std::string> ReadIdentity(std::string* description) const;
  absl::StatusOr<std::string> ReadClientCa() const;

  const Options options_;
  std::mutex mu_;
  int identity_fd_ = -1;  // memfd watched by gRPC: key + chain
  int ca_fd_ = -1;        // memfd watched by gRPC: client CA bundle
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider_;
  std::shared_ptr<grpc::ServerCredentials> credentials_;
};

}  // namespace recharge
