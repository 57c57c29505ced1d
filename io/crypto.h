// Small cryptographic and encoding helpers over OpenSSL: SHA-256, HMAC-SHA256,
// hex, URL-safe base64 and random identifiers. Stateless and thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "io/secret.h"

namespace recharge {

// Raw 32-byte digests.
std::string Sha256(std::string_view data);
std::string HmacSha256(const Secret& key, std::string_view data);

std::string HexEncode(std::string_view bytes);
std::string Base64UrlEncode(std::string_view bytes);
// Standard base64 with padding (RFC 4648 §4), as HTTP Basic auth wants.
std::string Base64Encode(std::string_view bytes);
// Returns false on malformed input.
bool Base64UrlDecode(std::string_view text, std::string* out);

// `bytes` cryptographically random bytes, hex encoded (2 * bytes chars).
std::string RandomHex(size_t bytes);

}  // namespace recharge
