// Golden ciphertexts: every build must still decrypt the checked-in files, and re-encrypting
// their inputs through the internal deterministic API must reproduce them byte for byte, so
// any drift of the record-v1 or stream-v1 format fails here (docs/formats.md).

#include <fstream>
#include <string>

#include "crypto/base/status.h"
#include "crypto/internal/aes_gcm.h"
#include "crypto/internal/record_seal.h"
#include "crypto/internal/stream_encrypter_factory.h"
#include "crypto/record_aead.h"
#include "crypto/streaming_aead.h"
#include "crypto/streaming_io.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/crypto/test_keys.h"
#include "tests/testing/vectors.h"

namespace coffer::crypto {
namespace {

using ::coffer::testing::HexToBytes;
using ::coffer::testing::SecretFrom;
using ::coffer::testing::SpanOf;

nlohmann::json LoadGolden(const std::string& name) {
  std::ifstream in(std::string(COFFER_GOLDEN_DIR) + "/" + name);
  EXPECT_TRUE(in) << "missing golden file " << name;
  if (!in) return nullptr;
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

std::string Hex(const nlohmann::json& vector, const char* field) {
  return HexToBytes(vector.at(field).get<std::string>());
}

TEST(GoldenTest, RecordV1) {
  nlohmann::json golden = LoadGolden("record_v1.json");
  ASSERT_TRUE(golden.is_object());
  ASSERT_EQ(golden.at("vectors").size(), 3u);
  for (const nlohmann::json& vector : golden.at("vectors")) {
    SCOPED_TRACE(vector.at("name").get<std::string>());
    auto key_version = vector.at("key_version").get<uint32_t>();
    std::string ciphertext = Hex(vector, "ciphertext");
    std::string plaintext = Hex(vector, "plaintext");
    std::string associated_data = Hex(vector, "associated_data");

    auto aead = RecordAead::Create(SecretFrom(Hex(vector, "key")), key_version);
    ASSERT_TRUE(aead.ok());
    auto opened = aead->Open(ciphertext, associated_data);
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_EQ(*opened, plaintext);

    auto gcm = internal::AesGcm256::Create(SecretFrom(Hex(vector, "key")));
    ASSERT_TRUE(gcm.ok());
    std::string nonce = Hex(vector, "nonce");
    std::string resealed;
    ASSERT_TRUE(internal::SealRecordWithNonce(*gcm, key_version, SpanOf(nonce), plaintext,
                                              associated_data, &resealed)
                    .ok());
    EXPECT_EQ(resealed, ciphertext);
  }
}

TEST(GoldenTest, StreamV1) {
  nlohmann::json golden = LoadGolden("stream_v1.json");
  ASSERT_TRUE(golden.is_object());
  ASSERT_EQ(golden.at("vectors").size(), 4u);
  for (const nlohmann::json& vector : golden.at("vectors")) {
    SCOPED_TRACE(vector.at("name").get<std::string>());
    auto key_version = vector.at("key_version").get<uint32_t>();
    auto segment_size = vector.at("segment_size").get<uint32_t>();
    std::string context = Hex(vector, "context");
    std::string plaintext = Hex(vector, "plaintext");
    std::string ciphertext = Hex(vector, "ciphertext");

    StringCiphertextSource source(ciphertext);
    auto reader = StreamDecryptingReader::Create(SecretFrom(Hex(vector, "key")), key_version,
                                                 context, &source);
    ASSERT_TRUE(reader.ok()) << reader.status();
    std::string decrypted;
    ASSERT_TRUE((*reader)->Read(0, (*reader)->size(), &decrypted).ok());
    EXPECT_EQ(decrypted, plaintext);

    std::string salt = Hex(vector, "salt");
    std::string prefix = Hex(vector, "nonce_prefix");
    auto encrypter = internal::StreamEncrypterFactory::Create(SecretFrom(Hex(vector, "key")),
                                                              key_version, context, segment_size,
                                                              SpanOf(salt), SpanOf(prefix));
    ASSERT_TRUE(encrypter.ok());
    std::string reencrypted(encrypter->header());
    std::string_view rest = plaintext;
    do {
      bool last = rest.size() <= segment_size;
      std::string_view piece = rest.substr(0, last ? rest.size() : segment_size);
      ASSERT_TRUE(encrypter->EncryptSegment(piece, last, &reencrypted).ok());
      rest.remove_prefix(piece.size());
    } while (!rest.empty());
    EXPECT_EQ(reencrypted, ciphertext);
  }
}

}  // namespace
}  // namespace coffer::crypto
