#include "kms/keyctl/export_commands.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "crypto/recipient_wrap.h"
#include "crypto/secret_bytes.h"
#include "kms/audit/audit_format.h"
#include "kms/formats/export_archive.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/files.h"
#include "kms/keyctl/output.h"
#include "nlohmann/json.hpp"

namespace coffer::keyctl {
namespace {

namespace pb = ::coffer::v1;
namespace fs = std::filesystem;
namespace ex = ::coffer::kms::dataset_export;

std::string Hex(std::string_view bytes) { return kms::audit::ToHex(bytes); }
std::string Base64(std::string_view bytes) {
  return absl::Base64Escape(absl::string_view(bytes.data(), bytes.size()));
}

// Reads a whole small file (a key); the caller wipes it if it is secret. Every failure is
// EXPORT_RECIPIENT_KEY_INVALID.
absl::StatusOr<std::string> ReadKeyFile(const std::string& path, const std::string& what) {
  if (path.empty()) {
    return MakeError(ErrorCode::kExportRecipientKeyInvalid, absl::StrCat("no ", what, " given"));
  }
  absl::StatusOr<std::string> bytes = ReadFileUpTo(path, what, size_t{1} << 20);
  if (ErrorCodeOf(bytes.status()) == ErrorCode::kInvalidArgument) {
    return MakeError(ErrorCode::kExportRecipientKeyInvalid,
                     absl::StrCat("the ", what, " ", path, " is larger than 1 MiB: not a key"));
  }
  if (!bytes.ok()) {
    return MakeError(ErrorCode::kExportRecipientKeyInvalid, std::string(bytes.status().message()));
  }
  return bytes;
}

absl::Status IoError(const std::string& what, int error) {
  return MakeError(ErrorCode::kIoError, what + ": " + std::strerror(error));
}

absl::Status WriteAll(int fd, std::string_view bytes, const std::string& path) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("writing " + path, errno);
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status SyncDirectoryOf(const std::string& path) {
  std::string dir = fs::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError("opening " + dir, errno);
  const int synced = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (synced != 0) return IoError("syncing " + dir, saved);
  return absl::OkStatus();
}

// The archive being received: a 0600 temporary file beside the target, removed unless
// committed.
class PartialFile {
 public:
  explicit PartialFile(std::string target) : target_(std::move(target)) {}
  PartialFile(const PartialFile&) = delete;
  PartialFile& operator=(const PartialFile&) = delete;
  ~PartialFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!temp_.empty()) ::unlink(temp_.c_str());
  }

  absl::Status Append(std::string_view bytes) {
    if (fd_ < 0) {
      std::string pattern = target_ + ".partial-XXXXXX";
      fd_ = ::mkostemp(pattern.data(), O_CLOEXEC);
      if (fd_ < 0) return IoError("creating a temporary file beside " + target_, errno);
      temp_ = pattern;
      ::fchmod(fd_, 0600);
    }
    return WriteAll(fd_, bytes, temp_);
  }
  // Syncs the file and links it as the target (never replacing an existing file).
  absl::Status Commit() {
    COFFER_RETURN_IF_ERROR(Append(""));  // an archive is never empty, but be exact
    if (::fsync(fd_) != 0) return IoError("syncing " + temp_, errno);
    ::close(fd_);
    fd_ = -1;
    if (::link(temp_.c_str(), target_.c_str()) != 0) {
      if (errno == EEXIST) {
        return MakeError(ErrorCode::kAlreadyExists,
                         target_ + " appeared during the export; it was not replaced");
      }
      return IoError("linking " + target_, errno);
    }
    ::unlink(temp_.c_str());
    temp_.clear();
    return SyncDirectoryOf(target_);
  }

 private:
  std::string target_;
  std::string temp_;
  int fd_ = -1;
};

// Writes what OpenArchive hands out into a directory (layout: docs/keyctl.md "Export").
class DirectoryWriter final : public ex::ArchiveVisitor {
 public:
  explicit DirectoryWriter(std::string dir) : dir_(std::move(dir)) {}
  ~DirectoryWriter() override { CloseAttachment(); }

  absl::Status Start() {
    if (::mkdir((dir_ + "/attachments").c_str(), 0700) != 0) {
      return IoError("creating " + dir_ + "/attachments", errno);
    }
    records_.open(dir_ + "/records.jsonl", std::ios::trunc | std::ios::binary);
    index_.open(dir_ + "/attachments.jsonl", std::ios::trunc | std::ios::binary);
    ::chmod((dir_ + "/records.jsonl").c_str(), 0600);
    ::chmod((dir_ + "/attachments.jsonl").c_str(), 0600);
    if (!records_ || !index_) return MakeError(ErrorCode::kIoError, "cannot write in " + dir_);
    return absl::OkStatus();
  }

  absl::Status Record(std::string_view id, std::string_view value) override {
    nlohmann::json line = {{"id", Base64(id)}, {"value", Base64(value)}};
    records_ << line.dump() << '\n';
    if (!records_) return MakeError(ErrorCode::kIoError, "writing records.jsonl");
    return absl::OkStatus();
  }

  absl::Status BeginAttachment(const ex::v1::ExportEntry::Attachment& a) override {
    const std::string file = "attachments/" + AttachmentFileName(a.name());
    const std::string path = dir_ + "/" + file;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ < 0) return IoError("creating " + path, errno);
    path_ = path;
    nlohmann::json line = {{"name", Base64(a.name())},
                           {"file", file},
                           {"size", a.size()},
                           {"content_type", a.content_type()},
                           {"created_micros", a.created_micros()}};
    index_ << line.dump() << '\n';
    if (!index_) return MakeError(ErrorCode::kIoError, "writing attachments.jsonl");
    return absl::OkStatus();
  }
  absl::Status AttachmentData(std::string_view data) override { return WriteAll(fd_, data, path_); }
  absl::Status EndAttachment() override {
    const int closed = ::close(fd_);
    fd_ = -1;
    if (closed != 0) return IoError("closing " + path_, errno);
    return absl::OkStatus();
  }

  absl::Status Finish(const nlohmann::json& manifest) {
    records_.close();
    index_.close();
    if (!records_ || !index_) return MakeError(ErrorCode::kIoError, "closing files in " + dir_);
    std::ofstream out(dir_ + "/manifest.json", std::ios::trunc);
    out << manifest.dump(2) << '\n';
    out.close();
    ::chmod((dir_ + "/manifest.json").c_str(), 0600);
    if (!out) return MakeError(ErrorCode::kIoError, "writing manifest.json");
    return absl::OkStatus();
  }

 private:
  void CloseAttachment() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  std::string dir_;
  std::ofstream records_;
  std::ofstream index_;
  int fd_ = -1;
  std::string path_;
};

// The recipient's private key: read into the secure heap, the temporary copy wiped.
absl::StatusOr<crypto::RecipientPrivateKey> ReadPrivateKey(const std::string& path) {
  COFFER_ASSIGN_OR_RETURN(std::string key_text, ReadKeyFile(path, "private key"));
  absl::StatusOr<crypto::SecretBytes> key_pem = crypto::SecretBytes::CopyFrom(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(key_text.data()), key_text.size()));
  OPENSSL_cleanse(key_text.data(), key_text.size());
  if (!key_pem.ok()) return key_pem.status();
  return crypto::RecipientPrivateKey::FromPem(*key_pem);
}

// The token's public key that signed the archive: --public-key, else the running daemon's.
absl::StatusOr<std::string> TokenPublicKey(CommandContext& ctx, const ExportOpenOptions& options) {
  if (!options.public_key_file.empty()) {
    absl::StatusOr<std::string> file = ReadKeyFile(options.public_key_file, "token public key");
    if (!file.ok()) {
      return MakeError(ErrorCode::kInvalidArgument, std::string(file.status().message()));
    }
    return file;
  }
  pb::Request request;
  request.mutable_status();
  absl::StatusOr<pb::Response> status = ctx.Call(std::move(request));
  if (!status.ok()) {
    return MakeError(ErrorCodeOf(status.status()),
                     std::string(status.status().message()) +
                         " (or pass --public-key: the daemon's audit-public-key.pem)");
  }
  return status->status().audit_public_key_pem();
}

}  // namespace

std::string AttachmentFileName(std::string_view name) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    const bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                       c == '_' || c == '-' || (c == '.' && i > 0);
    if (plain) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  if (out.empty() || out.size() > 200) {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(name.data()), name.size(), digest);
    return "long-" + Hex(std::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
  }
  return out;
}

namespace {

// OK when `out_file` names a file that does not exist yet in an existing directory: an export
// never overwrites a file.
absl::Status CheckNewOutputFile(const std::string& out_file) {
  if (out_file.empty()) return MakeError(ErrorCode::kInvalidArgument, "--out FILE is required");
  std::error_code ec;
  if (fs::symlink_status(out_file, ec).type() != fs::file_type::not_found) {
    return MakeError(ErrorCode::kAlreadyExists,
                     out_file + " exists; an export never overwrites a file");
  }
  const fs::path parent = fs::absolute(out_file, ec).parent_path();
  if (!fs::is_directory(parent, ec)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the directory of --out (" + parent.string() + ") does not exist");
  }
  return absl::OkStatus();
}

// What an export wrote: counts, recipient, archive digest and the damaged items left out.
void PrintExportSummary(CommandContext& ctx, const std::string& file,
                        const pb::DatasetExportSummary& summary) {
  if (ctx.json()) {
    nlohmann::json out = ProtoToJson(summary);
    out["file"] = file;
    out["archive_sha256"] = Hex(summary.archive_sha256());
    out["recipient_fingerprint"] = Hex(summary.recipient_fingerprint());
    ctx.out() << out.dump(2) << '\n';
    return;
  }
  ctx.out() << "exported " << summary.dataset() << " to " << file << ": " << summary.records()
            << " records, " << summary.attachments() << " attachments ("
            << FormatBytes(summary.attachment_bytes()) << "), archive "
            << FormatBytes(summary.archive_bytes()) << "\n"
            << "  recipient " << summary.recipient_key()
            << " key SHA256:" << Hex(summary.recipient_fingerprint()) << "\n"
            << "  archive SHA256:" << Hex(summary.archive_sha256()) << "\n";
  if (summary.damaged() > 0) {
    // Left out of the archive: their stored bytes no longer open (docs/daemon.md, "Damaged items").
    ctx.out() << "  " << summary.damaged()
              << " damaged item(s) left out (stored bytes no longer open):\n";
    for (const pb::DamagedItem& item : summary.damaged_items()) {
      ctx.out() << "    " << item.ref() << "  " << item.code_name() << "  " << item.column_family()
                << "\n";
    }
  }
}

}  // namespace

absl::Status DatasetExport(CommandContext& ctx, const DatasetExportOptions& options) {
  // Everything checkable here is checked before the daemon is asked.
  COFFER_ASSIGN_OR_RETURN(std::string pem,
                          ReadKeyFile(options.recipient_key_file, "recipient public key"));
  COFFER_ASSIGN_OR_RETURN(crypto::RecipientPublicKey recipient,
                          crypto::RecipientPublicKey::FromPem(pem));
  COFFER_RETURN_IF_ERROR(CheckNewOutputFile(options.out_file));

  pb::Request request;
  auto* r = request.mutable_dataset_export();
  r->set_dataset(options.dataset);
  r->set_recipient_public_key_pem(pem);
  r->set_approval_id(options.approval_id);

  PartialFile partial(options.out_file);
  struct Received {
    uint64_t bytes = 0;
  } received;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sha(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (sha == nullptr || EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1) {
    return MakeError(ErrorCode::kCryptoLibraryError, "SHA-256");
  }
  AdminClient::FrameCallback on_frame = [&](const pb::Response& frame) -> absl::StatusOr<bool> {
    const std::string& data = frame.dataset_export().data();
    if (!data.empty()) {
      COFFER_RETURN_IF_ERROR(partial.Append(data));
      EVP_DigestUpdate(sha.get(), data.data(), data.size());
      received.bytes += data.size();
    }
    return !frame.dataset_export().last();
  };
  COFFER_ASSIGN_OR_RETURN(pb::Response response,
                          ctx.CallStreaming(std::move(request), "export", std::move(on_frame)));
  const pb::DatasetExportResponse& result = response.dataset_export();
  if (result.approved_for_redemption() || !result.has_summary()) {
    return MakeError(ErrorCode::kUnexpectedFrame, "cofferd sent no export summary");
  }
  const pb::DatasetExportSummary& summary = result.summary();
  unsigned char digest[32];
  unsigned int digest_size = 0;
  EVP_DigestFinal_ex(sha.get(), digest, &digest_size);
  if (received.bytes != summary.archive_bytes() ||
      summary.archive_sha256() != std::string_view(reinterpret_cast<const char*>(digest), 32)) {
    return MakeError(ErrorCode::kExportArchiveCorrupt,
                     "the archive received differs from the daemon's summary (size or SHA-256); "
                     "nothing was written");
  }
  COFFER_RETURN_IF_ERROR(partial.Commit());

  PrintExportSummary(ctx, options.out_file, summary);
  return absl::OkStatus();
}

absl::Status ExportOpen(CommandContext& ctx, const ExportOpenOptions& options) {
  COFFER_ASSIGN_OR_RETURN(crypto::RecipientPrivateKey private_key,
                          ReadPrivateKey(options.private_key_file));
  COFFER_ASSIGN_OR_RETURN(std::string token_pem, TokenPublicKey(ctx, options));

  // DIR: absent or empty; filled as a temporary sibling renamed into place.
  if (options.out_dir.empty())
    return MakeError(ErrorCode::kInvalidArgument, "--out-dir is required");
  std::error_code ec;
  const fs::path target = fs::absolute(options.out_dir, ec).lexically_normal();
  const bool exists = fs::exists(fs::symlink_status(target, ec));
  if (exists && (!fs::is_directory(fs::symlink_status(target, ec)) || !fs::is_empty(target, ec))) {
    return MakeError(ErrorCode::kAlreadyExists,
                     options.out_dir + " exists and is not an empty directory");
  }
  std::string temp =
      (target.has_filename() ? target : target.parent_path()).string() + ".partial-XXXXXX";
  if (::mkdtemp(temp.data()) == nullptr) {
    return IoError("creating a temporary directory beside " + options.out_dir, errno);
  }
  struct RemoveUnlessKept {
    std::string path;
    ~RemoveUnlessKept() {
      if (path.empty()) return;
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } cleanup{temp};

  DirectoryWriter writer(temp);
  COFFER_RETURN_IF_ERROR(writer.Start());
  absl::StatusOr<ex::OpenedArchive> opened;
  {
    auto show = ctx.LocalProgress("export open");
    opened =
        ex::OpenArchive(options.archive_file, private_key, token_pem, &writer,
                        [&show](const coffer::Progress& p) { show(p.phase, p.done, p.total); });
  }
  if (!opened.ok()) return opened.status();
  const ex::v1::ExportHeader& header = opened->header;
  nlohmann::json manifest = {{"format", "export-v1"},
                             {"dataset", header.dataset()},
                             {"dataset_handle", header.dataset_handle()},
                             {"dataset_state", header.dataset_state()},
                             {"exported_micros", header.exported_micros()},
                             {"recipient_fingerprint", Hex(header.recipient_fingerprint())},
                             {"signer_fingerprint", Hex(header.signer_fingerprint())},
                             {"approval_id", header.approval_id()},
                             {"records", opened->trailer.records()},
                             {"attachments", opened->trailer.attachments()},
                             {"attachment_bytes", opened->trailer.attachment_bytes()}};
  COFFER_RETURN_IF_ERROR(writer.Finish(manifest));
  if (exists && ::rmdir(target.c_str()) != 0) return IoError("replacing " + options.out_dir, errno);
  if (::rename(temp.c_str(), target.c_str()) != 0) {
    return IoError("renaming the output into " + options.out_dir, errno);
  }
  cleanup.path.clear();
  COFFER_RETURN_IF_ERROR(SyncDirectoryOf(target.string()));

  if (ctx.json()) {
    manifest["out_dir"] = options.out_dir;
    ctx.out() << manifest.dump(2) << '\n';
    return absl::OkStatus();
  }
  ctx.out() << "opened export of " << header.dataset() << " (signature verified) into "
            << options.out_dir << ": " << opened->trailer.records() << " records, "
            << opened->trailer.attachments() << " attachments ("
            << FormatBytes(opened->trailer.attachment_bytes()) << ")\n";
  return absl::OkStatus();
}

void AddExportCommands(CLI::App& app, CommandLine& line) {
  DatasetExportOptions& export_options = line.NewValues<DatasetExportOptions>();
  ExportOpenOptions& open_options = line.NewValues<ExportOpenOptions>();
  CLI::App* sub = AddCommand(app.get_subcommand("dataset"), "export",
                             "Export a DISABLED or PENDING_DESTRUCTION dataset to an archive for a "
                             "recipient key (dual control)",
                             "keyctl dataset export crm/contacts --recipient-key customer.pub.pem "
                             "--out contacts.cfx --totp 123456");
  sub->add_option("NAME", export_options.dataset, "Dataset name")->required();
  sub->add_option("--recipient-key", export_options.recipient_key_file,
                  "The recipient's PEM public key (RSA >= 2048 bits or X25519)")
      ->required();
  sub->add_option("--out", export_options.out_file, "Archive file to create (never overwritten)")
      ->required();
  sub->add_option("--approval", export_options.approval_id,
                  "Redeem this approved export request (keyctl request list)");
  line.Runs(sub,
            [&export_options](CommandContext& ctx) { return DatasetExport(ctx, export_options); });

  CLI::App* exp = app.add_subcommand("export", "Open dataset export archives");
  exp->require_subcommand(1);
  CLI::App* open = AddCommand(exp, "open",
                              "Verify and decrypt an export archive into a directory (no daemon "
                              "needed with --public-key)",
                              "keyctl export open contacts.cfx --private-key customer.key.pem "
                              "--out-dir contacts --public-key audit-public-key.pem");
  open->add_option("FILE", open_options.archive_file, "The archive")->required();
  open->add_option("--private-key", open_options.private_key_file,
                   "The recipient's PEM private key")
      ->required();
  open->add_option("--out-dir", open_options.out_dir,
                   "Directory to create (or an empty one) for records and attachments")
      ->required();
  open->add_option("--public-key", open_options.public_key_file,
                   "The daemon's audit-public-key.pem (default: ask the running daemon)");
  line.Runs(open, [&open_options](CommandContext& ctx) { return ExportOpen(ctx, open_options); });
}

}  // namespace coffer::keyctl
