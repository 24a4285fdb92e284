#include "crypto/aes_siv.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <array>
#include <string>

#include "crypto/base/status.h"
#include "crypto/constant_time.h"

namespace coffer::crypto {
namespace {

using Block = std::array<uint8_t, kAesSivTagSize>;

// Fetched once per process and kept alive: fetching dominates small operations.
const EVP_CIPHER* FetchedSiv(size_t key_size) {
  static EVP_CIPHER* const siv128 = EVP_CIPHER_fetch(nullptr, "AES-128-SIV", nullptr);
  static EVP_CIPHER* const siv192 = EVP_CIPHER_fetch(nullptr, "AES-192-SIV", nullptr);
  static EVP_CIPHER* const siv256 = EVP_CIPHER_fetch(nullptr, "AES-256-SIV", nullptr);
  return key_size == 32 ? siv128 : key_size == 48 ? siv192 : siv256;
}

const EVP_MAC* FetchedCmac() {
  static EVP_MAC* const cmac = EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_CMAC, nullptr);
  return cmac;
}

// OpenSSL's SIV takes a null input pointer to mean "finalise", so an empty associated-data
// component or plaintext must still point somewhere.
const unsigned char* NonNullBytes(std::string_view data) {
  static const unsigned char kNothing = 0;
  return data.empty() ? &kNothing : reinterpret_cast<const unsigned char*>(data.data());
}

absl::Status CheckInputs(size_t plaintext_size,
                         absl::Span<const std::string_view> associated_data) {
  if (associated_data.size() > kAesSivMaxAssociatedData) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "AES-SIV takes at most 126 associated-data components, got " +
                         std::to_string(associated_data.size()));
  }
  for (std::string_view component : associated_data) {
    if (component.size() > kAesSivMaxInputSize) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "an AES-SIV associated-data component exceeds 1 GiB");
    }
  }
  if (plaintext_size > kAesSivMaxInputSize) {
    return MakeError(ErrorCode::kInvalidArgument, "AES-SIV plaintext exceeds 1 GiB");
  }
  return absl::OkStatus();
}

// dbl() of RFC 5297, section 2.3: multiplication by x in GF(2^128).
void Double(Block& block) {
  const uint8_t carry = block[0] >> 7;
  for (size_t i = 0; i + 1 < block.size(); ++i) {
    block[i] = static_cast<uint8_t>(block[i] << 1 | block[i + 1] >> 7);
  }
  block.back() = static_cast<uint8_t>(block.back() << 1);
  block.back() ^= static_cast<uint8_t>(0x87 * carry);  // constant time in the secret bit
}

absl::Status CorruptError() {
  return MakeError(ErrorCode::kCiphertextCorrupt,
                   "AES-SIV authentication failed: wrong key or associated data, or the "
                   "ciphertext was altered");
}

}  // namespace

absl::StatusOr<std::unique_ptr<const AesSiv>> AesSiv::Create(const SecretBytes& key) {
  if (key.size() != 32 && key.size() != 48 && key.size() != 64) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "AES-SIV keys must be 32, 48 or 64 bytes, got " + std::to_string(key.size()));
  }
  const EVP_CIPHER* cipher = FetchedSiv(key.size());
  if (cipher == nullptr) return internal::OpenSslError("EVP_CIPHER_fetch(AES-SIV)");
  internal::EvpCipherCtxPtr siv(EVP_CIPHER_CTX_new());
  if (siv == nullptr) return internal::OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_EncryptInit_ex2(siv.get(), cipher, key.data(), nullptr, nullptr) != 1) {
    return internal::OpenSslError("EVP_EncryptInit_ex2(AES-SIV)");
  }

  const EVP_MAC* cmac = FetchedCmac();
  if (cmac == nullptr) return internal::OpenSslError("EVP_MAC_fetch(CMAC)");
  // EVP_MAC_CTX_new takes a non-const EVP_MAC (it bumps the reference count).
  internal::EvpMacCtxPtr keyed_cmac(EVP_MAC_CTX_new(const_cast<EVP_MAC*>(cmac)));
  if (keyed_cmac == nullptr) return internal::OpenSslError("EVP_MAC_CTX_new");
  const size_t half = key.size() / 2;  // K1, the S2V key
  char cbc128[] = "AES-128-CBC";
  char cbc192[] = "AES-192-CBC";
  char cbc256[] = "AES-256-CBC";
  char* cbc = half == 16 ? cbc128 : half == 24 ? cbc192 : cbc256;
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, cbc, 0),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_MAC_init(keyed_cmac.get(), key.data(), half, params) != 1) {
    return internal::OpenSslError("EVP_MAC_init(CMAC)");
  }
  return std::unique_ptr<const AesSiv>(new AesSiv(std::move(siv), std::move(keyed_cmac)));
}

absl::StatusOr<internal::EvpCipherCtxPtr> AesSiv::StartCall(bool encrypt) const {
  internal::EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr) return internal::OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_CIPHER_CTX_copy(ctx.get(), siv_.get()) != 1) {
    return internal::OpenSslError("EVP_CIPHER_CTX_copy");
  }
  // A null cipher and key keep the copied key schedule; only the direction changes.
  if (EVP_CipherInit_ex2(ctx.get(), nullptr, nullptr, nullptr, encrypt ? 1 : 0, nullptr) != 1) {
    return internal::OpenSslError("EVP_CipherInit_ex2(direction)");
  }
  return ctx;
}

absl::Status AesSiv::Cmac(std::string_view data, uint8_t* out) const {
  internal::EvpMacCtxPtr ctx(EVP_MAC_CTX_dup(cmac_.get()));
  if (ctx == nullptr) return internal::OpenSslError("EVP_MAC_CTX_dup");
  if (EVP_MAC_update(ctx.get(), NonNullBytes(data), data.size()) != 1) {
    return internal::OpenSslError("EVP_MAC_update(CMAC)");
  }
  size_t written = 0;
  if (EVP_MAC_final(ctx.get(), out, &written, kAesSivTagSize) != 1 || written != kAesSivTagSize) {
    return internal::OpenSslError("EVP_MAC_final(CMAC)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> AesSiv::S2vOfEmptyPlaintext(
    absl::Span<const std::string_view> associated_data) const {
  // RFC 5297, section 2.4, with Sn the empty plaintext:
  //   D = CMAC(<zero>); D = dbl(D) xor CMAC(Si) for each component; V = CMAC(dbl(D) xor 10*).
  Block d{};
  Block mac{};
  auto view = [](const Block& block) {
    return std::string_view(reinterpret_cast<const char*>(block.data()), block.size());
  };
  absl::Status status = Cmac(view(d), d.data());
  for (size_t i = 0; status.ok() && i < associated_data.size(); ++i) {
    status = Cmac(associated_data[i], mac.data());
    Double(d);
    for (size_t j = 0; j < d.size(); ++j) d[j] ^= mac[j];
  }
  std::string v(kAesSivTagSize, '\0');
  if (status.ok()) {
    Double(d);
    d[0] ^= 0x80;  // pad(empty) = 1 followed by 127 zero bits
    status = Cmac(view(d), reinterpret_cast<uint8_t*>(v.data()));
  }
  OPENSSL_cleanse(d.data(), d.size());
  OPENSSL_cleanse(mac.data(), mac.size());
  if (!status.ok()) return status;
  return v;
}

absl::StatusOr<std::string> AesSiv::Seal(std::string_view plaintext,
                                         absl::Span<const std::string_view> associated_data) const {
  COFFER_RETURN_IF_ERROR(CheckInputs(plaintext.size(), associated_data));
  if (plaintext.empty()) return S2vOfEmptyPlaintext(associated_data);

  COFFER_ASSIGN_OR_RETURN(internal::EvpCipherCtxPtr ctx, StartCall(/*encrypt=*/true));
  int written = 0;
  // OpenSSL's SIV takes each associated-data call (null output) as one S2V component.
  for (std::string_view component : associated_data) {
    if (EVP_EncryptUpdate(ctx.get(), nullptr, &written, NonNullBytes(component),
                          static_cast<int>(component.size())) != 1) {
      return internal::OpenSslError("EVP_EncryptUpdate(associated data)");
    }
  }
  std::string sealed(kAesSivTagSize + plaintext.size(), '\0');
  auto* out = reinterpret_cast<unsigned char*>(sealed.data());
  // The whole plaintext in one call: SIV computes V over all of it before encrypting.
  if (EVP_EncryptUpdate(ctx.get(), out + kAesSivTagSize, &written, NonNullBytes(plaintext),
                        static_cast<int>(plaintext.size())) != 1 ||
      static_cast<size_t>(written) != plaintext.size()) {
    return internal::OpenSslError("EVP_EncryptUpdate");
  }
  int final_bytes = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), out + sealed.size(), &final_bytes) != 1 || final_bytes != 0) {
    return internal::OpenSslError("EVP_EncryptFinal_ex(AES-SIV)");
  }
  // OpenSSL hands V out as the AEAD tag; RFC 5297 puts it first.
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, kAesSivTagSize, out) != 1) {
    return internal::OpenSslError("EVP_CTRL_AEAD_GET_TAG");
  }
  return sealed;
}

absl::StatusOr<std::string> AesSiv::Open(std::string_view sealed,
                                         absl::Span<const std::string_view> associated_data) const {
  if (sealed.size() < kAesSivTagSize) {
    return MakeError(ErrorCode::kCiphertextCorrupt,
                     "AES-SIV ciphertext is shorter than its 16-byte synthetic IV");
  }
  std::string_view v = sealed.substr(0, kAesSivTagSize);
  std::string_view ciphertext = sealed.substr(kAesSivTagSize);
  COFFER_RETURN_IF_ERROR(CheckInputs(ciphertext.size(), associated_data));
  if (ciphertext.empty()) {
    COFFER_ASSIGN_OR_RETURN(std::string expected, S2vOfEmptyPlaintext(associated_data));
    if (!ConstantTimeEquals(expected, v)) return CorruptError();
    return std::string();
  }

  COFFER_ASSIGN_OR_RETURN(internal::EvpCipherCtxPtr ctx, StartCall(/*encrypt=*/false));
  // OpenSSL only reads the expected tag; the ctrl interface has no const overload.
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, kAesSivTagSize,
                          const_cast<char*>(v.data())) != 1) {
    return internal::OpenSslError("EVP_CTRL_AEAD_SET_TAG");
  }
  int written = 0;
  for (std::string_view component : associated_data) {
    if (EVP_DecryptUpdate(ctx.get(), nullptr, &written, NonNullBytes(component),
                          static_cast<int>(component.size())) != 1) {
      return internal::OpenSslError("EVP_DecryptUpdate(associated data)");
    }
  }
  std::string plaintext(ciphertext.size(), '\0');
  auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
  // SIV decrypts, recomputes V and compares it within this one call; Final reports the result.
  int final_bytes = 0;
  bool authentic = EVP_DecryptUpdate(ctx.get(), out, &written, NonNullBytes(ciphertext),
                                     static_cast<int>(ciphertext.size())) == 1 &&
                   static_cast<size_t>(written) == ciphertext.size() &&
                   EVP_DecryptFinal_ex(ctx.get(), out + plaintext.size(), &final_bytes) == 1 &&
                   final_bytes == 0;
  if (!authentic) {
    ERR_clear_error();
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    return CorruptError();
  }
  return plaintext;
}

}  // namespace coffer::crypto
