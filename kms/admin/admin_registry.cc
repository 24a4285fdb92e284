#include "kms/admin/admin_registry.h"

#include <openssl/crypto.h>

#include <cstdio>
#include <utility>

#include "crypto/random.h"
#include "crypto/secret_bytes.h"
#include "hsm/otp.h"
#include "kms/admin/admin_registry.pb.h"
#include "kms/admin/internal/admin_rows.h"
#include "kms/admin/otpauth.h"
#include "kms/keys/hsm_adapters.h"

namespace coffer::kms::admin {
namespace {

namespace v1 = ::coffer::admin::v1;
using internal::Corrupt;
using internal::FromRow;
using internal::OpenApprovalRow;
using internal::SealApprovalRow;
using internal::ToRow;

constexpr size_t kSecretBytes = 20;
// Every row lives in RocksDB's default column family: the store's family 0.
constexpr size_t kRows = 0;
constexpr char kCounterKey[] = "meta/next_approval_id";

std::string AdminKey(uint32_t uid) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "admin/%010u", uid);
  return buf;
}
std::string InviteKey(uint32_t uid) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "invite/%010u", uid);
  return buf;
}
std::string ApprovalKey(uint64_t id) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "approval/%020llu", static_cast<unsigned long long>(id));
  return buf;
}

// Part of the stored format (approval format 2): never change for an existing registry.
constexpr std::string_view kApprovalKeyLabel = "coffer-admin-approval-key-v2";
constexpr uint32_t kApprovalKeyVersion = 1;

int64_t SecondsMicros(std::chrono::seconds s) {
  return std::chrono::duration_cast<std::chrono::microseconds>(s).count();
}

template <typename Row>
absl::StatusOr<Row> ParseRow(const std::string& key, const std::string& message) {
  Row row;
  if (!row.ParseFromString(message)) return Corrupt(key, "does not parse");
  return row;
}

// Reads, verifies and parses the row at `key`; nullopt when absent.
template <typename Row>
absl::StatusOr<std::optional<Row>> GetRow(SignedRowStore& rows, const std::string& key) {
  Row row;
  COFFER_ASSIGN_OR_RETURN(bool found, rows.Get(kRows, key, row));
  if (!found) return std::optional<Row>();
  return std::optional<Row>(std::move(row));
}

bool IsPendingExpired(const ApprovalRecord& r, int64_t now) {
  return r.state == ApprovalState::kPending && now >= r.expires_micros;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdminRegistry>> AdminRegistry::Open(Options options) {
  if (options.totp == nullptr || options.rows == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "admin registry needs a TOTP token store and a row authenticator");
  }
  if (options.directory.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "admin registry needs a directory");
  }
  if (options.totp_settings.step_seconds == 0 || options.totp_settings.max_failures == 0) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "TOTP step and maximum failures must be positive");
  }
  if (options.clock == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "admin registry needs a clock");
  }
  SignedRowStore::Options store;
  store.directory = options.directory;
  store.column_families = {"default"};
  // The registry's format predates the store: its tags never bound the column family.
  store.format = {.store_name = "admin registry",
                  .tag_domain = "coffer-admin-row-v1",
                  .tag_binds_column_family = false};
  store.authenticator = options.rows;
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<SignedRowStore> rows,
                          SignedRowStore::Open(std::move(store)));
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes approval_key,
                          DeriveTokenKey(*options.rows, kApprovalKeyLabel));
  COFFER_ASSIGN_OR_RETURN(crypto::RecordAead sealer,
                          crypto::RecordAead::Create(approval_key, kApprovalKeyVersion));
  std::unique_ptr<AdminRegistry> registry(new AdminRegistry(std::move(options), std::move(rows)));
  registry->approval_sealer_.emplace(std::move(sealer));
  COFFER_RETURN_IF_ERROR(registry->SealClearApprovals());
  // A registry whose admin rows cannot be read (damaged or edited) opens, and every read of
  // them reports it; until then no uid is known not to be an admin, so content is refused to
  // every uid (fail closed).
  absl::StatusOr<std::vector<AdminRecord>> admins = registry->ListAdmins();
  if (admins.ok()) {
    for (const AdminRecord& admin : *admins) registry->enrolled_.insert(admin.uid);
  } else {
    registry->enrolled_unknown_ = true;
  }
  return registry;
}

// Approval format 1 rows (content in the clear) are rewritten sealed in one synced batch, then
// the store is compacted so the clear bytes leave its files. A registry whose rows cannot be
// read is left as it is: every read of the damaged rows reports it.
absl::Status AdminRegistry::SealClearApprovals() {
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> rows = ScanRows("approval/");
  if (!rows.ok()) return absl::OkStatus();
  SignedRowStore::Batch batch(*rows_);
  for (const auto& [key, message] : *rows) {
    absl::StatusOr<v1::ApprovalRow> row = ParseRow<v1::ApprovalRow>(key, message);
    if (!row.ok()) return absl::OkStatus();
    if (!row->sealed_content().empty()) continue;
    COFFER_ASSIGN_OR_RETURN(ApprovalRecord approval, OpenApprovalRow(*approval_sealer_, key, *row));
    COFFER_ASSIGN_OR_RETURN(v1::ApprovalRow sealed, SealApprovalRow(*approval_sealer_, approval));
    COFFER_RETURN_IF_ERROR(batch.Put(kRows, key, sealed));
  }
  if (batch.count() == 0) return absl::OkStatus();
  COFFER_RETURN_IF_ERROR(rows_->Write(batch));
  return rows_->CompactAll();
}

bool AdminRegistry::IsEnrolled(uint32_t uid) const {
  std::lock_guard<std::mutex> lock(enrolled_mu_);
  return enrolled_unknown_ || enrolled_.count(uid) != 0;
}

AdminRegistry::AdminRegistry(Options options, std::unique_ptr<SignedRowStore> rows)
    : options_(std::move(options)), rows_(std::move(rows)) {}

AdminRegistry::~AdminRegistry() = default;

int64_t AdminRegistry::NowMicros() const { return coffer::ToUnixMicros(options_.clock->Now()); }

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> AdminRegistry::ScanRows(
    std::string_view prefix) {
  std::vector<std::pair<std::string, std::string>> rows;
  COFFER_RETURN_IF_ERROR(
      rows_->Scan(kRows, prefix, [&rows](std::string_view key, std::string_view message) {
        rows.emplace_back(key, message);
        return absl::OkStatus();
      }));
  return rows;
}

absl::StatusOr<std::optional<AdminRecord>> AdminRegistry::LoadAdmin(uint32_t uid) {
  const std::string key = AdminKey(uid);
  COFFER_ASSIGN_OR_RETURN(auto row, GetRow<v1::AdminRow>(*rows_, key));
  if (!row) return std::optional<AdminRecord>();
  if (row->uid() != uid) return Corrupt(key, "names another uid");
  return std::optional<AdminRecord>(FromRow(*row));
}

absl::Status AdminRegistry::StoreAdmin(const AdminRecord& admin) {
  {
    // Before the row is written: a uid is denied content from the moment it may be enrolled.
    std::lock_guard<std::mutex> lock(enrolled_mu_);
    enrolled_.insert(admin.uid);
  }
  return rows_->Put(kRows, AdminKey(admin.uid), ToRow(admin));
}

absl::StatusOr<std::optional<Invitation>> AdminRegistry::LoadInvitation(uint32_t uid) {
  COFFER_ASSIGN_OR_RETURN(auto row, GetRow<v1::InvitationRow>(*rows_, InviteKey(uid)));
  if (!row) return std::optional<Invitation>();
  return std::optional<Invitation>(
      Invitation{row->uid(), row->invited_by(), row->created_micros(), row->expires_micros()});
}

absl::StatusOr<std::optional<ApprovalRecord>> AdminRegistry::LoadApproval(uint64_t id) {
  const std::string key = ApprovalKey(id);
  COFFER_ASSIGN_OR_RETURN(auto row, GetRow<v1::ApprovalRow>(*rows_, key));
  if (!row) return std::optional<ApprovalRecord>();
  if (row->id() != id) return Corrupt(key, "names another id");
  COFFER_ASSIGN_OR_RETURN(ApprovalRecord approval, OpenApprovalRow(*approval_sealer_, key, *row));
  return std::optional<ApprovalRecord>(std::move(approval));
}

absl::Status AdminRegistry::StoreApproval(const ApprovalRecord& approval) {
  COFFER_ASSIGN_OR_RETURN(v1::ApprovalRow row, SealApprovalRow(*approval_sealer_, approval));
  return rows_->Put(kRows, ApprovalKey(approval.id), row);
}

absl::StatusOr<ApprovalRecord> AdminRegistry::LoadApprovalRefreshed(uint64_t id) {
  COFFER_ASSIGN_OR_RETURN(auto approval, LoadApproval(id));
  if (!approval) {
    return MakeError(ErrorCode::kApprovalNotFound, "no approval request " + std::to_string(id));
  }
  if (IsPendingExpired(*approval, NowMicros())) {
    approval->state = ApprovalState::kExpired;
    COFFER_RETURN_IF_ERROR(StoreApproval(*approval));
  }
  return *std::move(approval);
}

absl::StatusOr<std::vector<AdminRecord>> AdminRegistry::ListAdmins() {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto rows, ScanRows("admin/"));
  std::vector<AdminRecord> out;
  for (const auto& [key, message] : rows) {
    COFFER_ASSIGN_OR_RETURN(auto row, ParseRow<v1::AdminRow>(key, message));
    out.push_back(FromRow(row));
  }
  return out;
}

absl::StatusOr<std::optional<AdminRecord>> AdminRegistry::FindAdmin(uint32_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  return LoadAdmin(uid);
}

absl::StatusOr<size_t> AdminRegistry::AdminCount() {
  COFFER_ASSIGN_OR_RETURN(auto admins, ListAdmins());
  return admins.size();
}

absl::Status AdminRegistry::Invite(uint32_t uid, uint32_t invited_by, std::chrono::seconds ttl) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto admin, LoadAdmin(uid));
  if (admin) return MakeError(ErrorCode::kAlreadyExists, "uid is already an enrolled admin");
  const int64_t now = NowMicros();
  v1::InvitationRow row;
  row.set_uid(uid);
  row.set_invited_by(invited_by);
  row.set_created_micros(now);
  row.set_expires_micros(now + SecondsMicros(ttl));
  return rows_->Put(kRows, InviteKey(uid), row);
}

absl::StatusOr<std::vector<Invitation>> AdminRegistry::ListInvitations() {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto rows, ScanRows("invite/"));
  const int64_t now = NowMicros();
  std::vector<Invitation> out;
  for (const auto& [key, message] : rows) {
    COFFER_ASSIGN_OR_RETURN(auto row, ParseRow<v1::InvitationRow>(key, message));
    if (now >= row.expires_micros()) continue;
    out.push_back(
        Invitation{row.uid(), row.invited_by(), row.created_micros(), row.expires_micros()});
  }
  return out;
}

absl::StatusOr<bool> AdminRegistry::HasInvitation(uint32_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto invitation, LoadInvitation(uid));
  return invitation.has_value() && NowMicros() < invitation->expires_micros;
}

absl::StatusOr<Enrollment> AdminRegistry::Claim(uint32_t uid, std::string name, bool bootstrap) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto existing, LoadAdmin(uid));
  if (existing) return MakeError(ErrorCode::kAlreadyExists, "uid is already an enrolled admin");
  const int64_t now = NowMicros();
  COFFER_ASSIGN_OR_RETURN(auto invitation, LoadInvitation(uid));
  const bool invited = invitation.has_value() && now < invitation->expires_micros;
  if (!bootstrap && !invited) {
    return MakeError(ErrorCode::kAdminNotEnrolled,
                     "uid has no unexpired invitation to enrol as an admin");
  }
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes secret, crypto::RandomSecret(kSecretBytes));
  absl::Status imported = options_.totp->ImportTotpSecret(uid, secret);
  if (ErrorCodeOf(imported) == ErrorCode::kAlreadyExists) {
    // A stale secret from an enrolment that never wrote its row (e.g. a crash in between).
    COFFER_RETURN_IF_ERROR(options_.totp->DestroyTotpSecret(uid));
    imported = options_.totp->ImportTotpSecret(uid, secret);
  }
  COFFER_RETURN_IF_ERROR(imported);
  AdminRecord admin;
  admin.uid = uid;
  admin.name = std::move(name);
  admin.enrolled_micros = now;
  admin.bootstrap = bootstrap;
  absl::Status stored = StoreAdmin(admin);
  if (!stored.ok()) {
    options_.totp->DestroyTotpSecret(uid).IgnoreError();
    return stored;
  }
  if (invitation) COFFER_RETURN_IF_ERROR(rows_->Delete(kRows, InviteKey(uid)));
  Enrollment enrollment;
  {
    std::string raw(reinterpret_cast<const char*>(secret.data()), secret.size());
    enrollment.otpauth_uri =
        OtpauthUri(options_.issuer, admin.name, raw, options_.totp_settings.step_seconds);
    OPENSSL_cleanse(raw.data(), raw.size());
  }
  enrollment.admin = std::move(admin);
  return enrollment;  // `secret` is wiped by its destructor
}

absl::Status AdminRegistry::Remove(uint32_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto admin, LoadAdmin(uid));
  if (!admin) return MakeError(ErrorCode::kAdminNotEnrolled, "uid is not an enrolled admin");
  absl::Status destroyed = options_.totp->DestroyTotpSecret(uid);
  if (!destroyed.ok() && ErrorCodeOf(destroyed) != ErrorCode::kHsmKeyNotFound) return destroyed;
  COFFER_RETURN_IF_ERROR(rows_->Delete(kRows, AdminKey(uid)));
  std::lock_guard<std::mutex> enrolled_lock(enrolled_mu_);
  enrolled_.erase(uid);
  return absl::OkStatus();
}

absl::StatusOr<AdminRecord> AdminRegistry::VerifyCode(uint32_t uid, std::string_view code) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto loaded, LoadAdmin(uid));
  if (!loaded) return MakeError(ErrorCode::kAdminNotEnrolled, "uid is not an enrolled admin");
  AdminRecord admin = *std::move(loaded);
  const int64_t now = NowMicros();
  if (admin.locked_until_micros > now) {
    const int64_t left = (admin.locked_until_micros - now + 999'999) / 1'000'000;
    return MakeError(ErrorCode::kMfaLockedOut, "too many wrong codes; locked out for another " +
                                                   std::to_string(left) + " seconds");
  }
  const TotpSettings& settings = options_.totp_settings;
  bool well_formed = code.size() == 6;
  for (char c : code) well_formed = well_formed && c >= '0' && c <= '9';
  std::optional<uint64_t> matched;
  if (well_formed && now >= 0) {
    COFFER_ASSIGN_OR_RETURN(uint64_t t, hsm::TotpCounter(static_cast<uint64_t>(now / 1'000'000),
                                                         settings.step_seconds));
    const uint64_t low = t >= settings.skew_steps ? t - settings.skew_steps : 0;
    // Check every step in the window (no early exit) so timing does not reveal which matched.
    for (uint64_t step = low; step <= t + settings.skew_steps; ++step) {
      COFFER_ASSIGN_OR_RETURN(auto mac, options_.totp->TotpHmac(uid, step));
      COFFER_ASSIGN_OR_RETURN(std::string expected, hsm::HotpTruncate(mac, 6));
      if (CRYPTO_memcmp(expected.data(), code.data(), 6) == 0) {
        if (!matched || step > *matched) matched = step;
      }
      OPENSSL_cleanse(expected.data(), expected.size());
    }
  }
  if (!matched) {
    admin.failures += 1;
    if (admin.failures >= settings.max_failures) {
      admin.failures = 0;
      admin.locked_until_micros = now + SecondsMicros(settings.lockout);
      COFFER_RETURN_IF_ERROR(StoreAdmin(admin));
      return MakeError(ErrorCode::kMfaLockedOut, "too many wrong codes; locked out for " +
                                                     std::to_string(settings.lockout.count()) +
                                                     " seconds");
    }
    COFFER_RETURN_IF_ERROR(StoreAdmin(admin));
    return MakeError(ErrorCode::kMfaCodeInvalid, "the TOTP code is wrong or malformed");
  }
  if (*matched <= admin.last_step) {
    return MakeError(ErrorCode::kMfaCodeReused,
                     "the TOTP code (or a later one) was already used; wait for the next code");
  }
  admin.last_step = *matched;
  admin.last_code_micros = now;
  admin.failures = 0;
  COFFER_RETURN_IF_ERROR(StoreAdmin(admin));
  return admin;
}

absl::StatusOr<ApprovalRecord> AdminRegistry::CreateApproval(
    uint32_t requester_uid, std::string requester_name, std::string payload, std::string summary,
    std::string dataset, std::chrono::seconds ttl) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto counter, GetRow<v1::CounterRow>(*rows_, kCounterKey));
  uint64_t id = 1;
  if (counter) {
    if (counter->next_id() == 0) return Corrupt(kCounterKey, "holds id 0");
    id = counter->next_id();
  }
  const int64_t now = NowMicros();
  ApprovalRecord approval;
  approval.id = id;
  approval.state = ApprovalState::kPending;
  approval.payload = std::move(payload);
  approval.summary = std::move(summary);
  approval.dataset = std::move(dataset);
  approval.requester_uid = requester_uid;
  approval.requester_name = std::move(requester_name);
  approval.created_micros = now;
  approval.expires_micros = now + SecondsMicros(ttl);
  // The counter and the row go in one synced batch, so an id is never handed out twice.
  v1::CounterRow next;
  next.set_next_id(id + 1);
  SignedRowStore::Batch batch(*rows_);
  COFFER_RETURN_IF_ERROR(batch.Put(kRows, kCounterKey, next));
  COFFER_ASSIGN_OR_RETURN(v1::ApprovalRow row, SealApprovalRow(*approval_sealer_, approval));
  COFFER_RETURN_IF_ERROR(batch.Put(kRows, ApprovalKey(id), row));
  COFFER_RETURN_IF_ERROR(rows_->Write(batch));
  return approval;
}

absl::StatusOr<ApprovalRecord> AdminRegistry::GetApproval(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  return LoadApprovalRefreshed(id);
}

absl::StatusOr<std::vector<ApprovalRecord>> AdminRegistry::ListApprovals(bool include_closed) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto rows, ScanRows("approval/"));
  const int64_t now = NowMicros();
  std::vector<ApprovalRecord> out;
  for (const auto& [key, message] : rows) {
    COFFER_ASSIGN_OR_RETURN(auto row, ParseRow<v1::ApprovalRow>(key, message));
    COFFER_ASSIGN_OR_RETURN(ApprovalRecord approval, OpenApprovalRow(*approval_sealer_, key, row));
    if (IsPendingExpired(approval, now)) approval.state = ApprovalState::kExpired;
    if (include_closed || approval.state == ApprovalState::kPending) {
      out.push_back(std::move(approval));
    }
  }
  return out;
}

absl::StatusOr<ApprovalRecord> AdminRegistry::Decide(uint64_t id, uint32_t approver_uid,
                                                     std::string approver_name, bool approve) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(ApprovalRecord approval, LoadApprovalRefreshed(id));
  if (approval.state != ApprovalState::kPending) {
    return MakeError(ErrorCode::kApprovalClosed, "approval request " + std::to_string(id) +
                                                     " was already decided or has expired");
  }
  if (approver_uid == approval.requester_uid) {
    return MakeError(ErrorCode::kApprovalForbidden,
                     "the requester cannot decide its own approval request");
  }
  approval.state = approve ? ApprovalState::kApproved : ApprovalState::kDenied;
  approval.approver_uid = approver_uid;
  approval.approver_name = std::move(approver_name);
  approval.decided_micros = NowMicros();
  COFFER_RETURN_IF_ERROR(StoreApproval(approval));
  return approval;
}

absl::Status AdminRegistry::RecordResult(uint64_t id, ErrorCode result) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto approval, LoadApproval(id));
  if (!approval) {
    return MakeError(ErrorCode::kApprovalNotFound, "no approval request " + std::to_string(id));
  }
  if (approval->state != ApprovalState::kApproved || approval->result_code != 0) {
    return MakeError(ErrorCode::kApprovalClosed,
                     "approval request " + std::to_string(id) + " is not awaiting a result");
  }
  approval->result_code = static_cast<int32_t>(result);
  if (result != ErrorCode::kOk) approval->state = ApprovalState::kFailed;
  return StoreApproval(*approval);
}

absl::StatusOr<std::vector<ApprovalRecord>> AdminRegistry::ExpireDue() {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(auto rows, ScanRows("approval/"));
  const int64_t now = NowMicros();
  std::vector<ApprovalRecord> expired;
  for (const auto& [key, message] : rows) {
    COFFER_ASSIGN_OR_RETURN(auto row, ParseRow<v1::ApprovalRow>(key, message));
    COFFER_ASSIGN_OR_RETURN(ApprovalRecord approval, OpenApprovalRow(*approval_sealer_, key, row));
    if (!IsPendingExpired(approval, now)) continue;
    approval.state = ApprovalState::kExpired;
    COFFER_RETURN_IF_ERROR(StoreApproval(approval));
    expired.push_back(std::move(approval));
  }
  return expired;
}

absl::StatusOr<ApprovalRecord> AdminRegistry::Redeem(uint64_t id, uint32_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(ApprovalRecord approval, LoadApprovalRefreshed(id));
  if (approval.requester_uid != uid) {
    return MakeError(ErrorCode::kApprovalForbidden, "only the admin who filed approval request " +
                                                        std::to_string(id) + " can redeem it");
  }
  if (approval.state != ApprovalState::kApproved) {
    return MakeError(ErrorCode::kApprovalClosed,
                     "approval request " + std::to_string(id) + " is not approved");
  }
  if (approval.redeemed_micros != 0) {
    return MakeError(ErrorCode::kApprovalClosed,
                     "approval request " + std::to_string(id) + " was already redeemed");
  }
  const int64_t now = NowMicros();
  if (now >= approval.expires_micros) {
    return MakeError(ErrorCode::kApprovalClosed,
                     "approval request " + std::to_string(id) + " has expired; file it again");
  }
  approval.redeemed_micros = now;
  COFFER_RETURN_IF_ERROR(StoreApproval(approval));
  return approval;
}

}  // namespace coffer::kms::admin
