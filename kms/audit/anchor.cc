#include "kms/audit/anchor.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <vector>

#include "crypto/base/status.h"

namespace coffer::kms::audit {
namespace {

constexpr std::string_view kIdent = "cofferd-audit";

// The value of `key=` among space-separated tokens, or an empty view.
std::string_view Field(std::string_view fields, std::string_view key) {
  while (!fields.empty()) {
    const size_t space = fields.find(' ');
    std::string_view token = fields.substr(0, space);
    if (token.size() > key.size() && token.substr(0, key.size()) == key &&
        token[key.size()] == '=') {
      return token.substr(key.size() + 1);
    }
    if (space == std::string_view::npos) break;
    fields.remove_prefix(space + 1);
  }
  return {};
}

template <typename T>
bool ParseDecimal(std::string_view text, T& out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::string FormatAnchorLine(const CheckpointAnchor& anchor) {
  // Appends rather than operator+ chains: GCC 12 reports a false -Wrestrict on the latter.
  std::string line(kAnchorMarker);
  line.append("log=").append(ToHex(anchor.log_id));
  line.append(" seq=").append(std::to_string(anchor.sequence));
  line.append(" head=").append(ToHex(anchor.head));
  line.append(" time=").append(std::to_string(anchor.time_micros));
  return line;
}

absl::StatusOr<CheckpointAnchor> ParseAnchorLine(std::string_view line) {
  const size_t marker = line.find(kAnchorMarker);
  if (marker == std::string_view::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "no audit anchor in this line");
  }
  std::string_view fields = line.substr(marker + kAnchorMarker.size());
  while (!fields.empty() && (fields.back() == '\n' || fields.back() == '\r')) {
    fields.remove_suffix(1);
  }
  CheckpointAnchor anchor;
  std::optional<LogId> log_id = FromHex<kLogIdSize>(Field(fields, "log"));
  std::optional<ChainHash> head = FromHex<kChainHashSize>(Field(fields, "head"));
  if (!log_id || !head || !ParseDecimal(Field(fields, "seq"), anchor.sequence) ||
      !ParseDecimal(Field(fields, "time"), anchor.time_micros)) {
    return MakeError(ErrorCode::kInvalidArgument, "malformed audit anchor line");
  }
  anchor.log_id = *log_id;
  anchor.head = *head;
  return anchor;
}

absl::StatusOr<std::unique_ptr<SyslogAnchorSink>> SyslogAnchorSink::Create(
    int facility, std::string socket_path) {
  if (socket_path.size() >= sizeof(sockaddr_un::sun_path)) {
    return MakeError(ErrorCode::kInvalidArgument, "syslog socket path too long");
  }
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return MakeError(ErrorCode::kIoError,
                     std::string("socket(AF_UNIX) for syslog: ") + std::strerror(errno));
  }
  return std::unique_ptr<SyslogAnchorSink>(
      new SyslogAnchorSink(fd, facility, std::move(socket_path)));
}

SyslogAnchorSink::~SyslogAnchorSink() { close(fd_); }

absl::Status SyslogAnchorSink::Publish(const CheckpointAnchor& anchor) {
  // "<PRI>Mmm dd hh:mm:ss ident[pid]: message", as glibc's syslog(3) sends it.
  const time_t now = time(nullptr);
  tm local{};
  localtime_r(&now, &local);
  char stamp[32];
  const size_t stamp_size = std::strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &local);
  std::string datagram = "<";
  datagram.append(std::to_string(facility_ | LOG_NOTICE)).append(">");
  datagram.append(stamp, stamp_size).append(" ").append(kIdent);
  datagram.append("[").append(std::to_string(getpid())).append("]: ");
  datagram.append(FormatAnchorLine(anchor));

  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  ssize_t sent = 0;
  do {
    sent = sendto(fd_, datagram.data(), datagram.size(), MSG_NOSIGNAL,
                  reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(datagram.size())) {
    return MakeError(ErrorCode::kIoError, "audit anchor not delivered to " + socket_path_ + ": " +
                                              std::strerror(sent < 0 ? errno : EMSGSIZE));
  }
  return absl::OkStatus();
}

}  // namespace coffer::kms::audit
