// RAII owners for PKCS#11 sessions and session objects, and a bounded pool of sessions.
//
//  - Session owns one CK_SESSION_HANDLE and closes it in its destructor (C_CloseSession).
//  - ScopedObject owns one session object (e.g. an unwrapped DEK) and destroys it
//    (C_DestroyObject) in its destructor, so a key never outlives the call that needed it.
//  - SessionPool hands out at most `capacity` R/W sessions on one slot. Acquire() blocks while
//    all are leased; sessions are opened lazily. A Lease returns its session on destruction, or
//    closes it after Discard() (a session the token no longer recognises).
//
// Move-only owners. SessionPool is thread-safe; a Session or Lease is used by one thread at a
// time. Login state is per application in PKCS#11, so the pool does not log in: the owner logs
// in once on any session (hsm/token.cc).

#ifndef COFFER_HSM_INTERNAL_SESSION_H_
#define COFFER_HSM_INTERNAL_SESSION_H_

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "hsm/internal/pkcs11.h"

namespace coffer::hsm::internal {

class Session {
 public:
  // Opens a read/write serial session on `slot`.
  static absl::StatusOr<Session> Open(CK_FUNCTION_LIST* functions, CK_SLOT_ID slot);

  Session() = default;
  Session(Session&& other) noexcept;
  Session& operator=(Session&& other) noexcept;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  CK_SESSION_HANDLE handle() const { return handle_; }
  CK_FUNCTION_LIST* functions() const { return functions_; }
  bool valid() const { return functions_ != nullptr; }

 private:
  Session(CK_FUNCTION_LIST* functions, CK_SESSION_HANDLE handle)
      : functions_(functions), handle_(handle) {}
  void Reset();

  CK_FUNCTION_LIST* functions_ = nullptr;
  CK_SESSION_HANDLE handle_ = CK_INVALID_HANDLE;
};

class ScopedObject {
 public:
  ScopedObject(CK_FUNCTION_LIST* functions, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object)
      : functions_(functions), session_(session), object_(object) {}
  ScopedObject(const ScopedObject&) = delete;
  ScopedObject& operator=(const ScopedObject&) = delete;
  ~ScopedObject();

  CK_OBJECT_HANDLE get() const { return object_; }

 private:
  CK_FUNCTION_LIST* functions_;
  CK_SESSION_HANDLE session_;
  CK_OBJECT_HANDLE object_;
};

class SessionPool {
 public:
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    CK_SESSION_HANDLE handle() const { return session_.handle(); }
    // Close the session instead of returning it to the pool.
    void Discard() { discard_ = true; }

   private:
    friend class SessionPool;
    Lease(SessionPool* pool, Session session) : pool_(pool), session_(std::move(session)) {}

    SessionPool* pool_;
    Session session_;
    bool discard_ = false;
  };

  SessionPool(CK_FUNCTION_LIST* functions, CK_SLOT_ID slot, size_t capacity);
  SessionPool(const SessionPool&) = delete;
  SessionPool& operator=(const SessionPool&) = delete;
  // Closes the idle sessions. Every Lease must have been returned.
  ~SessionPool() = default;

  absl::StatusOr<Lease> Acquire();

 private:
  void Return(Session session, bool discard);

  CK_FUNCTION_LIST* const functions_;
  const CK_SLOT_ID slot_;
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable available_;
  std::vector<Session> idle_;  // guarded by mu_
  size_t open_ = 0;            // guarded by mu_: idle + leased + being opened
};

}  // namespace coffer::hsm::internal

#endif  // COFFER_HSM_INTERNAL_SESSION_H_
