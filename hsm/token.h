// Token: coffer's one logged-in PKCS#11 token — the module, the slot found by label, one login,
// a bounded pool of sessions, and reconnection. Every role (hsm/dataset_wrapping_keys.h,
// hsm/token_signer.h, hsm/row_hmac_key.h, hsm/totp_secrets.h) runs its calls through one Token,
// so a process logs in once and calls C_Initialize once however many roles it uses.
// HsmClient (hsm/hsm_client.h) builds a Token and its roles together; use that.
//
// Lifecycle: Load() reads the PIN (hsm/pin.h) and loads the module (hsm/module.h). Connect()
// finds the token by label, checks the mechanisms every request needs, logs in as user once
// (login is per application in PKCS#11, so it serves every session) and makes ONE enumeration
// of the token's coffer objects, handing what it found to each ObjectIndex so that each role
// keeps its own handle map. Requests never search the token: SoftHSM2's file store takes
// O(objects) per search (≈45 ms at 2,000 keys) against ≈80 µs for an unwrap with a known
// handle. Connect() is called once, with every index; a reconnect repeats the enumeration.
//
// Thread safety: Run() and the accessors may be called from many threads. Operations run on a
// bounded pool of sessions (HsmOptions::session_pool_size) under a shared connection lock; a
// reconnect takes it exclusively, and holds it while the indexes rebuild (lock order: object
// changes lock, then the connection lock, then a role's own map lock).
//
// Failure behaviour: after a session or device error, or a token gone (HSM_SESSION_ERROR,
// HSM_DEVICE_ERROR, HSM_TOKEN_NOT_FOUND) Run() closes every session, logs in again and
// re-enumerates — and when that fails too, finalises and re-initialises the module and tries
// once more — then reruns the operation once if it is idempotent; otherwise it reports the error
// after reconnecting. While the token cannot be reached every Run() fails at once with the last
// connection error and the next Run() tries again, so the token recovers by itself when the
// device returns. health() says which state it is in. Messages name what to fix and the CKR_
// name, never the PIN (docs/hsm.md, "Errors").
//
// Ownership: the Token owns the Module, its sessions and the PIN (secure heap, kept for
// re-login); it does not own the indexes, which must outlive it or Close(). Close() — or the
// destructor — closes every session and calls C_Finalize; after Close() Run() returns
// FAILED_PRECONDITION. Move-less and copy-less: the roles hold a reference to it.

#ifndef COFFER_HSM_TOKEN_H_
#define COFFER_HSM_TOKEN_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "hsm/internal/labels.h"
#include "hsm/internal/pkcs11.h"
#include "hsm/module.h"
#include "hsm/pin.h"

namespace coffer::hsm {

namespace internal {
class SessionPool;
}  // namespace internal

struct HsmOptions {
  std::string module_path = std::string(kDefaultModulePath);
  std::string token_label;
  PinSource pin;
  // Sessions opened at most; callers beyond this wait for a free one.
  size_t session_pool_size = 4;
};

// One coffer object the enumeration found (its 16-byte CKA_ID decoded, docs/hsm.md).
struct TokenObject {
  internal::ObjectId id;
  CK_OBJECT_CLASS object_class = 0;
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
};

// A role's handle map. Rebuild() replaces it with what the latest enumeration found (every coffer
// object; each index keeps the kinds it owns). Called with the connection lock held exclusively.
class ObjectIndex {
 public:
  virtual ~ObjectIndex() = default;
  virtual void Rebuild(const std::vector<TokenObject>& objects) = 0;
};

// The token's connection as status shows it.
struct TokenHealth {
  bool connected = false;          // serving: the last (re)connect succeeded
  uint64_t reconnects = 0;         // reconnects after a session, device or token error
  uint64_t reinitializations = 0;  // C_Finalize + C_Initialize of the module among them
  uint64_t failed_reconnects = 0;
  uint64_t operations = 0;        // Run() calls since Load (each one or a few PKCS#11 calls)
  uint64_t operation_errors = 0;  // of those, the ones that returned an error
  std::string last_error;         // the last failed (re)connect's message; "" if none since start
};

class Token {
 public:
  using SessionOp = std::function<absl::Status(CK_SESSION_HANDLE session)>;

  // Reads the PIN, then loads the module (a configuration mistake should not cost a module
  // load). Errors: INVALID_ARGUMENT (no token label), HSM_PIN_UNAVAILABLE,
  // HSM_MODULE_NOT_FOUND, HSM_NOT_PKCS11_MODULE, HSM_DEVICE_ERROR.
  static absl::StatusOr<std::unique_ptr<Token>> Load(const HsmOptions& options);

  Token(const Token&) = delete;
  Token& operator=(const Token&) = delete;
  ~Token();

  // Finds the slot, checks mechanisms, opens the pool, logs in and enumerates into `indexes`
  // (kept for every reconnect). Once only: FAILED_PRECONDITION when called again. Errors:
  // HSM_TOKEN_NOT_FOUND, HSM_WRONG_PIN, HSM_PIN_LOCKED, HSM_MECHANISM_UNSUPPORTED (no
  // CKM_AES_KEY_WRAP or CKM_AES_KEY_GEN), HSM_DEVICE_ERROR.
  absl::Status Connect(std::vector<ObjectIndex*> indexes);

  // Closes every session and finalises the module. Idempotent.
  absl::Status Close();

  // Runs `op` on a pooled session; reconnects after a connection loss, then reruns `op` once
  // when `idempotent`. FAILED_PRECONDITION after Close() or before Connect().
  absl::Status Run(bool idempotent, const SessionOp& op);

  // FAILED_PRECONDITION after Close(); OK otherwise.
  absl::Status CheckOpen();

  // Serialises creates and destroys of token objects across every role, so that "is it there
  // yet?" and "create it" are one step. Take it before Run().
  std::unique_lock<std::mutex> LockObjectChanges() { return std::unique_lock(object_changes_mu_); }

  // The module's function table, for calls inside a SessionOp.
  CK_FUNCTION_LIST* functions() const { return module_.functions(); }

  // Whether the token accepted CKA_ALLOWED_MECHANISMS on key creation (assumed until a create
  // says otherwise; then keys are created without it, bound by their CKA_WRAP/CKA_SIGN flags).
  bool allowed_mechanisms_supported() const { return allowed_mechanisms_supported_.load(); }
  void NoteAllowedMechanismsUnsupported() { allowed_mechanisms_supported_.store(false); }

  // Diagnostics.
  CK_SLOT_ID slot_id() const { return slot_; }
  const std::string& module_description() const { return module_.description(); }
  // How many times the token has reconnected after a session or device error.
  uint64_t reconnect_count() const { return reconnects_.load(); }
  // Never waits for a reconnect in progress.
  TokenHealth health() const;
  // Calls `observer` after each change of health().connected, on the thread whose (re)connect
  // changed it and with no lock of the token held; it must be quick (wake a thread, not call the
  // token). Replaces an earlier observer; an empty one removes it. The caller removes it before
  // whatever the observer reaches goes away.
  void SetHealthObserver(std::function<void()> observer);

 private:
  Token(Module module, HsmOptions options, crypto::SecretBytes pin);

  // Requires conn_mu_ held exclusively.
  absl::Status ConnectLocked();
  absl::StatusOr<CK_SLOT_ID> FindSlot();
  absl::Status CheckMechanisms(CK_SLOT_ID slot);
  absl::Status Login(CK_SESSION_HANDLE session);
  absl::StatusOr<std::vector<TokenObject>> Enumerate(CK_SESSION_HANDLE session);
  // Run() without its counters.
  absl::Status RunReconnecting(bool idempotent, const SessionOp& op);
  // Reconnects unless another thread already did since `generation`.
  absl::Status Reconnect(uint64_t generation);
  // Requires conn_mu_ held exclusively: closes the sessions and connects again, re-initialising
  // the module when that is not enough.
  absl::Status ReconnectLocked();

  Module module_;
  const HsmOptions options_;
  const crypto::SecretBytes pin_;
  std::atomic<uint64_t> reconnects_{0};
  std::atomic<uint64_t> reinitializations_{0};
  std::atomic<uint64_t> failed_reconnects_{0};
  std::atomic<uint64_t> operations_{0};
  std::atomic<uint64_t> operation_errors_{0};
  std::atomic<bool> serving_{false};  // connected_, readable without conn_mu_
  mutable std::mutex last_error_mu_;
  std::string last_error_;                                 // guarded by last_error_mu_
  std::shared_ptr<const std::function<void()>> observer_;  // guarded by last_error_mu_
  std::atomic<bool> allowed_mechanisms_supported_{true};
  std::mutex object_changes_mu_;

  std::shared_mutex conn_mu_;  // shared: an operation in flight; exclusive: (re)connect, close
  CK_SLOT_ID slot_ = 0;        // guarded by conn_mu_
  std::unique_ptr<internal::SessionPool> pool_;  // guarded by conn_mu_
  std::vector<ObjectIndex*> indexes_;            // guarded by conn_mu_
  bool connected_ = false;                       // guarded by conn_mu_
  bool closed_ = false;                          // guarded by conn_mu_
  uint64_t generation_ = 0;                      // guarded by conn_mu_: successful connects
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_TOKEN_H_
