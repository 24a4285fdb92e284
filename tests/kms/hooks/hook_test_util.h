// A HookServer (kms/hooks/hook_server.h) serving on its own thread for the tests of
// tests/kms/hooks, and a request sent to it from a process of another uid.

#ifndef COFFER_TESTS_KMS_HOOKS_HOOK_TEST_UTIL_H_
#define COFFER_TESTS_KMS_HOOKS_HOOK_TEST_UTIL_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "coffer/v1/hooks.pb.h"
#include "kms/hooks/hook_server.h"

namespace coffer::hooks::testing {

// Listens at construction and serves until destroyed.
class ServingHookServer {
 public:
  static absl::StatusOr<std::unique_ptr<ServingHookServer>> Start(HookServerOptions options) {
    auto server = HookServer::Listen(std::move(options));
    if (!server.ok()) return server.status();
    return std::unique_ptr<ServingHookServer>(new ServingHookServer(*std::move(server)));
  }
  ~ServingHookServer() {
    server_->Stop();
    thread_.join();
  }
  ServingHookServer(const ServingHookServer&) = delete;
  ServingHookServer& operator=(const ServingHookServer&) = delete;
  HookServer& server() { return *server_; }

 private:
  explicit ServingHookServer(std::unique_ptr<HookServer> server)
      : server_(std::move(server)), thread_([this] { server_->Serve(); }) {}
  std::unique_ptr<HookServer> server_;
  std::thread thread_;
};

// Sends `request` to the runner at `socket` and reads its answer; an error when there is none.
absl::StatusOr<coffer::v1::HookRunResult> AskRunner(const std::string& socket,
                                                    const coffer::v1::HookRunRequest& request);

// AskRunner from a child process running as `uid` with `gid` as its group and only group.
// Returns the outcome, or -1 when the runner did not answer, -2 when the child failed to become
// the uid. Needs root.
int AskRunnerAs(uid_t uid, gid_t gid, const std::string& socket,
                const coffer::v1::HookRunRequest& request);

}  // namespace coffer::hooks::testing

#endif  // COFFER_TESTS_KMS_HOOKS_HOOK_TEST_UTIL_H_
