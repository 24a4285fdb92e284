#include "hsm/internal/session.h"

#include <utility>

#include "hsm/internal/ck_error.h"

namespace coffer::hsm::internal {

absl::StatusOr<Session> Session::Open(CK_FUNCTION_LIST* functions, CK_SLOT_ID slot) {
  CK_SESSION_HANDLE handle = CK_INVALID_HANDLE;
  CK_RV rv = functions->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                                      &handle);
  if (rv != CKR_OK) return CkError("C_OpenSession", rv, "opening a session on the token");
  return Session(functions, handle);
}

Session::Session(Session&& other) noexcept
    : functions_(std::exchange(other.functions_, nullptr)),
      handle_(std::exchange(other.handle_, CK_INVALID_HANDLE)) {}

Session& Session::operator=(Session&& other) noexcept {
  if (this != &other) {
    Reset();
    functions_ = std::exchange(other.functions_, nullptr);
    handle_ = std::exchange(other.handle_, CK_INVALID_HANDLE);
  }
  return *this;
}

Session::~Session() { Reset(); }

void Session::Reset() {
  if (functions_ != nullptr) {
    // A session the token already dropped reports CKR_SESSION_HANDLE_INVALID; nothing to do.
    (void)functions_->C_CloseSession(handle_);
    functions_ = nullptr;
    handle_ = CK_INVALID_HANDLE;
  }
}

ScopedObject::~ScopedObject() {
  if (object_ != CK_INVALID_HANDLE) (void)functions_->C_DestroyObject(session_, object_);
}

SessionPool::Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      session_(std::move(other.session_)),
      discard_(other.discard_) {}

SessionPool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->Return(std::move(session_), discard_);
}

SessionPool::SessionPool(CK_FUNCTION_LIST* functions, CK_SLOT_ID slot, size_t capacity)
    : functions_(functions), slot_(slot), capacity_(capacity == 0 ? 1 : capacity) {}

absl::StatusOr<SessionPool::Lease> SessionPool::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  available_.wait(lock, [this] { return !idle_.empty() || open_ < capacity_; });
  if (!idle_.empty()) {
    Session session = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(session));
  }
  ++open_;
  lock.unlock();
  absl::StatusOr<Session> session = Session::Open(functions_, slot_);
  if (!session.ok()) {
    lock.lock();
    --open_;
    available_.notify_one();
    return session.status();
  }
  return Lease(this, *std::move(session));
}

void SessionPool::Return(Session session, bool discard) {
  std::lock_guard<std::mutex> lock(mu_);
  if (discard || !session.valid()) {
    --open_;
    session = Session();  // closes it
  } else {
    idle_.push_back(std::move(session));
  }
  available_.notify_one();
}

}  // namespace coffer::hsm::internal
