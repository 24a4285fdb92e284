// HsmClient's roles against a real SoftHSM2 token: key attributes, tamper handling without
// reconnect, recovery after a lost session, signatures verified by OpenSSL alone, TOTP in the
// token, the project's RNG after C_Initialize, and many threads at once.

#include "hsm/hsm_client.h"

#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <atomic>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "crypto/random.h"
#include "gtest/gtest.h"
#include "hsm/internal/pkcs11.h"
#include "hsm/otp.h"
#include "tests/hsm/softhsm_token.h"
#include "tests/testing/vectors.h"

namespace coffer::hsm {
namespace {

using ::coffer::hsm::testing::UniqueDatasetHandle;

class HsmClientTest : public testing::SoftHsmSuite {
 protected:
  WrappingKeyId NewKey() {
    WrappingKeyId id{UniqueDatasetHandle(), 1};
    EXPECT_TRUE(client_->wrapping_keys().CreateWrappingKey(id).ok());
    return id;
  }

  // The same library, already initialised in this process: reach it directly and close all
  // sessions behind the client's back (as a device reset would).
  static void CloseAllSessionsBehindTheClientsBack() {
    void* library = dlopen(std::string(kDefaultModulePath).c_str(), RTLD_NOW | RTLD_NOLOAD);
    ASSERT_NE(library, nullptr);
    auto get_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(library, "C_GetFunctionList"));
    ASSERT_NE(get_list, nullptr);
    CK_FUNCTION_LIST* functions = nullptr;
    ASSERT_EQ(get_list(&functions), CKR_OK);
    ASSERT_EQ(functions->C_CloseAllSessions(client_->token().slot_id()), CKR_OK);
    dlclose(library);
  }
};

TEST_F(HsmClientTest, WrappingKeyIsSensitiveNonExtractableWrapOnly) {
  WrappingKeyId id = NewKey();
  absl::StatusOr<WrappingKeyAttributes> attributes =
      client_->wrapping_keys().InspectWrappingKey(id);
  ASSERT_TRUE(attributes.ok()) << attributes.status();
  EXPECT_TRUE(attributes->token);
  EXPECT_TRUE(attributes->is_private);
  EXPECT_TRUE(attributes->sensitive);
  EXPECT_FALSE(attributes->extractable);
  EXPECT_TRUE(attributes->always_sensitive);
  EXPECT_TRUE(attributes->never_extractable);
  EXPECT_TRUE(attributes->wrap);
  EXPECT_TRUE(attributes->unwrap);
  EXPECT_FALSE(attributes->encrypt);
  EXPECT_FALSE(attributes->decrypt);
  EXPECT_FALSE(attributes->sign);
  EXPECT_EQ(attributes->label, "coffer/dwk/" + std::to_string(id.dataset_handle) + "/1");
  ASSERT_TRUE(client_->token().allowed_mechanisms_supported())
      << "SoftHSM2 2.6 supports the attribute";
  EXPECT_EQ(attributes->allowed_mechanisms, std::vector<CK_MECHANISM_TYPE>{CKM_AES_KEY_WRAP});
  // Reading the key's value fails: the token says it is sensitive.
  EXPECT_FALSE(attributes->value_read.ok());
  EXPECT_EQ(ErrorCodeOf(attributes->value_read), ErrorCode::kPermissionDenied);
  EXPECT_NE(attributes->value_read.message().find("CKR_ATTRIBUTE_SENSITIVE"), std::string::npos)
      << attributes->value_read;
}

TEST_F(HsmClientTest, TamperedBlobIsCorruptAndSessionStaysUp) {
  WrappingKeyId id = NewKey();
  crypto::SecretBytes dek = *crypto::RandomSecret(kDekBytes);
  absl::StatusOr<WrappedKey> wrapped = client_->wrapping_keys().Wrap(id, dek);
  ASSERT_TRUE(wrapped.ok());
  uint64_t reconnects = client_->token().reconnect_count();
  WrappedKey tampered = *wrapped;
  tampered.wrapped[5] ^= 0x01;
  absl::Status status = client_->wrapping_keys().Unwrap(tampered).status();
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kWrappedKeyCorrupt) << status;
  EXPECT_NE(status.message().find("CKR_GENERAL_ERROR"), std::string::npos) << status;
  EXPECT_EQ(client_->token().reconnect_count(), reconnects) << "a corrupt blob must not reconnect";
  absl::StatusOr<crypto::SecretBytes> unwrapped = client_->wrapping_keys().Unwrap(*wrapped);
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.status();
  EXPECT_TRUE(crypto::SecretEquals(*unwrapped, dek));
}

// Regression for "stays broken after a session error": the token drops every session (as after
// a device reset); the next request reconnects, logs in again and succeeds.
TEST_F(HsmClientTest, RecoversAfterTheTokenDropsAllSessions) {
  WrappingKeyId id = NewKey();
  crypto::SecretBytes dek = *crypto::RandomSecret(kDekBytes);
  absl::StatusOr<WrappedKey> wrapped = client_->wrapping_keys().Wrap(id, dek);
  ASSERT_TRUE(wrapped.ok());

  ASSERT_NO_FATAL_FAILURE(CloseAllSessionsBehindTheClientsBack());

  uint64_t reconnects = client_->token().reconnect_count();
  absl::StatusOr<crypto::SecretBytes> unwrapped = client_->wrapping_keys().Unwrap(*wrapped);
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.status();
  EXPECT_TRUE(crypto::SecretEquals(*unwrapped, dek));
  EXPECT_EQ(client_->token().reconnect_count(), reconnects + 1);
  // The rebuilt handle map still knows every key, and new keys can be created.
  EXPECT_TRUE(client_->wrapping_keys().Wrap(id, dek).ok());
  EXPECT_TRUE(client_->wrapping_keys().CreateWrappingKey({UniqueDatasetHandle(), 1}).ok());
}

// The roles share one Token: a reconnect that one role's call triggers re-logs in once and
// rebuilds every role's handles, so the other roles carry on without reconnecting again.
TEST_F(HsmClientTest, OneRolesReconnectRebuildsEveryRolesHandles) {
  WrappingKeyId id = NewKey();
  crypto::SecretBytes dek = *crypto::RandomSecret(kDekBytes);
  absl::StatusOr<WrappedKey> wrapped = client_->wrapping_keys().Wrap(id, dek);
  ASSERT_TRUE(wrapped.ok());
  const uint64_t admin = 8;
  ASSERT_TRUE(client_->totp_secrets().ImportTotpSecret(admin, *crypto::RandomSecret(20)).ok());
  absl::StatusOr<std::array<uint8_t, 20>> totp = client_->totp_secrets().TotpHmac(admin, 3);
  absl::StatusOr<std::string> pem = client_->signer().PublicKeyPem();
  // Service keys exist before the sessions drop: a create is never retried after a reconnect.
  absl::StatusOr<std::array<uint8_t, 32>> row_before =
      client_->row_authenticator().HmacRowKey("row");
  ASSERT_TRUE(totp.ok() && pem.ok() && row_before.ok());

  ASSERT_NO_FATAL_FAILURE(CloseAllSessionsBehindTheClientsBack());
  uint64_t reconnects = client_->token().reconnect_count();
  absl::StatusOr<std::array<uint8_t, 32>> row = client_->row_authenticator().HmacRowKey("row");
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(*row, *row_before);
  EXPECT_EQ(client_->token().reconnect_count(), reconnects + 1);

  absl::StatusOr<crypto::SecretBytes> unwrapped = client_->wrapping_keys().Unwrap(*wrapped);
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.status();
  EXPECT_TRUE(crypto::SecretEquals(*unwrapped, dek));
  absl::StatusOr<std::array<uint8_t, 20>> totp_again = client_->totp_secrets().TotpHmac(admin, 3);
  ASSERT_TRUE(totp_again.ok()) << totp_again.status();
  EXPECT_EQ(*totp_again, *totp);
  absl::StatusOr<std::string> pem_again = client_->signer().PublicKeyPem();
  ASSERT_TRUE(pem_again.ok()) << pem_again.status();
  EXPECT_EQ(*pem_again, *pem);
  EXPECT_EQ(client_->token().reconnect_count(), reconnects + 1) << "one login served them all";
  ASSERT_TRUE(client_->totp_secrets().DestroyTotpSecret(admin).ok());
}

TEST_F(HsmClientTest, SignatureVerifiesWithExportedPublicKeyThroughOpenSslAlone) {
  absl::StatusOr<std::string> pem = client_->signer().PublicKeyPem();
  ASSERT_TRUE(pem.ok()) << pem.status();
  EXPECT_EQ(pem->rfind("-----BEGIN PUBLIC KEY-----", 0), 0u);
  absl::StatusOr<std::string> again = client_->signer().PublicKeyPem();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*pem, *again) << "the signing key is created once, then reused";

  const std::string message = "checkpoint seq=42 head=abcdef";
  absl::StatusOr<std::string> signature = client_->signer().Sign(message);
  ASSERT_TRUE(signature.ok()) << signature.status();

  BIO* bio = BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size()));
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ASSERT_NE(key, nullptr);
  auto verify = [&](const std::string& msg) {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    int ok = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key);
    if (ok == 1) {
      ok = EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature->data()),
                            signature->size(), reinterpret_cast<const unsigned char*>(msg.data()),
                            msg.size());
    }
    EVP_MD_CTX_free(ctx);
    return ok == 1;
  };
  EXPECT_TRUE(verify(message));
  EXPECT_FALSE(verify(message + "x"));
  EVP_PKEY_free(key);
}

TEST_F(HsmClientTest, RowHmacIsDeterministicPerInput) {
  absl::StatusOr<std::array<uint8_t, 32>> a = client_->row_authenticator().HmacRowKey("row 1");
  absl::StatusOr<std::array<uint8_t, 32>> b = client_->row_authenticator().HmacRowKey("row 1");
  absl::StatusOr<std::array<uint8_t, 32>> c = client_->row_authenticator().HmacRowKey("row 2");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status();
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
}

TEST_F(HsmClientTest, TotpCodesComputedInTheTokenMatchRfc6238Sha1Vectors) {
  nlohmann::json vectors = coffer::testing::LoadVectorFile("rfc/totp_rfc6238.json");
  ASSERT_FALSE(vectors.is_null());
  std::vector<uint8_t> seed =
      coffer::testing::HexToVector(vectors["seeds"]["SHA1"]["hex"].get<std::string>());
  const uint64_t admin = 7;
  ASSERT_TRUE(
      client_->totp_secrets().ImportTotpSecret(admin, *crypto::SecretBytes::CopyFrom(seed)).ok());
  EXPECT_EQ(ErrorCodeOf(client_->totp_secrets().ImportTotpSecret(
                admin, *crypto::SecretBytes::CopyFrom(seed))),
            ErrorCode::kAlreadyExists);
  const int digits = vectors["parameters"]["digits"].get<int>();
  const uint64_t step = vectors["parameters"]["time_step_seconds"].get<uint64_t>();
  int checked = 0;
  for (const auto& v : vectors["vectors"]) {
    if (v["mode"] != "SHA1") continue;
    absl::StatusOr<uint64_t> counter = TotpCounter(v["time"].get<uint64_t>(), step);
    ASSERT_TRUE(counter.ok());
    absl::StatusOr<std::array<uint8_t, 20>> mac = client_->totp_secrets().TotpHmac(admin, *counter);
    ASSERT_TRUE(mac.ok()) << mac.status();
    absl::StatusOr<std::string> code = HotpTruncate(*mac, digits);
    ASSERT_TRUE(code.ok());
    EXPECT_EQ(*code, v["totp"].get<std::string>()) << "time " << v["time"];
    ++checked;
  }
  EXPECT_EQ(checked, 6);
  ASSERT_TRUE(client_->totp_secrets().DestroyTotpSecret(admin).ok());
  EXPECT_EQ(ErrorCodeOf(client_->totp_secrets().TotpHmac(admin, 1).status()),
            ErrorCode::kHsmKeyNotFound);
}

// The design brief's randomness rule, checked with SoftHSM2 initialised in this process.
TEST_F(HsmClientTest, ProjectRandomnessStillDrawsFromOpenSslPrivateDrbg) {
  // Make the module draw randomness itself, as it does when generating keys.
  ASSERT_TRUE(client_->wrapping_keys().CreateWrappingKey({UniqueDatasetHandle(), 1}).ok());

  // RAND_METHOD is deprecated API, but it is exactly what an ENGINE-installing module changes.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  const bool default_method_is_openssl = RAND_get_rand_method() == RAND_OpenSSL();
#pragma GCC diagnostic pop
  RecordProperty("rand_method_is_openssl_after_softhsm_init",
                 default_method_is_openssl ? "true" : "false");

  EVP_RAND_CTX* drbg = RAND_get0_private(nullptr);
  ASSERT_NE(drbg, nullptr);
  EXPECT_EQ(EVP_RAND_get_state(drbg), EVP_RAND_STATE_READY);
  // A signal independent of the bytes themselves: with reseed_requests = 1 the private DRBG
  // reseeds on every generate call, so its reseed counter moves only if our bytes came from it.
  unsigned int original_requests = 0;
  OSSL_PARAM get_requests[] = {
      OSSL_PARAM_construct_uint(OSSL_DRBG_PARAM_RESEED_REQUESTS, &original_requests),
      OSSL_PARAM_construct_end()};
  ASSERT_EQ(EVP_RAND_CTX_get_params(drbg, get_requests), 1);
  unsigned int one = 1;
  OSSL_PARAM set_requests[] = {OSSL_PARAM_construct_uint(OSSL_DRBG_PARAM_RESEED_REQUESTS, &one),
                               OSSL_PARAM_construct_end()};
  ASSERT_EQ(EVP_RAND_CTX_set_params(drbg, set_requests), 1);
  auto reseed_counter = [&] {
    unsigned int counter = 0;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_uint(OSSL_DRBG_PARAM_RESEED_COUNTER, &counter),
                           OSSL_PARAM_construct_end()};
    EXPECT_EQ(EVP_RAND_CTX_get_params(drbg, params), 1);
    return counter;
  };
  unsigned int before = reseed_counter();
  std::array<uint8_t, 64> ours{};
  ASSERT_TRUE(crypto::RandomBytes(absl::MakeSpan(ours)).ok());
  unsigned int after = reseed_counter();
  OSSL_PARAM restore[] = {
      OSSL_PARAM_construct_uint(OSSL_DRBG_PARAM_RESEED_REQUESTS, &original_requests),
      OSSL_PARAM_construct_end()};
  ASSERT_EQ(EVP_RAND_CTX_set_params(drbg, restore), 1);
  EXPECT_GT(after, before) << "crypto::RandomBytes did not go through the private DRBG";
  const std::array<uint8_t, 64> zero{};
  EXPECT_NE(ours, zero);
  absl::StatusOr<crypto::SecretBytes> a = crypto::RandomSecret(32);
  absl::StatusOr<crypto::SecretBytes> b = crypto::RandomSecret(32);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(crypto::SecretEquals(*a, *b));
}

TEST_F(HsmClientTest, EightThreadsWrapAndUnwrapAtOnce) {
  WrappingKeyId shared = NewKey();
  constexpr int kThreads = 8;
  constexpr int kIterations = 40;
  std::atomic<int> failures{0};
  std::atomic<int> successes{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Half the threads also use keys of their own, created concurrently.
      WrappingKeyId id = shared;
      if (t % 2 == 1) {
        id = {UniqueDatasetHandle(), 1};
        if (!client_->wrapping_keys().CreateWrappingKey(id).ok()) {
          failures.fetch_add(1);
          return;
        }
      }
      for (int i = 0; i < kIterations; ++i) {
        absl::StatusOr<crypto::SecretBytes> dek = crypto::RandomSecret(kDekBytes);
        absl::StatusOr<WrappedKey> wrapped = client_->wrapping_keys().Wrap(id, *dek);
        if (!wrapped.ok()) {
          failures.fetch_add(1);
          continue;
        }
        absl::StatusOr<crypto::SecretBytes> back = client_->wrapping_keys().Unwrap(*wrapped);
        if (back.ok() && crypto::SecretEquals(*back, *dek)) {
          successes.fetch_add(1);
        } else {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(successes.load(), kThreads * kIterations);
}

}  // namespace
}  // namespace coffer::hsm
