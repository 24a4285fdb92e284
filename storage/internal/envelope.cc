#include "storage/internal/envelope.h"

#include <algorithm>
#include <cstring>

#include "crypto/base/status.h"
#include "crypto/constant_time.h"
#include "crypto/record_aead.h"

namespace coffer::storage::internal {
namespace {

absl::Status Corrupt() {
  return MakeError(ErrorCode::kCiphertextCorrupt, "data DB entry failed authentication");
}

absl::Status CheckId(std::string_view id) {
  if (id.empty()) return MakeError(ErrorCode::kInvalidArgument, "an id or name must not be empty");
  if (id.size() > kMaxIdSize) {
    return MakeError(ErrorCode::kIdTooLong, "ids and names are limited to 1024 bytes");
  }
  return absl::OkStatus();
}

// The authenticated plaintext (u32 id length ‖ id ‖ body) of `value`, stored under `stored_key`
// (kStoredKeySize bytes) in `cf`, and the parsed entry and header it came from.
struct Decrypted {
  Entry entry;
  uint32_t key_version = 0;
  std::string plaintext;
};
absl::StatusOr<Decrypted> DecryptEntry(KeyProvider* keys, Cf cf, KeyPurpose purpose,
                                       std::string_view stored_key, std::string_view value) {
  if (stored_key.size() != kStoredKeySize) return Corrupt();
  uint64_t handle = HandleOf(stored_key);
  Decrypted decrypted;
  COFFER_ASSIGN_OR_RETURN(decrypted.entry, ParseEntry(cf, value));
  COFFER_ASSIGN_OR_RETURN(crypto::RecordHeader header,
                          crypto::ParseRecordHeader(decrypted.entry.sealed));
  decrypted.key_version = header.key_version;
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> key,
                          keys->KeyForVersion(handle, purpose, header.key_version));
  COFFER_ASSIGN_OR_RETURN(const crypto::RecordAead* aead, key->record_aead());
  std::string ad = AssociatedData(cf, handle, purpose, stored_key, decrypted.entry.written_at_us,
                                  decrypted.entry.upload_id);
  COFFER_ASSIGN_OR_RETURN(decrypted.plaintext, aead->Open(decrypted.entry.sealed, ad));
  if (decrypted.plaintext.size() < 4 ||
      ReadU32(decrypted.plaintext) > decrypted.plaintext.size() - 4) {
    std::fill(decrypted.plaintext.begin(), decrypted.plaintext.end(), '\0');
    return Corrupt();
  }
  return decrypted;
}

// The key of an older lookup version that LiveVersions listed; null when it was retired since
// (the list is read without a lock, and a retirement may end before the key is asked for).
absl::StatusOr<std::shared_ptr<const DataKey>> OlderLookupKey(KeyProvider* keys, uint64_t handle,
                                                              uint32_t version) {
  absl::StatusOr<std::shared_ptr<const DataKey>> key =
      keys->KeyForVersion(handle, KeyPurpose::kLookup, version);
  if (!key.ok() && ErrorCodeOf(key.status()) == ErrorCode::kKeyVersionRetired) {
    return std::shared_ptr<const DataKey>();
  }
  return key;
}

}  // namespace

absl::StatusOr<uint32_t> LookupVersionOf(KeyProvider* keys, std::string_view stored_key,
                                         std::string_view id) {
  const uint64_t handle = HandleOf(stored_key);
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> primary,
                          keys->PrimaryKey(handle, KeyPurpose::kLookup, 0));
  COFFER_ASSIGN_OR_RETURN(const crypto::HmacSha256* hmac, primary->hmac());
  if (hmac->Verify(id, MacOf(stored_key)).ok()) return primary->version();
  COFFER_ASSIGN_OR_RETURN(std::vector<uint32_t> live,
                          keys->LiveVersions(handle, KeyPurpose::kLookup));
  for (uint32_t version : live) {
    if (version == primary->version()) continue;
    absl::StatusOr<std::shared_ptr<const DataKey>> older = OlderLookupKey(keys, handle, version);
    if (!older.ok()) return older.status();
    if (*older == nullptr) continue;  // retired since LiveVersions: nothing is under it
    COFFER_ASSIGN_OR_RETURN(const crypto::HmacSha256* older_hmac, (*older)->hmac());
    if (older_hmac->Verify(id, MacOf(stored_key)).ok()) return version;
  }
  return Corrupt();
}

absl::StatusOr<IdStoredKeys> StoredKeysFor(KeyProvider* keys, uint64_t handle,
                                           std::string_view id) {
  COFFER_RETURN_IF_ERROR(CheckId(id));
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> primary,
                          keys->PrimaryKey(handle, KeyPurpose::kLookup, 0));
  COFFER_ASSIGN_OR_RETURN(std::vector<uint32_t> live,
                          keys->LiveVersions(handle, KeyPurpose::kLookup));
  IdStoredKeys result;
  COFFER_ASSIGN_OR_RETURN(std::string primary_key, StoredKeyWith(*primary, handle, id));
  result.stored_keys.push_back(std::move(primary_key));
  result.versions.push_back(primary->version());
  for (uint32_t version : live) {
    if (version == primary->version()) continue;
    absl::StatusOr<std::shared_ptr<const DataKey>> older = OlderLookupKey(keys, handle, version);
    if (!older.ok()) return older.status();
    // Retired since LiveVersions (a retirement's count found nothing under it, so there is
    // nothing to find or lock); LockId then sees the live versions changed and starts over.
    if (*older == nullptr) continue;
    COFFER_ASSIGN_OR_RETURN(std::string older_key, StoredKeyWith(**older, handle, id));
    result.stored_keys.push_back(std::move(older_key));
    result.versions.push_back(version);
  }
  return result;
}

std::vector<std::string_view> IdStoredKeys::Macs() const {
  std::vector<std::string_view> macs;
  macs.reserve(stored_keys.size());
  for (const std::string& key : stored_keys) macs.push_back(MacOf(key));
  return macs;
}

absl::StatusOr<bool> IdStoredKeys::StillLive(KeyProvider* keys, uint64_t handle) const {
  COFFER_ASSIGN_OR_RETURN(std::vector<uint32_t> live,
                          keys->LiveVersions(handle, KeyPurpose::kLookup));
  // The primary first in both; the older ones are listed newest first in both.
  return live == versions;
}

absl::StatusOr<std::string> StoredKeyFor(KeyProvider* keys, uint64_t handle, std::string_view id) {
  COFFER_RETURN_IF_ERROR(CheckId(id));
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> lookup,
                          keys->PrimaryKey(handle, KeyPurpose::kLookup, 0));
  return StoredKeyWith(*lookup, handle, id);
}

absl::StatusOr<std::string> StoredKeyWith(const DataKey& lookup, uint64_t handle,
                                          std::string_view id) {
  COFFER_RETURN_IF_ERROR(CheckId(id));
  COFFER_ASSIGN_OR_RETURN(const crypto::HmacSha256* hmac, lookup.hmac());
  COFFER_ASSIGN_OR_RETURN(crypto::HmacSha256Tag mac, hmac->Compute(id));
  return StoredKey(handle, mac);
}

absl::StatusOr<std::string> SealEntryWith(const DataKey& key, Cf cf, std::string_view stored_key,
                                          int64_t written_at_us, std::string_view upload_id,
                                          std::string_view id, std::string_view body) {
  COFFER_ASSIGN_OR_RETURN(const crypto::RecordAead* aead, key.record_aead());
  std::string plaintext;
  plaintext.reserve(4 + id.size() + body.size());
  AppendU32(&plaintext, static_cast<uint32_t>(id.size()));
  plaintext.append(id);
  plaintext.append(body);
  std::string entry;
  entry.reserve(kEntryHeaderSize + upload_id.size() + plaintext.size() + crypto::kRecordOverhead);
  entry.push_back(static_cast<char>(kEntryFormatV1));
  AppendU64(&entry, static_cast<uint64_t>(written_at_us));
  entry.append(upload_id);
  std::string ad =
      AssociatedData(cf, HandleOf(stored_key), key.purpose(), stored_key, written_at_us, upload_id);
  absl::Status sealed = aead->SealTo(plaintext, ad, &entry);
  std::fill(plaintext.begin(), plaintext.end(), '\0');
  COFFER_RETURN_IF_ERROR(sealed);
  return entry;
}

absl::StatusOr<std::string> SealEntry(KeyProvider* keys, Cf cf, KeyPurpose purpose,
                                      std::string_view stored_key, int64_t written_at_us,
                                      std::string_view upload_id, std::string_view id,
                                      std::string_view body) {
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> key,
                          keys->PrimaryKey(HandleOf(stored_key), purpose, 1));
  return SealEntryWith(*key, cf, stored_key, written_at_us, upload_id, id, body);
}

absl::StatusOr<uint32_t> EntryKeyVersion(Cf cf, std::string_view value) {
  COFFER_ASSIGN_OR_RETURN(Entry entry, ParseEntry(cf, value));
  COFFER_ASSIGN_OR_RETURN(crypto::RecordHeader header, crypto::ParseRecordHeader(entry.sealed));
  return header.key_version;
}

absl::StatusOr<OpenedEntry> OpenEntry(KeyProvider* keys, Cf cf, KeyPurpose purpose,
                                      std::string_view stored_key, std::string_view value) {
  COFFER_ASSIGN_OR_RETURN(Decrypted decrypted, DecryptEntry(keys, cf, purpose, stored_key, value));
  OpenedEntry opened;
  size_t id_size = ReadU32(decrypted.plaintext);
  opened.id = decrypted.plaintext.substr(4, id_size);
  opened.body = decrypted.plaintext.substr(4 + id_size);
  std::fill(decrypted.plaintext.begin(), decrypted.plaintext.end(), '\0');
  // The tag binds the stored key; this binds the id to it, so a lookup-key mix-up or a sealed
  // entry written under the wrong key cannot return another id's value. The id may sit under
  // any live lookup version: the primary's is tried first.
  absl::StatusOr<uint32_t> version = LookupVersionOf(keys, stored_key, opened.id);
  if (!version.ok()) {
    std::fill(opened.body.begin(), opened.body.end(), '\0');
    std::fill(opened.id.begin(), opened.id.end(), '\0');
    return version.status();
  }
  opened.lookup_version = *version;
  opened.written_at_us = decrypted.entry.written_at_us;
  opened.upload_id = std::string(decrypted.entry.upload_id);
  opened.key_version = decrypted.key_version;
  return opened;
}

absl::StatusOr<std::string> OpenEntryBodyFor(KeyProvider* keys, Cf cf, KeyPurpose purpose,
                                             std::string_view stored_key, std::string_view id,
                                             std::string_view value) {
  COFFER_ASSIGN_OR_RETURN(Decrypted decrypted, DecryptEntry(keys, cf, purpose, stored_key, value));
  std::string& plaintext = decrypted.plaintext;
  // The caller derived stored_key from `id` with the lookup key, so the decrypted id is bound
  // to the stored key exactly when it is `id` (see the header).
  std::string_view stored_id = std::string_view(plaintext).substr(4, ReadU32(plaintext));
  if (!crypto::ConstantTimeEquals(stored_id, id)) {
    std::fill(plaintext.begin(), plaintext.end(), '\0');
    return Corrupt();
  }
  // The body in place: shift it to the front and wipe the bytes left behind it.
  const size_t prefix = 4 + id.size();
  const size_t body_size = plaintext.size() - prefix;
  std::memmove(plaintext.data(), plaintext.data() + prefix, body_size);
  std::fill(plaintext.begin() + static_cast<std::ptrdiff_t>(body_size), plaintext.end(), '\0');
  plaintext.resize(body_size);
  return std::move(plaintext);
}

}  // namespace coffer::storage::internal
