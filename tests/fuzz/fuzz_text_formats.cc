// Fuzz target: coffer's text formats, each read by its real parser.
//
// The first input byte chooses the format the rest is (its value modulo 6):
//   0  a full backup's MANIFEST (kms/keys/internal/backup_manifest.h ParseManifest);
//   1  a deletion-receipt file (kms/formats/receipt_file.h VerifyFile, fixed test signing key);
//   2  a pseudonym token (storage/pseudonymizer.h: TokenVersion, Reidentify and Translate over
//      keys from a seeded FakeKeyProvider, dataset 1 with two pseudonym versions);
//   3  cofferd's config file (kms/config/config.h ParseConfig, then the grant table built from
//      it as cofferd does);
//   4  a MANIFEST without its checksum line, which the target appends (so that mutations reach
//      the line parser past the checksum the fuzzer could not keep right);
//   5  a receipt's body line, which the target signs with the fixed key (so that mutations
//      reach the JSON body and format checks past the signature).
// The seeds are real files of each kind (tests/fuzz/make_seeds.cc).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "kms/config/config.h"
#include "kms/formats/receipt_file.h"
#include "kms/keys/internal/backup_manifest.h"
#include "kms/ops/authz.h"
#include "storage/pseudonymizer.h"
#include "storage/testing/fakes.h"
#include "tests/fuzz/fuzz_keys.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/text_format_keys.h"

namespace {

using coffer::fuzz::Fail;
using coffer::fuzz::Must;

struct World {
  World() {
    Must(keys.CreateDataset(coffer::fuzz::kPseudonymDataset));
    Must(keys.Rotate(coffer::fuzz::kPseudonymDataset, coffer::storage::KeyPurpose::kPseudonym));
  }
  std::unique_ptr<coffer::kms::audit::SoftwareEcdsaSigner> signer = coffer::fuzz::FixedSigner();
  std::string receipt_key_pem = Must(signer->PublicKeyPem());
  coffer::storage::testing::FakeKeyProvider keys{coffer::fuzz::kPseudonymKeySeed};
  coffer::storage::Pseudonymizer pseudonymizer{&keys};
};

World& TheWorld() {
  static World* world = new World();
  return *world;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  World& world = TheWorld();
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 6) {
    case 0:
      coffer::fuzz::Report("manifest", coffer::kms::internal::ParseManifest(1, text).status());
      break;
    case 4: {
      const std::string manifest =
          std::string(text) + "sha256 " + coffer::kms::internal::Sha256Hex(text) + "\n";
      coffer::fuzz::Report("manifest", coffer::kms::internal::ParseManifest(1, manifest).status());
      break;
    }
    case 1:
      coffer::fuzz::Report("receipt",
                           coffer::kms::receipt::VerifyFile(text, world.receipt_key_pem).status());
      break;
    case 5: {
      const std::string body_line = std::string(text.substr(0, text.find('\n'))) + "\n";
      const std::string signature =
          Must(world.signer->Sign(coffer::kms::receipt::SignedMessage(body_line)));
      const std::string file = coffer::kms::receipt::AssembleFile(body_line, signature);
      coffer::fuzz::Report("receipt",
                           coffer::kms::receipt::VerifyFile(file, world.receipt_key_pem).status());
      break;
    }
    case 2: {
      auto version = coffer::storage::Pseudonymizer::TokenVersion(text);
      auto identifier = world.pseudonymizer.Reidentify(coffer::fuzz::kPseudonymDataset, text);
      coffer::fuzz::Report("token", identifier.status());
      if (identifier.ok() && !version.ok()) Fail("a token opened that TokenVersion refuses");
      auto translated = world.pseudonymizer.Translate(coffer::fuzz::kPseudonymDataset, text);
      if (translated.ok()) {
        auto again = world.pseudonymizer.Reidentify(coffer::fuzz::kPseudonymDataset, *translated);
        if (!identifier.ok() || !again.ok() || *again != *identifier) {
          Fail("a translated token does not stand for the same identifier");
        }
      }
      break;
    }
    case 3: {
      auto config = coffer::daemon::ParseConfig(text, "fuzz");
      coffer::fuzz::Report("config", config.status());
      if (config.ok()) coffer::daemon::GrantTable::FromConfig(*config).IgnoreError();
      break;
    }
  }
  return 0;
}
