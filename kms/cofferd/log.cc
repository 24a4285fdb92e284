#include "kms/cofferd/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <string>

#include "crypto/base/status.h"

namespace coffer::cofferd {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

std::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO ";
    case LogLevel::kWarning:
      return "WARN ";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?    ";
}

std::string Timestamp() {
  auto now = std::chrono::system_clock::now();
  auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  auto seconds = static_cast<time_t>(micros / 1'000'000);
  struct tm utc {};
  gmtime_r(&seconds, &utc);
  char buf[48];
  std::string out(buf, strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &utc));
  std::string fraction = std::to_string(micros % 1'000'000);
  out += '.';
  out.append(6 - fraction.size(), '0');
  out += fraction;
  out += 'Z';
  return out;
}

}  // namespace

std::optional<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warning" || name == "warn") return LogLevel::kWarning;
  if (name == "error") return LogLevel::kError;
  return std::nullopt;
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

void Log(LogLevel level, std::string_view message) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  std::string line = Timestamp();
  line += ' ';
  line += LevelName(level);
  line += ' ';
  // One event, one line: a message never continues on a line a reader could take for another.
  for (char c : message) line += (c == '\n' || c == '\r') ? ' ' : c;
  line += '\n';
  size_t written = 0;
  while (written < line.size()) {
    ssize_t n = write(STDERR_FILENO, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // stderr gone: nothing else to tell
    written += static_cast<size_t>(n);
  }
}

std::string DescribeStatus(const absl::Status& status) {
  if (status.ok()) return "OK";
  std::string out(ErrorCodeName(ErrorCodeOf(status)));
  out += ": ";
  out += std::string(status.message());
  return out;
}

}  // namespace coffer::cofferd
