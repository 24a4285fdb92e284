// keyctl's text conventions: durations ("30d", "12h", "90s"), times (local, with ages), aligned
// tables, the JSON form of coffer.v1 messages, and the process exit codes (docs/keyctl.md).
//
// Pure functions except where a clock or the local time zone is named; thread-compatible.
// Parse functions return INVALID_ARGUMENT with a one-line message saying what is accepted.

#ifndef COFFER_KMS_KEYCTL_OUTPUT_H_
#define COFFER_KMS_KEYCTL_OUTPUT_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace coffer::keyctl {

// Exit codes (docs/keyctl.md, "Exit codes").
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitRefused = 3;          // NOT_GRANTED, WRONG_SOCKET, permission
inline constexpr int kExitNotFound = 4;         // the dataset, backup, job, item or version
inline constexpr int kExitPendingApproval = 5;  // APPROVAL_PENDING: filed for a second admin

// The exit code for a failed command's status.
int ExitCodeFor(const absl::Status& status);

// A duration: one or more <number><unit> (s, m, h, d, w), e.g. "30d", "1d12h", "90s"; or "0".
// Returns seconds.
absl::StatusOr<int64_t> ParseDuration(std::string_view text);
// The shortest exact form ParseDuration reads back: "30d", "1d12h", "90s", "0".
std::string FormatDuration(int64_t seconds);

// A point in time for --since/--until: "YYYY-MM-DD", "YYYY-MM-DDTHH:MM[:SS]" or
// "YYYY-MM-DD HH:MM[:SS]" in local time, or a duration meaning that long before `now_micros`.
// Returns microseconds since the Unix epoch.
absl::StatusOr<int64_t> ParseTimePoint(std::string_view text, int64_t now_micros);

int64_t NowMicros();
// "2026-11-23 19:30:01" in local time; "-" for 0.
std::string FormatLocalTime(int64_t micros);
// "5m ago", "in 2d3h", "now" relative to `now_micros` (to the largest two units); "-" for 0.
std::string FormatAge(int64_t micros, int64_t now_micros);
// "1.5 MiB", "512 B".
std::string FormatBytes(uint64_t bytes);
// "2026-11-23 19:30:01 (5m ago)" in local time; "-" for 0.
std::string FormatTimeWithAge(int64_t micros, int64_t now_micros);
// FormatDuration, but "none" for 0 (a policy that is off).
std::string FormatDurationOrNone(int64_t seconds);
// "yes" or "no".
std::string YesNo(bool value);

// Columns padded to their widest cell, two spaces apart; the header underlined by nothing.
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void AddRow(std::vector<std::string> row);
  size_t rows() const { return rows_.size(); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;  // rows_[0] is the header
};

// The JSON form of a coffer.v1 message: field names as in the .proto, integers as numbers,
// enums by value name, bytes in base64 (as protobuf's JSON mapping), repeated
// fields as arrays; every non-optional scalar present, optional ones only when set, messages
// only when set.
nlohmann::json ProtoToJson(const google::protobuf::Message& message);

// "PURPOSE_RECORDS" -> "records", "DATASET_ACTIVE" -> "ACTIVE", "KEY_PRIMARY" -> "PRIMARY",
// "APPROVAL_STATE_PENDING" -> "PENDING" ...
std::string PurposeName(int purpose);
std::string DatasetStateName(int state);
std::string KeyStateName(int state);
std::string JobKindName(int kind);
std::string JobStateName(int state);
std::string ApprovalStateName(int state);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_OUTPUT_H_
