#include "hsm/token.h"

#include <optional>
#include <tuple>
#include <utility>

#include "crypto/base/status.h"
#include "hsm/internal/attributes.h"
#include "hsm/internal/ck_error.h"
#include "hsm/internal/session.h"

namespace coffer::hsm {
namespace {

using internal::AttributeList;
using internal::CkError;

constexpr size_t kEnumerationBatch = 512;

std::string Trimmed(const unsigned char* field, size_t size) {
  std::string text(reinterpret_cast<const char*>(field), size);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\0')) text.pop_back();
  return text;
}

absl::Status ClosedError() {
  return MakeError(ErrorCode::kFailedPrecondition, "the HSM client is closed");
}

// The session, the device or the token itself is gone (CKR_SESSION_*, CKR_DEVICE_*,
// CKR_TOKEN_NOT_PRESENT): reconnecting may help.
bool IsConnectionError(const absl::Status& status) {
  ErrorCode code = ErrorCodeOf(status);
  return code == ErrorCode::kHsmSessionError || code == ErrorCode::kHsmDeviceError ||
         code == ErrorCode::kHsmTokenNotFound;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Token>> Token::Load(const HsmOptions& options) {
  if (options.token_label.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "no HSM token label configured");
  }
  // The PIN first: a configuration mistake should not cost a module load.
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes pin, options.pin.ReadPin());
  COFFER_ASSIGN_OR_RETURN(Module module, Module::Load(options.module_path));
  return std::unique_ptr<Token>(new Token(std::move(module), options, std::move(pin)));
}

Token::Token(Module module, HsmOptions options, crypto::SecretBytes pin)
    : module_(std::move(module)), options_(std::move(options)), pin_(std::move(pin)) {}

Token::~Token() { (void)Close(); }

absl::Status Token::Connect(std::vector<ObjectIndex*> indexes) {
  std::unique_lock<std::shared_mutex> lock(conn_mu_);
  if (closed_) return ClosedError();
  if (generation_ != 0 || !indexes_.empty()) {
    return MakeError(ErrorCode::kFailedPrecondition, "the HSM token is already connected");
  }
  indexes_ = std::move(indexes);
  absl::Status connected = ConnectLocked();
  serving_.store(connected.ok());
  return connected;
}

absl::Status Token::Close() {
  std::unique_lock<std::shared_mutex> lock(conn_mu_);
  if (closed_) return absl::OkStatus();
  closed_ = true;
  connected_ = false;
  serving_.store(false);
  pool_.reset();
  if (module_.is_open()) (void)module_.functions()->C_CloseAllSessions(slot_);
  return module_.Close();
}

absl::Status Token::CheckOpen() {
  std::shared_lock<std::shared_mutex> lock(conn_mu_);
  return closed_ ? ClosedError() : absl::OkStatus();
}

absl::Status Token::ConnectLocked() {
  pool_.reset();
  connected_ = false;
  COFFER_ASSIGN_OR_RETURN(slot_, FindSlot());
  COFFER_RETURN_IF_ERROR(CheckMechanisms(slot_));

  // Sessions, and one login for all of them.
  pool_ = std::make_unique<internal::SessionPool>(functions(), slot_, options_.session_pool_size);
  COFFER_ASSIGN_OR_RETURN(internal::SessionPool::Lease lease, pool_->Acquire());
  COFFER_RETURN_IF_ERROR(Login(lease.handle()));

  // One enumeration; each role keeps the part it owns.
  COFFER_ASSIGN_OR_RETURN(std::vector<TokenObject> objects, Enumerate(lease.handle()));
  for (ObjectIndex* index : indexes_) index->Rebuild(objects);
  connected_ = true;
  ++generation_;
  return absl::OkStatus();
}

// The slot whose initialised token carries our label.
absl::StatusOr<CK_SLOT_ID> Token::FindSlot() {
  CK_FUNCTION_LIST* f = functions();
  CK_ULONG count = 0;
  CK_RV rv = f->C_GetSlotList(CK_TRUE, nullptr, &count);
  if (rv != CKR_OK) return CkError("C_GetSlotList", rv, "listing the module's tokens");
  std::vector<CK_SLOT_ID> slots(count);
  rv = f->C_GetSlotList(CK_TRUE, slots.data(), &count);
  if (rv != CKR_OK) return CkError("C_GetSlotList", rv, "listing the module's tokens");
  slots.resize(count);
  std::string seen;
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info;
    if (f->C_GetTokenInfo(slot, &info) != CKR_OK) continue;
    if ((info.flags & CKF_TOKEN_INITIALIZED) == 0) continue;
    std::string label = Trimmed(info.label, sizeof(info.label));
    if (label == options_.token_label) return slot;
    seen += (seen.empty() ? "'" : ", '") + label + "'";
  }
  return MakeError(ErrorCode::kHsmTokenNotFound,
                   "no token labelled '" + options_.token_label + "' in PKCS#11 module " +
                       module_.path() + " (tokens present: " + (seen.empty() ? "none" : seen) +
                       "); create it (scripts/softhsm-token) or fix the token label, and for "
                       "SoftHSM2 check SOFTHSM2_CONF");
}

// The mechanisms every request needs.
absl::Status Token::CheckMechanisms(CK_SLOT_ID slot) {
  for (auto [mechanism, flags, name] :
       {std::tuple{CKM_AES_KEY_GEN, CK_FLAGS{CKF_GENERATE}, "CKM_AES_KEY_GEN"},
        std::tuple{CKM_AES_KEY_WRAP, CK_FLAGS{CKF_WRAP | CKF_UNWRAP}, "CKM_AES_KEY_WRAP"}}) {
    CK_MECHANISM_INFO info;
    CK_RV rv = functions()->C_GetMechanismInfo(slot, mechanism, &info);
    if (rv != CKR_OK || (info.flags & flags) != flags || info.ulMaxKeySize < 32) {
      return MakeError(ErrorCode::kHsmMechanismUnsupported,
                       std::string("token '") + options_.token_label + "' does not offer " + name +
                           " with 256-bit keys; coffer needs it for dataset wrapping keys — use "
                           "a token that does");
    }
  }
  return absl::OkStatus();
}

absl::Status Token::Login(CK_SESSION_HANDLE session) {
  CK_RV rv = functions()->C_Login(session, CKU_USER, const_cast<CK_UTF8CHAR*>(pin_.data()),
                                  static_cast<CK_ULONG>(pin_.size()));
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    return CkError("C_Login", rv,
                   "token '" + options_.token_label + "', PIN from " + options_.pin.Describe());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TokenObject>> Token::Enumerate(CK_SESSION_HANDLE session) {
  CK_FUNCTION_LIST* f = functions();
  AttributeList search;
  search.Bool(CKA_TOKEN, true);
  CK_RV rv = f->C_FindObjectsInit(session, search.data(), search.size());
  if (rv != CKR_OK) return CkError("C_FindObjectsInit", rv, "enumerating the token's keys");
  std::vector<CK_OBJECT_HANDLE> handles;
  std::vector<CK_OBJECT_HANDLE> batch(kEnumerationBatch);
  for (;;) {
    CK_ULONG got = 0;
    rv = f->C_FindObjects(session, batch.data(), static_cast<CK_ULONG>(batch.size()), &got);
    if (rv != CKR_OK) break;
    handles.insert(handles.end(), batch.begin(), batch.begin() + static_cast<ptrdiff_t>(got));
    if (got < batch.size()) break;
  }
  CK_RV final_rv = f->C_FindObjectsFinal(session);
  if (rv != CKR_OK) return CkError("C_FindObjects", rv, "enumerating the token's keys");
  if (final_rv != CKR_OK) return CkError("C_FindObjectsFinal", final_rv, "enumerating keys");

  std::vector<TokenObject> objects;
  for (CK_OBJECT_HANDLE handle : handles) {
    CK_OBJECT_CLASS object_class = 0;
    char id[internal::kObjectIdBytes];
    CK_ATTRIBUTE attributes[] = {{CKA_CLASS, &object_class, sizeof(object_class)},
                                 {CKA_ID, id, sizeof(id)}};
    rv = f->C_GetAttributeValue(session, handle, attributes, 2);
    // Objects without a 16-byte CKA_ID (BUFFER_TOO_SMALL, TYPE_INVALID) are not coffer's.
    if (rv != CKR_OK) {
      if (internal::IsConnectionLoss(rv)) return CkError("C_GetAttributeValue", rv, "enumerating");
      continue;
    }
    if (attributes[1].ulValueLen != sizeof(id)) continue;
    std::optional<internal::ObjectId> decoded =
        internal::DecodeObjectId(std::string_view(id, sizeof(id)));
    if (!decoded) continue;
    objects.push_back(TokenObject{*decoded, object_class, handle});
  }
  return objects;
}

absl::Status Token::Reconnect(uint64_t generation) {
  std::unique_lock<std::shared_mutex> lock(conn_mu_);
  if (closed_) return ClosedError();
  if (connected_ && generation_ != generation) return absl::OkStatus();  // someone else did
  reconnects_.fetch_add(1);
  absl::Status connected = ReconnectLocked();
  const bool changed = serving_.exchange(connected.ok()) != connected.ok();
  std::shared_ptr<const std::function<void()>> observer;
  {
    std::lock_guard<std::mutex> error_lock(last_error_mu_);
    if (!connected.ok()) {
      failed_reconnects_.fetch_add(1);
      last_error_ = std::string(connected.message());
    }
    if (changed) observer = observer_;
  }
  lock.unlock();
  if (observer != nullptr && *observer) (*observer)();
  return connected;
}

void Token::SetHealthObserver(std::function<void()> observer) {
  std::lock_guard<std::mutex> lock(last_error_mu_);
  observer_ =
      observer ? std::make_shared<const std::function<void()>>(std::move(observer)) : nullptr;
}

absl::Status Token::ReconnectLocked() {
  pool_.reset();
  connected_ = false;
  (void)functions()->C_CloseAllSessions(slot_);
  absl::Status connected = ConnectLocked();
  if (connected.ok() || !IsConnectionError(connected)) return connected;
  // New sessions were not enough: start the module afresh, as after a restart of the process.
  reinitializations_.fetch_add(1);
  pool_.reset();
  COFFER_RETURN_IF_ERROR(module_.Reinitialize());
  return ConnectLocked();
}

TokenHealth Token::health() const {
  TokenHealth health;
  health.connected = serving_.load();
  health.reconnects = reconnects_.load();
  health.reinitializations = reinitializations_.load();
  health.failed_reconnects = failed_reconnects_.load();
  health.operations = operations_.load(std::memory_order_relaxed);
  health.operation_errors = operation_errors_.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(last_error_mu_);
  health.last_error = last_error_;
  return health;
}

absl::Status Token::Run(bool idempotent, const SessionOp& op) {
  operations_.fetch_add(1, std::memory_order_relaxed);
  absl::Status result = RunReconnecting(idempotent, op);
  if (!result.ok()) operation_errors_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

absl::Status Token::RunReconnecting(bool idempotent, const SessionOp& op) {
  absl::Status result =
      MakeError(ErrorCode::kHsmSessionError, "the HSM client lost its connection to the token");
  for (int attempt = 0;; ++attempt) {
    uint64_t generation = 0;
    bool ran = false;
    {
      std::shared_lock<std::shared_mutex> lock(conn_mu_);
      if (closed_) return ClosedError();
      if (generation_ == 0) {
        return MakeError(ErrorCode::kFailedPrecondition, "the HSM token is not connected yet");
      }
      generation = generation_;
      if (connected_) {
        absl::StatusOr<internal::SessionPool::Lease> lease = pool_->Acquire();
        ran = lease.ok();
        result = ran ? op(lease->handle()) : lease.status();
        if (!IsConnectionError(result)) return result;
        if (ran) lease->Discard();
      }
    }
    // The session or device is gone: reopen sessions, log in again, rebuild the indexes.
    COFFER_RETURN_IF_ERROR(Reconnect(generation));
    if (attempt >= 1 || (ran && !idempotent)) return result;
  }
}

}  // namespace coffer::hsm
