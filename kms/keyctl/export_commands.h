// keyctl's export commands (docs/keyctl.md "Export"):
//  - `keyctl dataset export NAME --recipient-key PUB.pem --out FILE [--approval ID]` asks cofferd
//    for an export-v1 archive (docs/formats.md#export-v1) of a DISABLED or PENDING_DESTRUCTION
//    dataset and writes it to FILE;
//  - `keyctl export open FILE --private-key KEY.pem --out-dir DIR [--public-key TOKEN.pem]`
//    verifies an archive, decrypts it and writes its records and attachments into DIR.
//
// Nothing half-written: the archive streams into a temporary file beside FILE (mode 0600) that
// becomes FILE only once complete and checked against the daemon's summary (size, SHA-256);
// DIR is filled as a temporary sibling directory (mode 0700) renamed into place at the end. A
// failure removes the temporary file or directory. An existing FILE is never overwritten; DIR
// must not exist or be empty. Both show progress (a bar on a terminal) and hold memory bounded
// by a segment, whatever the archive's size.

#ifndef COFFER_KMS_KEYCTL_EXPORT_COMMANDS_H_
#define COFFER_KMS_KEYCTL_EXPORT_COMMANDS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kms/keyctl/command_context.h"

namespace CLI {
class App;
}  // namespace CLI

namespace coffer::keyctl {

class CommandLine;

struct DatasetExportOptions {
  std::string dataset;
  std::string recipient_key_file;
  std::string out_file;
  uint64_t approval_id = 0;  // redeem this approved request (dual control)
};
absl::Status DatasetExport(CommandContext& ctx, const DatasetExportOptions& options);

struct ExportOpenOptions {
  std::string archive_file;
  std::string private_key_file;
  std::string out_dir;
  std::string public_key_file;  // empty: the running daemon's audit public key (status)
};
absl::Status ExportOpen(CommandContext& ctx, const ExportOpenOptions& options);

// The file name of attachment `name` under DIR/attachments: bytes in [A-Za-z0-9._-] kept, all
// others (and a leading '.') as %XX; escaped names longer than 200 bytes become
// "long-<SHA-256 of the name, hex>".
std::string AttachmentFileName(std::string_view name);

// Adds `dataset export` (to the `dataset` group AddDatasetCommands added) and `export open`.
void AddExportCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_EXPORT_COMMANDS_H_
