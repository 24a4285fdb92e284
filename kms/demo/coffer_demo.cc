// coffer-demo: shows the layers that exist so far working together on a real SoftHSM2 token.
//
// Run through scripts/start, which creates the token under ./var/hsm. The demo keeps its state in
// ./var/demo: a dataset wrapping key lives in the token, and the data key it wraps is stored on
// disk only as a wrapped blob — so a second run unwraps the blob that the first run stored.
// Nothing secret is printed: not the PIN, not a key, not plaintext beyond the demo's own sample.
//
// Usage: coffer-demo VAR_DIR   (SOFTHSM2_CONF, COFFER_HSM_TOKEN and COFFER_HSM_PIN_FILE set as
// printed by scripts/softhsm-token)

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "crypto/base/status.h"
#include "crypto/random.h"
#include "crypto/record_aead.h"
#include "crypto/streaming_io.h"
#include "hsm/hsm_client.h"

namespace coffer {
namespace {

constexpr hsm::WrappingKeyId kDemoDwk{/*dataset_handle=*/1, /*version=*/1};

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kIoError, "cannot read " + path.string());
  std::ostringstream data;
  data << in.rdbuf();
  return data.str();
}

absl::Status WriteFile(const std::filesystem::path& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) return MakeError(ErrorCode::kIoError, "cannot write " + path.string());
  return absl::OkStatus();
}

// Verifies a DER ECDSA-SHA256 signature with OpenSSL alone, from the exported PEM.
bool VerifyWithOpenSsl(const std::string& public_pem, std::string_view message,
                       std::string_view signature) {
  BIO* bio = BIO_new_mem_buf(public_pem.data(), static_cast<int>(public_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (key == nullptr) return false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx != nullptr && EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
            EVP_DigestVerify(
                ctx, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  return ok;
}

absl::Status Run(const std::filesystem::path& var_dir) {
  std::filesystem::path demo_dir = var_dir / "demo";
  std::error_code ec;
  std::filesystem::create_directories(demo_dir, ec);
  if (ec) return MakeError(ErrorCode::kIoError, "cannot create " + demo_dir.string());

  hsm::HsmOptions options;
  options.token_label = Env("COFFER_HSM_TOKEN");
  options.pin = hsm::PinSource::FromFile(Env("COFFER_HSM_PIN_FILE"));
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<hsm::HsmClient> client, hsm::HsmClient::Open(options));
  std::cout << "1. Logged in to token \"" << options.token_label << "\" ("
            << client->module_description() << ")\n";

  COFFER_ASSIGN_OR_RETURN(std::vector<hsm::WrappingKeyId> dwks, client->ListWrappingKeys());
  bool have_dwk = std::find(dwks.begin(), dwks.end(), kDemoDwk) != dwks.end();
  if (!have_dwk) COFFER_RETURN_IF_ERROR(client->CreateWrappingKey(kDemoDwk));
  COFFER_ASSIGN_OR_RETURN(hsm::WrappingKeyAttributes attributes,
                          client->InspectWrappingKey(kDemoDwk));
  std::cout << "2. Dataset wrapping key " << kDemoDwk.ToString()
            << (have_dwk ? " found" : " created")
            << " inside the token: sensitive=" << attributes.sensitive
            << " extractable=" << attributes.extractable
            << "; reading its value fails: " << ErrorCodeName(ErrorCodeOf(attributes.value_read))
            << "\n";

  std::filesystem::path blob_path = demo_dir / "records-dek.wrapped";
  hsm::WrappedKey wrapped;
  if (std::filesystem::exists(blob_path)) {
    COFFER_ASSIGN_OR_RETURN(std::string blob, ReadFile(blob_path));
    COFFER_ASSIGN_OR_RETURN(wrapped, hsm::WrappedKey::Parse(blob));
    std::cout << "3. Data key loaded from " << blob_path.string() << " (" << blob.size()
              << "-byte wrapped blob stored by an earlier run)\n";
  } else {
    COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes fresh, crypto::RandomSecret(hsm::kDekBytes));
    COFFER_ASSIGN_OR_RETURN(wrapped, client->Wrap(kDemoDwk, fresh));
    COFFER_RETURN_IF_ERROR(WriteFile(blob_path, wrapped.Serialize()));
    std::cout << "3. Data key drawn from OpenSSL's private DRBG, wrapped with CKM_AES_KEY_WRAP and "
                 "stored as "
              << blob_path.string() << "\n";
  }
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes dek, client->Unwrap(wrapped));
  std::cout << "4. Unwrapped in the token into a session object, read into the secure heap\n";

  COFFER_ASSIGN_OR_RETURN(crypto::RecordAead aead, crypto::RecordAead::Create(dek, 1));
  const std::string record = "ticket #4711: printer on fire";
  COFFER_ASSIGN_OR_RETURN(std::string sealed, aead.Seal(record, "dataset=1|id=4711"));
  COFFER_ASSIGN_OR_RETURN(std::string opened, aead.Open(sealed, "dataset=1|id=4711"));
  absl::Status moved = aead.Open(sealed, "dataset=1|id=4712").status();
  std::cout << "5. Record sealed (record-v1, " << sealed.size() << " bytes for " << record.size()
            << " of plaintext); opens: " << (opened == record ? "yes" : "NO")
            << "; opened as another record: " << ErrorCodeName(ErrorCodeOf(moved)) << "\n";

  std::string attachment(3 * 65536 + 1234, '\0');
  COFFER_RETURN_IF_ERROR(crypto::RandomBytes(
      absl::MakeSpan(reinterpret_cast<uint8_t*>(attachment.data()), attachment.size())));
  std::string stream;
  crypto::StringCiphertextSink sink(&stream);
  COFFER_ASSIGN_OR_RETURN(auto writer,
                          crypto::StreamEncryptingWriter::Create(dek, 1, "dataset=1|doc", &sink));
  COFFER_RETURN_IF_ERROR(writer->Write(attachment));
  COFFER_RETURN_IF_ERROR(writer->Close());
  crypto::StringCiphertextSource source(stream);
  COFFER_ASSIGN_OR_RETURN(auto reader,
                          crypto::StreamDecryptingReader::Create(dek, 1, "dataset=1|doc", &source));
  std::string range;
  COFFER_RETURN_IF_ERROR(reader->Read(65536 - 10, 100, &range));
  std::cout << "6. Attachment of " << attachment.size() << " bytes streamed (stream-v1, "
            << stream.size() << " bytes); a 100-byte range across a segment boundary reads back "
            << (range == attachment.substr(65536 - 10, 100) ? "intact" : "WRONG") << "\n";

  const std::string message = "coffer demo checkpoint";
  COFFER_ASSIGN_OR_RETURN(std::string signature, client->Sign(message));
  COFFER_ASSIGN_OR_RETURN(std::string public_pem, client->PublicKeyPem());
  std::filesystem::path pem_path = var_dir / "signing-public-key.pem";
  COFFER_RETURN_IF_ERROR(WriteFile(pem_path, public_pem));
  std::cout << "7. Signed in the token (ECDSA P-256); verified by OpenSSL alone with "
            << pem_path.string() << ": "
            << (VerifyWithOpenSsl(public_pem, message, signature) ? "valid" : "INVALID") << "\n";

  COFFER_RETURN_IF_ERROR(client->Close());
  std::cout << "Done. Run scripts/test to run every test.\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace coffer

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: coffer-demo VAR_DIR (run it through scripts/start)\n";
    return 2;
  }
  absl::Status status = coffer::Run(argv[1]);
  if (!status.ok()) {
    std::cerr << "coffer-demo: " << coffer::ErrorCodeName(coffer::ErrorCodeOf(status)) << ": "
              << status.message() << "\n";
    return 1;
  }
  return 0;
}
