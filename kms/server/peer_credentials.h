// Reads who is on the other end of a connected Unix stream socket, from the kernel only.

#ifndef COFFER_KMS_SERVER_PEER_CREDENTIALS_H_
#define COFFER_KMS_SERVER_PEER_CREDENTIALS_H_

#include "absl/status/statusor.h"
#include "kms/server/connection.h"

namespace coffer::server {

// SO_PEERCRED (uid, gid and pid at connect time) and SO_PEERGROUPS (supplementary groups; the
// buffer grows when the kernel answers ERANGE), with `kind`. The primary gid is removed from
// the groups, as PeerIdentity documents. IO_ERROR when a getsockopt fails.
absl::StatusOr<daemon::PeerIdentity> ReadPeerIdentity(int fd, daemon::SocketKind kind);

}  // namespace coffer::server

#endif  // COFFER_KMS_SERVER_PEER_CREDENTIALS_H_
