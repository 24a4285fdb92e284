// HookServer: the serving half of coffer-hook-runner (docs/events.md, "The hook runner").
// Listens on a Unix stream socket; for every connection it reads the peer's uid from the
// kernel (SO_PEERCRED), and from the one allowed uid (cofferd's) only it reads one
// HookRunRequest (kms/api/proto/coffer/v1/hooks.proto), runs the configured hook for its event
// (RunHook, kms/hooks/hook_process.h: minimal environment, the runner's own uid) and writes one
// HookRunResult. A connection from any other uid — root included — is closed without reading
// or writing a byte, and logged.
//
// Connections are served one at a time, in the order they arrive: cofferd delivers one event
// at a time, in order, and a second caller could only be another process of cofferd's uid.
//
// Thread safety: Serve on one thread; Stop from any thread (also while Serve runs). Ownership:
// the server owns its socket and removes it when destroyed, if the path still names it.
// Failures: Listen returns CONFIG_INVALID / IO_ERROR as ListeningSocket::Create does.

#ifndef COFFER_KMS_HOOKS_HOOK_SERVER_H_
#define COFFER_KMS_HOOKS_HOOK_SERVER_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coffer/v1/hooks.pb.h"
#include "kms/server/listening_socket.h"

namespace coffer::hooks {

inline constexpr size_t kMaxHookRequestBytes = 64 * 1024;
inline constexpr uint32_t kMaxHookTimeoutMillis = 3600 * 1000;

struct HookServerOptions {
  std::string socket_path;
  std::optional<gid_t> socket_group;  // the socket is mode 0660, this group's when set
  uid_t allowed_uid = 0;              // the only peer served (cofferd's uid)
  std::vector<std::string> argv;      // the hook; argv[0] an absolute path
  // How long a served peer may take to send its request.
  std::chrono::milliseconds request_timeout{30000};
  std::function<void(const std::string&)> log;  // optional; one line per call
};

struct HookServerStats {
  uint64_t refused = 0;  // connections from another uid
  uint64_t runs = 0;     // hooks started (whatever their outcome)
};

class HookServer {
 public:
  static absl::StatusOr<std::unique_ptr<HookServer>> Listen(HookServerOptions options);
  HookServer(const HookServer&) = delete;
  HookServer& operator=(const HookServer&) = delete;
  ~HookServer();

  // Serves until Stop(); a hook running then is waited for (up to its timeout).
  void Serve();
  void Stop();
  HookServerStats stats() const { return HookServerStats{refused_.load(), runs_.load()}; }

  // What the runner answers to `request`, running the hook when the request is valid.
  coffer::v1::HookRunResult Run(const coffer::v1::HookRunRequest& request);

 private:
  HookServer(HookServerOptions options, server::ListeningSocket socket, int wake_read,
             int wake_write);
  void ServeConnection(int fd);
  void Log(const std::string& line) const;

  HookServerOptions options_;
  server::ListeningSocket socket_;
  int wake_read_;
  int wake_write_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> runs_{0};
};

}  // namespace coffer::hooks

#endif  // COFFER_KMS_HOOKS_HOOK_SERVER_H_
