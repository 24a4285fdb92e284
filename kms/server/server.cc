#include "kms/server/server.h"

#include "kms/server/internal/server_impl.h"

namespace coffer::server {

absl::Status Server::Impl::Init() {
  COFFER_RETURN_IF_ERROR(CheckOptions(options_));
  COFFER_ASSIGN_OR_RETURN(ListeningSocket data,
                          ListeningSocket::Create(options_.data_socket, SOMAXCONN));
  COFFER_ASSIGN_OR_RETURN(ListeningSocket admin,
                          ListeningSocket::Create(options_.admin_socket, SOMAXCONN));
  data_listener_.emplace(std::move(data));
  admin_listener_.emplace(std::move(admin));
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    return MakeError(ErrorCode::kIoError, std::string("epoll/eventfd: ") + std::strerror(errno));
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kWakeTag;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event) != 0) {
    return MakeError(ErrorCode::kIoError, std::string("epoll_ctl: ") + std::strerror(errno));
  }
  WatchListeners(true);
  for (size_t i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  reactor_ = std::thread([this] { ReactorLoop(); });
  return absl::OkStatus();
}

void Server::Impl::Wake() {
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_, &one, sizeof(one));
  (void)ignored;  // EAGAIN: the counter is already non-zero, the reactor will wake
}

void Server::Impl::Refused(const daemon::PeerIdentity& peer, ErrorCode code) {
  {
    std::lock_guard<std::mutex> lock(refusals_mu_);
    ++refusals_[code];
  }
  factory_->TransportRefused(peer, code);
}

void Server::Impl::Shutdown(std::chrono::milliseconds drain_timeout) {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  if (reactor_.joinable()) {
    drain_deadline_ns_.store((Clock::now() + drain_timeout).time_since_epoch().count());
    draining_.store(true);
    Wake();
    reactor_.join();
  }
  {
    std::lock_guard<std::mutex> queue_lock(queue_mu_);
    workers_stop_ = true;  // workers finish the queue (Session::Closed calls) first
  }
  queue_cv_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  if (data_listener_) data_listener_->CloseAndRemove();
  if (admin_listener_) admin_listener_->CloseAndRemove();
}

ServerStats Server::Impl::Stats() const {
  ServerStats stats;
  stats.connections_open = connections_open_.load();
  stats.connections_total = connections_total_.load();
  // Inline first: RunInline counts a request in requests_ before requests_inline_.
  stats.requests_parked = requests_parked_.load();
  stats.requests_inline = requests_inline_.load();
  stats.requests = requests_.load();
  stats.buffered_input_bytes = buffered_input_.load();
  stats.buffered_output_bytes = buffered_output_.load();
  stats.sends_waiting = sends_waiting_.load();
  stats.bytes_received = bytes_received_.load();
  stats.busy_connection_limit = busy_connection_limit_.load();
  stats.busy_uid_connections = busy_uid_connections_.load();
  stats.busy_buffered_bytes = busy_buffered_bytes_.load();
  stats.requests_held = requests_held_.load();
  stats.output_timeouts = output_timeouts_.load();
  stats.closed_after_refusals = closed_after_refusals_.load();
  std::lock_guard<std::mutex> lock(refusals_mu_);
  stats.refusals = refusals_;
  return stats;
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options,
                                                      daemon::SessionFactory* factory) {
  if (factory == nullptr) {
    return MakeError(ErrorCode::kConfigInvalid, "server: no session factory");
  }
  auto impl = std::make_unique<Impl>(options, factory);
  absl::Status started = impl->Init();
  if (!started.ok()) {
    impl->Shutdown(std::chrono::milliseconds(0));
    return started;
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Shutdown(impl_->default_drain_timeout()); }

void Server::Shutdown(std::chrono::milliseconds drain_timeout) { impl_->Shutdown(drain_timeout); }

ServerStats Server::Stats() const { return impl_->Stats(); }

}  // namespace coffer::server
