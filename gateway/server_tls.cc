#include "gateway/server_tls.h"

#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "io/strings.h"

namespace recharge {
namespace {

// gRPC re-reads the watched files this often.
constexpr unsigned kRefreshSeconds = 1;

absl::StatusOr<std::string> ReadFile(const std::string& field, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(StrCat(field, ": cannot read \"", path, "\""));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no PEM data";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

struct BioDeleter { void operator()(BIO* b) const { BIO_free(b); } };
struct X509Deleter { void operator()(X509* x) const { X509_free(x); } };
struct KeyDeleter { void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); } };
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyDeleter>;

BioPtr MemBio(const std::string& data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string Describe(X509* cert) {
  char subject[256] = {0};
  X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
  std::string serial;
  if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert), nullptr)) {
    char* hex = BN_bn2hex(bn);
    serial = hex ? hex : "";
    OPENSSL_free(hex);
    BN_free(bn);
  }
  std::string not_after;
  BioPtr out(BIO_new(BIO_s_mem()));
  if (ASN1_TIME_print(out.get(), X509_get0_notAfter(cert)) == 1) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(out.get(), &data);
    not_after.assign(data, static_cast<size_t>(n));
  }
  return StrCat("subject ", subject, ", serial ", serial, ", expires ", not_after);
}

// An anonymous in-memory file holding `data`; -1 on failure.
int MemFile(const std::string& data) {
  const int fd = memfd_create("recharge-gateway-tls", MFD_CLOEXEC);
  if (fd < 0) return -1;
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n <= 0) {
      ::close(fd);
      return -1;
    }
    off += static_cast<size_t>(n);
  }
  return fd;
}

std::string FdPath(int fd) { return StrCat("/proc/self/fd/", fd); }

// Replaces the content behind `*watched` with `data` in one step: a new
// memfd is filled, then dup2'ed over the watched descriptor number.
absl::Status Swap(int* watched, const std::string& data) {
  const int fd = MemFile(data);
  if (fd < 0) return absl::InternalError("tls: cannot create an in-memory file");
  if (*watched < 0) {
    *watched = fd;
    return absl::OkStatus();
  }
  const int rc = ::dup2(fd, *watched);
  ::close(fd);
  if (rc < 0) return absl::InternalError("tls: cannot swap the in-memory file");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ServerTls::ReadIdentity(std::string* description) const {
  absl::StatusOr<std::string> chain = ReadFile("tls.cert_file", options_.cert_file);
  if (!chain.ok()) return chain.status();
  absl::StatusOr<std::string> key = ReadFile("tls.key_file", options_.key_file);
  if (!key.ok()) return key.status();
  ERR_clear_error();
  BioPtr cert_bio = MemBio(*chain);
  X509Ptr leaf(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  if (!leaf) {
    return absl::InvalidArgumentError(StrCat("tls.cert_file: \"", options_.cert_file,
                                             "\" holds no PEM certificate (", OpenSslError(), ")"));
  }
  BioPtr key_bio = MemBio(*key);
  KeyPtr pkey(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (!pkey) {
    // The OpenSSL error text never contains key material.
    return absl::InvalidArgumentError(StrCat("tls.key_file: \"", options_.key_file,
                                             "\" holds no PEM private key (", OpenSslError(), ")"));
  }
  if (X509_check_private_key(leaf.get(), pkey.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(StrCat("tls.key_file: \"", options_.key_file,
                                             "\" is not the key of the certificate in \"",
                                             options_.cert_file, "\""));
  }
  if (X509_cmp_current_time(X509_get0_notAfter(leaf.get())) <= 0) {
    return absl::InvalidArgumentError(
        StrCat("tls.cert_file: \"", options_.cert_file, "\" has expired (", Describe(leaf.get()), ")"));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(leaf.get())) >= 0) {
    return absl::InvalidArgumentError(
        StrCat("tls.cert_file: \"", options_.cert_file, "\" is not valid yet (", Describe(leaf.get()), ")"));
  }
  *description = Describe(leaf.get());
  // One file for both: gRPC reads the key and the chain from the same
  // content, so a swap can never pair a new key with an old certificate.
  std::string both = *key;
  if (!both.empty() && both.back() != '\n') both.push_back('\n');
  both += *chain;
  return both;
}

absl::StatusOr<std::string> ServerTls::ReadClientCa() const {
  if (options_.client_ca_file.empty()) return std::string();
  absl::StatusOr<std::string> ca = ReadFile("tls.client_ca_file", options_.client_ca_file);
  if (!ca.ok()) return ca.status();
  ERR_clear_error();
  BioPtr bio = MemBio(*ca);
  X509Ptr first(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!first) {
    return absl::InvalidArgumentError(StrCat("tls.client_ca_file: \"", options_.client_ca_file,
                                             "\" holds no PEM certificate (", OpenSslError(), ")"));
  }
  return *ca;
}

absl::StatusOr<std::unique_ptr<ServerTls>> ServerTls::Create(Options options) {
  std::unique_ptr<ServerTls> tls(new ServerTls(std::move(options)));
  std::string description;
  absl::StatusOr<std::string> identity = tls->ReadIdentity(&description);
  if (!identity.ok()) return identity.status();
  absl::StatusOr<std::string> ca = tls->ReadClientCa();
  if (!ca.ok()) return ca.status();
  if (absl::Status s = Swap(&tls->identity_fd_, *identity); !s.ok()) return s;
  const bool mtls = !tls->options_.client_ca_file.empty();
  if (mtls) {
    if (absl::Status s = Swap(&tls->ca_fd_, *ca); !s.ok()) return s;
  }
  const std::string identity_path = FdPath(tls->identity_fd_);
  tls->provider_ = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      identity_path, identity_path, mtls ? FdPath(tls->ca_fd_) : std::string(), kRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions opts(tls->provider_);
  opts.watch_identity_key_cert_pairs();
  if (mtls) {
    opts.watch_root_certs();
    opts.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    opts.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  tls->credentials_ = grpc::experimental::TlsServerCredentials(opts);
  if (!tls->credentials_) return absl::InternalError("tls: gRPC refused the TLS credentials");
  return tls;
}

ServerTls::~ServerTls() {
  // gRPC may still hold the provider (shared); its watcher would then read
  // closed descriptors and keep what it had. Closed at exit only.
  provider_.reset();
  if (identity_fd_ >= 0) ::close(identity_fd_);
  if (ca_fd_ >= 0) ::close(ca_fd_);
}

absl::StatusOr<std::string> ServerTls::Reload() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string description;
  absl::StatusOr<std::string> identity = ReadIdentity(&description);
  if (!identity.ok()) return identity.status();
  absl::StatusOr<std::string> ca = ReadClientCa();
  if (!ca.ok()) return ca.status();
  if (absl::Status s = Swap(&identity_fd_, *identity); !s.ok()) return s;
  if (ca_fd_ >= 0) {
    if (absl::Status s = Swap(&ca_fd_, *ca); !s.ok()) return s;
  }
  return description;
}

}  // namespace recharge
