// TlsServer: a real HTTPS/1.1 server for integration tests, on a free loopback
// port, with a self-signed certificate for 127.0.0.1 made at start (its PEM
// is written to ca_file() for clients to trust). It answers every request with
// 200 and the request's target as the body, keeping the connection open when
// asked, and counts what it sees: connections accepted and open (the most
// open at once) and the targets of the requests read.
//
// Target "/hold..." is answered only after ReleaseHeld(); "/close..." is
// answered with Connection: close. Every answer waits `delay` first.
// Runs on its own thread; stopped on destruction.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "io/asio.h"

namespace recharge::testing {

class TlsServer {
 public:
  struct Stats {
    int accepted = 0;
    int open = 0;
    int max_open = 0;
    std::vector<std::string> targets;  // in the order read
  };

  explicit TlsServer(std::chrono::milliseconds delay = std::chrono::milliseconds(0))
      : delay_(delay), ctx_(asio::ssl::context::tls_server), acceptor_(io_), gate_(io_) {
    MakeCertificate();
    namespace ip = asio::ip;
    acceptor_.open(ip::tcp::v4());
    acceptor_.set_option(ip::tcp::acceptor::reuse_address(true));
    acceptor_.bind({ip::make_address("127.0.0.1"), 0});
    acceptor_.listen(4096);
    port_ = acceptor_.local_endpoint().port();
    gate_.expires_at(std::chrono::steady_clock::time_point::max());
    asio::co_spawn(io_, Accept(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TlsServer() {
    io_.stop();
    thread_.join();
    std::remove(ca_file_.c_str());
  }

  uint16_t port() const { return port_; }
  const std::string& ca_file() const { return ca_file_; }

  // Answers the "/hold" requests read so far and any read later.
  void ReleaseHeld() {
    asio::post(io_, [this] {
      released_ = true;
      gate_.cancel();
    });
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  // Waits until `done(stats)` holds; false if it does not within 10 s.
  bool WaitFor(const std::function<bool(const Stats&)>& done) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, std::chrono::seconds(10), [&] { return done(stats_); });
  }

 private:
  using Stream = asio::ssl::stream<asio::ip::tcp::socket>;

  void MakeCertificate() {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
    for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE"},
                              std::pair{NID_subject_alt_name, "IP:127.0.0.1"}}) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
      X509_add_ext(cert, ext, -1);
      X509_EXTENSION_free(ext);
    }
    X509_sign(cert, key, EVP_sha256());
    const std::string cert_pem = Pem([&](BIO* b) { PEM_write_bio_X509(b, cert); });
    const std::string key_pem = Pem([&](BIO* b) {
      PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
    });
    X509_free(cert);
    EVP_PKEY_free(key);
    ctx_.use_certificate_chain(asio::buffer(cert_pem));
    ctx_.use_private_key(asio::buffer(key_pem), asio::ssl::context::pem);
    char path[] = "/tmp/tls_server_ca_XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) throw std::runtime_error("mkstemp failed");
    close(fd);
    ca_file_ = path;
    std::ofstream(ca_file_) << cert_pem;
  }

  static std::string Pem(const std::function<void(BIO*)>& write) {
    BIO* bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    std::string out(data, static_cast<size_t>(n));
    BIO_free(bio);
    return out;
  }

  void Update(const std::function<void(Stats&)>& change) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      change(stats_);
    }
    changed_.notify_all();
  }

  asio::awaitable<void> Accept() {
    for (;;) {
      boost::system::error_code ec;
      asio::ip::tcp::socket socket = co_await acceptor_.async_accept(
          asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      Update([](Stats& s) {
        ++s.accepted;
        s.max_open = std::max(s.max_open, ++s.open);
      });
      asio::co_spawn(io_, Serve(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> Serve(asio::ip::tcp::socket socket) {
    namespace http = boost::beast::http;
    Stream stream(std::move(socket), ctx_);
    boost::system::error_code ec;
    co_await stream.async_handshake(asio::ssl::stream_base::server,
                                    asio::redirect_error(asio::use_awaitable, ec));
    boost::beast::flat_buffer buffer;
    while (!ec) {
      http::request<http::string_body> request;
      co_await http::async_read(stream, buffer, request,
                                asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      const std::string target(request.target());
      Update([&](Stats& s) { s.targets.push_back(target); });
      asio::steady_timer timer(io_);
      if (target.starts_with("/hold") && !released_) {
        co_await gate_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      if (delay_.count() > 0) {
        timer.expires_after(delay_);
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      http::response<http::string_body> response(http::status::ok, 11);
      response.body() = target;
      response.keep_alive(request.keep_alive() && !target.starts_with("/close"));
      response.prepare_payload();
      co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, ec));
      if (!response.keep_alive()) break;
    }
    Update([](Stats& s) { --s.open; });
  }

  const std::chrono::milliseconds delay_;
  asio::io_context io_{1};
  asio::ssl::context ctx_;
  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer gate_;      // "/hold" requests wait on it; server thread only
  bool released_ = false;        // server thread only
  uint16_t port_ = 0;
  std::string ca_file_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable changed_;
  Stats stats_;
};

}  // namespace recharge::testing
