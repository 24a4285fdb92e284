#include "kms/keyctl/format.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <limits>

#include "absl/strings/escaping.h"
#include "coffer/v1/admin.pb.h"
#include "coffer/v1/common.pb.h"
#include "crypto/status.h"
#include "kms/keyctl/admin_client.h"

namespace coffer::keyctl {

namespace {

struct Unit {
  char suffix;
  int64_t seconds;
};
constexpr Unit kUnits[] = {{'w', 7 * 86400}, {'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};

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
      return kExitRefused;
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
  std::tm tm{};
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  std::string copy(text);
  char sep = 0;
  int fields = std::sscanf(copy.c_str(), "%4d-%2d-%2d%c%2d:%2d:%2d", &year, &month, &day, &sep,
                           &hour, &minute, &second);
  bool date_only = fields == 3 && copy.size() == 10;
  bool with_time = (fields == 6 || fields == 7) && (sep == 'T' || sep == ' ');
  if (!date_only && !with_time) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "invalid time '" + copy +
                         "': use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (local time) or a duration "
                         "ago such as 2h or 7d");
  }
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  tm.tm_isdst = -1;
  std::time_t t = std::mktime(&tm);
  if (t == static_cast<std::time_t>(-1) || month < 1 || month > 12 || day < 1 || day > 31) {
    return MakeError(ErrorCode::kInvalidArgument, "invalid time '" + copy + "'");
  }
  return static_cast<int64_t>(t) * 1'000'000;
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FormatLocalTime(int64_t micros) {
  if (micros == 0) return "-";
  std::time_t t = static_cast<std::time_t>(micros / 1'000'000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
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
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kNames)) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", value, kNames[unit]);
  }
  return buf;
}

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

}  // namespace coffer::keyctl
