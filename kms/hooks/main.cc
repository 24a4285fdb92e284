// coffer-hook-runner: runs the notification hook for cofferd, as a user of its own, with a
// minimal environment (docs/events.md, "The hook runner"; packaging/systemd/
// coffer-hook-runner.service). cofferd cannot start the hook itself without handing it the
// daemon's uid and environment, through which it could read the HSM PIN.
//
//   coffer-hook-runner --socket /run/coffer-hooks/hook.sock --allowed-uid coffer
//       [--socket-group coffer-hooks] -- /usr/local/bin/coffer-notify --channel=security
//
// Refuses to run as root or as the allowed (cofferd's) uid. Logs to stderr: one line per
// refused connection, failed or killed hook, never an event's content. SIGTERM or SIGINT stops
// it (after a running hook); exit 0 then, 1 when it cannot or may not start, 2 for a user or
// group that does not exist (CLI11's own code for a malformed command line).

#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "kms/hooks/hook_server.h"

namespace {

void LogLine(const std::string& line) {
  std::string text = "coffer-hook-runner: " + line + "\n";
  std::fputs(text.c_str(), stderr);
  std::fflush(stderr);
}

std::optional<unsigned long> Number(const std::string& text) {
  unsigned long value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    return std::nullopt;
  }
  return value;
}

// A user name or a numeric uid.
std::optional<uid_t> ResolveUser(const std::string& text) {
  if (auto n = Number(text)) return static_cast<uid_t>(*n);
  passwd* pw = ::getpwnam(text.c_str());
  if (pw == nullptr) return std::nullopt;
  return pw->pw_uid;
}

// A group name or a numeric gid.
std::optional<gid_t> ResolveGroup(const std::string& text) {
  if (auto n = Number(text)) return static_cast<gid_t>(*n);
  group* gr = ::getgrnam(text.c_str());
  if (gr == nullptr) return std::nullopt;
  return gr->gr_gid;
}

// Refuses to run as root or as cofferd's uid `allowed`, then moves to /; returns the exit code
// when it may not start.
std::optional<int> RefuseToStart(uid_t allowed) {
  if (::getuid() == 0 || ::geteuid() == 0) {
    LogLine(
        "refusing to run as root: run it as a user of its own (e.g. coffer-hooks), "
        "which can read neither cofferd's files nor the HSM PIN");
    return 1;
  }
  if (::getuid() == allowed || ::geteuid() == allowed) {
    LogLine("refusing to run as cofferd's uid " + std::to_string(allowed) +
            ": the hook would reach the HSM PIN; run it as a user of its own");
    return 1;
  }
  if (::chdir("/") != 0) {
    LogLine("cannot change to /");
    return 1;
  }
  return std::nullopt;
}

// Serves `options` until SIGTERM or SIGINT; returns the exit code.
int Serve(coffer::hooks::HookServerOptions options) {
  // Before any thread: every thread inherits the mask, and one thread takes the signals.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  const std::string socket_path = options.socket_path;
  const uid_t allowed = options.allowed_uid;
  absl::StatusOr<std::unique_ptr<coffer::hooks::HookServer>> server =
      coffer::hooks::HookServer::Listen(std::move(options));
  if (!server.ok()) {
    LogLine("cannot listen on " + socket_path + ": " + std::string(server.status().message()));
    return 1;
  }
  coffer::hooks::HookServer* serving = server->get();
  std::thread signals([serving, stop_signals] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    serving->Stop();
  });
  LogLine("serving on " + socket_path + " for uid " + std::to_string(allowed) + " as uid " +
          std::to_string(::getuid()));
  serving->Serve();
  // Serve returns after Stop, or early on a poll failure: then the signal thread still waits,
  // and this (blocked, so pending) signal ends its wait.
  pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  server->reset();
  LogLine("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  std::string allowed_user;
  std::string socket_group;
  std::vector<std::string> command;
  CLI::App app{
      "coffer-hook-runner: runs cofferd's notification hook under its own user.\n"
      "Listens on a Unix socket; for each event cofferd hands over (only from --allowed-uid, "
      "checked with SO_PEERCRED) it runs COMMAND with the event as one JSON line on stdin and "
      "an environment of PATH=/usr/bin:/bin and COFFER_EVENT_* only (docs/events.md). "
      "Refuses to run as root or as the allowed uid.",
      "coffer-hook-runner"};
  app.add_option("--socket", socket_path,
                 "The Unix socket to create (mode 0660); cofferd's notifications.hook_socket.")
      ->required();
  app.add_option("--allowed-uid", allowed_user,
                 "cofferd's user (name or uid): the only peer whose events are run.")
      ->required();
  app.add_option("--socket-group", socket_group,
                 "Group (name or gid) owning the socket, one cofferd's user is in; the runner "
                 "must be a member too. Default: the runner's own group.");
  app.add_option("command", command,
                 "The hook's argv after --: argv[0] an absolute path; no shell.")
      ->required();
  CLI11_PARSE(app, argc, argv);

  std::optional<uid_t> allowed = ResolveUser(allowed_user);
  if (!allowed) {
    LogLine("--allowed-uid " + allowed_user + ": no such user");
    return 2;
  }
  std::optional<gid_t> group;
  if (!socket_group.empty()) {
    group = ResolveGroup(socket_group);
    if (!group) {
      LogLine("--socket-group " + socket_group + ": no such group");
      return 2;
    }
  }
  if (std::optional<int> refused = RefuseToStart(*allowed)) return *refused;

  coffer::hooks::HookServerOptions options;
  options.socket_path = socket_path;
  options.socket_group = group;
  options.allowed_uid = *allowed;
  options.argv = command;
  options.log = LogLine;
  return Serve(std::move(options));
}
