#include "tests/testing/process.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace coffer::testing {

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

int RunShell(const std::string& command) {
  return std::system(command.c_str());  // NOLINT(cert-env33-c)
}

pid_t SpawnWithOutput(std::vector<std::string> args, const std::string& output_path,
                      const std::vector<std::string>& unset_env,
                      const std::vector<std::pair<std::string, std::string>>& set_env) {
  int output = open(output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (output < 0) return -1;
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(output, STDERR_FILENO);
    dup2(output, STDOUT_FILENO);
    for (const std::string& name : unset_env) unsetenv(name.c_str());
    for (const auto& [name, value] : set_env) setenv(name.c_str(), value.c_str(), 1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(output);
  return pid;
}

bool Eventually(const std::function<bool()>& done, std::chrono::milliseconds poll) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(poll);
  }
  return done();
}

}  // namespace coffer::testing
