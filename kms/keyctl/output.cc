#include "kms/keyctl/output.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <ctime>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "coffer/v1/admin.pb.h"
#include "coffer/v1/common.pb.h"
#include "coffer/v1/control.pb.h"
#include "crypto/base/status.h"
#include "kms/keyctl/admin_client.h"

namespace coffer::keyctl {

namespace {

struct Unit {
  char suffix;
  int64_t seconds;
};
constexpr Unit kUnits[] = {
    {'w', int64_t{7} * 86400}, {'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};

absl::Status BadDuration(std::string_view text) {
  return MakeError(ErrorCode::kInvalidArgument,
                   "invalid duration '" + std::string(text) +
                       "': use a number and a unit s, m, h, d or w (e.g. 30d, 12h, 90s), or 0");
}

// Strips a fixed prefix of an enum value name and lower-cases the rest when asked.
std::string EnumTail(const google::protobuf::EnumDescriptor* type, int value,
                     std::string_view prefix, bool lower) {
  const auto* v = type->FindValueByNumber(value);
  if (v == nullptr) return std::to_string(value);
  std::string name = v->name();
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  if (lower) {
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  return name;
}

nlohmann::json FieldValue(const google::protobuf::Message& message,
                          const google::protobuf::FieldDescriptor* field, int index) {
  using google::protobuf::FieldDescriptor;
  const auto* r = message.GetReflection();
  const bool repeated = field->is_repeated();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return repeated ? r->GetRepeatedInt32(message, field, index) : r->GetInt32(message, field);
    case FieldDescriptor::CPPTYPE_INT64:
      return repeated ? r->GetRepeatedInt64(message, field, index) : r->GetInt64(message, field);
    case FieldDescriptor::CPPTYPE_UINT32:
      return repeated ? r->GetRepeatedUInt32(message, field, index) : r->GetUInt32(message, field);
    case FieldDescriptor::CPPTYPE_UINT64:
      return repeated ? r->GetRepeatedUInt64(message, field, index) : r->GetUInt64(message, field);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return repeated ? r->GetRepeatedDouble(message, field, index) : r->GetDouble(message, field);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return repeated ? r->GetRepeatedFloat(message, field, index) : r->GetFloat(message, field);
    case FieldDescriptor::CPPTYPE_BOOL:
      return repeated ? r->GetRepeatedBool(message, field, index) : r->GetBool(message, field);
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* value =
          repeated ? r->GetRepeatedEnum(message, field, index) : r->GetEnum(message, field);
      return value->name();
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string text =
          repeated ? r->GetRepeatedString(message, field, index) : r->GetString(message, field);
      if (field->type() == FieldDescriptor::TYPE_BYTES) return absl::Base64Escape(text);
      return text;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoToJson(repeated ? r->GetRepeatedMessage(message, field, index)
                                  : r->GetMessage(message, field));
  }
  return nullptr;
}

}  // namespace

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  switch (ErrorCodeOf(status)) {
    case ErrorCode::kNotGranted:
    case ErrorCode::kWrongSocket:
    case ErrorCode::kPermissionDenied:
    case ErrorCode::kMfaRequired:
    case ErrorCode::kMfaCodeInvalid:
    case ErrorCode::kMfaCodeReused:
    case ErrorCode::kMfaLockedOut:
    case ErrorCode::kAdminNotEnrolled:
    case ErrorCode::kApprovalForbidden:
    case ErrorCode::kApprovalClosed:
      return kExitRefused;
    case ErrorCode::kApprovalPending:
      return kExitPendingApproval;
    case ErrorCode::kApprovalNotFound:
      return kExitNotFound;
    case ErrorCode::kDaemonUnavailable:
      return IsSocketPermissionDenied(status) ? kExitRefused : kExitError;
    case ErrorCode::kNotFound:
    case ErrorCode::kDatasetNotFound:
    case ErrorCode::kKeyVersionNotFound:
    case ErrorCode::kRecordNotFound:
    case ErrorCode::kAttachmentNotFound:
    case ErrorCode::kNotInRecycleBin:
    case ErrorCode::kBackupNotFound:
      return kExitNotFound;
    default:
      return kExitError;
  }
}

absl::StatusOr<int64_t> ParseDuration(std::string_view text) {
  if (text == "0") return 0;
  if (text.empty()) return BadDuration(text);
  int64_t total = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    int64_t number = 0;
    const char* begin = text.data() + pos;
    auto [end, ec] = std::from_chars(begin, text.data() + text.size(), number);
    if (ec != std::errc() || end == begin || number < 0) return BadDuration(text);
    pos = static_cast<size_t>(end - text.data());
    if (pos == text.size()) return BadDuration(text);  // a number without a unit
    const Unit* unit = std::find_if(std::begin(kUnits), std::end(kUnits),
                                    [&](const Unit& u) { return u.suffix == text[pos]; });
    if (unit == std::end(kUnits)) return BadDuration(text);
    ++pos;
    if (number > (std::numeric_limits<int64_t>::max() - total) / unit->seconds) {
      return BadDuration(text);
    }
    total += number * unit->seconds;
  }
  return total;
}

std::string FormatDuration(int64_t seconds) {
  if (seconds == 0) return "0";
  std::string out;
  if (seconds < 0) {
    out = "-";
    seconds = -seconds;
  }
  for (const Unit& unit : kUnits) {
    if (unit.suffix == 'w') continue;  // days read better than weeks for policies
    if (seconds >= unit.seconds) {
      out += std::to_string(seconds / unit.seconds) + unit.suffix;
      seconds %= unit.seconds;
    }
  }
  return out;
}

absl::StatusOr<int64_t> ParseTimePoint(std::string_view text, int64_t now_micros) {
  if (auto ago = ParseDuration(text); ago.ok()) return now_micros - *ago * 1'000'000;
  const auto bad = [&] {
    return MakeError(ErrorCode::kInvalidArgument,
                     "invalid time '" + std::string(text) +
                         "': use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (local time) or a duration "
                         "ago such as 2h or 7d");
  };
  // Reads the all-digit field text[pos, pos + width) into *out.
  const auto field = [&](size_t pos, size_t width, int* out) {
    if (pos + width > text.size()) return false;
    const char* begin = text.data() + pos;
    auto [end, ec] = std::from_chars(begin, begin + width, *out);
    return ec == std::errc() && end == begin + width;
  };
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!(text.size() == 10 || text.size() == 16 || text.size() == 19)) return bad();
  if (!field(0, 4, &year) || text[4] != '-' || !field(5, 2, &month) || text[7] != '-' ||
      !field(8, 2, &day)) {
    return bad();
  }
  if (text.size() >= 16 && ((text[10] != 'T' && text[10] != ' ') || !field(11, 2, &hour) ||
                            text[13] != ':' || !field(14, 2, &minute))) {
    return bad();
  }
  if (text.size() == 19 && (text[16] != ':' || !field(17, 2, &second))) return bad();
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return bad();
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  tm.tm_isdst = -1;
  std::time_t t = std::mktime(&tm);
  if (t == static_cast<std::time_t>(-1)) return bad();
  return static_cast<int64_t>(t) * 1'000'000;
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FormatLocalTime(int64_t micros) {
  if (micros == 0) return "-";
  auto t = static_cast<std::time_t>(micros / 1'000'000);
  std::tm tm{};
  if (localtime_r(&t, &tm) == nullptr) return "-";
  char buf[32];
  if (std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm) == 0) return "-";
  return buf;
}

std::string FormatAge(int64_t micros, int64_t now_micros) {
  if (micros == 0) return "-";
  int64_t delta = (now_micros - micros) / 1'000'000;
  bool future = delta < 0;
  int64_t seconds = future ? -delta : delta;
  if (seconds == 0) return "now";
  std::string out;
  int parts = 0;
  for (const Unit& unit : kUnits) {
    if (unit.suffix == 'w') continue;
    if (parts == 2) break;
    if (seconds >= unit.seconds) {
      out += std::to_string(seconds / unit.seconds) + unit.suffix;
      seconds %= unit.seconds;
      ++parts;
    } else if (parts > 0) {
      break;  // "1d" rather than "1d0h"; the second unit must be adjacent
    }
  }
  return future ? "in " + out : out + " ago";
}

std::string FormatBytes(uint64_t bytes) {
  constexpr const char* kNames[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  auto value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kNames)) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return absl::StrFormat("%d B", bytes);
  return absl::StrFormat("%.1f %s", value, kNames[unit]);
}

std::string FormatTimeWithAge(int64_t micros, int64_t now_micros) {
  if (micros == 0) return "-";
  return FormatLocalTime(micros) + " (" + FormatAge(micros, now_micros) + ")";
}

std::string FormatDurationOrNone(int64_t seconds) {
  return seconds == 0 ? "none" : FormatDuration(seconds);
}

std::string YesNo(bool value) { return value ? "yes" : "no"; }

Table::Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }

void Table::AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out << line << '\n';
  }
}

nlohmann::json ProtoToJson(const google::protobuf::Message& message) {
  nlohmann::json out = nlohmann::json::object();
  const auto* descriptor = message.GetDescriptor();
  const auto* r = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const auto* field = descriptor->field(i);
    if (field->is_repeated()) {
      nlohmann::json array = nlohmann::json::array();
      for (int j = 0; j < r->FieldSize(message, field); ++j) {
        array.push_back(FieldValue(message, field, j));
      }
      out[field->name()] = std::move(array);
      continue;
    }
    if (field->has_presence() && !r->HasField(message, field)) continue;
    out[field->name()] = FieldValue(message, field, -1);
  }
  return out;
}

std::string PurposeName(int purpose) {
  return EnumTail(coffer::v1::Purpose_descriptor(), purpose, "PURPOSE_", true);
}
std::string DatasetStateName(int state) {
  return EnumTail(coffer::v1::DatasetState_descriptor(), state, "DATASET_", false);
}
std::string KeyStateName(int state) {
  return EnumTail(coffer::v1::KeyVersionState_descriptor(), state, "KEY_", false);
}
std::string JobKindName(int kind) {
  return EnumTail(coffer::v1::JobKind_descriptor(), kind, "JOB_", true);
}
std::string JobStateName(int state) {
  return EnumTail(coffer::v1::JobState_descriptor(), state, "JOB_", false);
}
std::string ApprovalStateName(int state) {
  return EnumTail(coffer::v1::ApprovalState_descriptor(), state, "APPROVAL_STATE_", false);
}

}  // namespace coffer::keyctl
