// cofferd's log: one line per event on stderr, with a UTC timestamp and a level, e.g.
//   2026-11-23T18:00:00.123456Z INFO  serving: data socket /run/cofferd/data.sock
// journald and a terminal both read stderr, so the daemon needs nothing else.
//
// What may be logged: paths, counts, durations, error codes and the fixed texts of the
// program. Never a key, a PIN, a record id, a value, an attachment name or a dataset name:
// callers pass only such safe text (error messages of coffer's layers follow the same rule,
// docs/errors.md).
//
// Thread safety: every function may be called from any thread; lines are written whole (one
// write(2) each). SetLogLevel is meant for start-up.

#ifndef COFFER_KMS_COFFERD_LOG_H_
#define COFFER_KMS_COFFERD_LOG_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace coffer::cofferd {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "debug", "info", "warning" (or "warn"), "error"; nullopt for anything else.
std::optional<LogLevel> ParseLogLevel(std::string_view name);

// Lines below `level` are dropped. Default: info.
void SetLogLevel(LogLevel level);

void Log(LogLevel level, std::string_view message);

inline void LogDebug(std::string_view message) { Log(LogLevel::kDebug, message); }
inline void LogInfo(std::string_view message) { Log(LogLevel::kInfo, message); }
inline void LogWarning(std::string_view message) { Log(LogLevel::kWarning, message); }
inline void LogError(std::string_view message) { Log(LogLevel::kError, message); }

// "<CODE_NAME>: <status message>" for a failed status, "OK" for an OK one.
std::string DescribeStatus(const absl::Status& status);

}  // namespace coffer::cofferd

#endif  // COFFER_KMS_COFFERD_LOG_H_
