#include "kms/keyctl/receipt_commands.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "google/protobuf/util/time_util.h"
#include "kms/formats/receipt_file.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/files.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {
namespace {

namespace pb = ::coffer::v1;
using google::protobuf::util::TimeUtil;

constexpr size_t kMaxReceiptBytes = 1 << 20;

// Writes `bytes` to `path` through a temporary file in the same directory and a rename: the
// file is either the whole receipt or not there.
absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes) {
  const std::string temporary = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return MakeError(ErrorCode::kIoError,
                     absl::StrCat("cannot create ", temporary, ": ", std::strerror(errno)));
  }
  size_t written = 0;
  bool ok = true;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      break;
    }
    written += static_cast<size_t>(n);
  }
  const int saved = errno;
  if (ok && ::fsync(fd) != 0) ok = false;
  ::close(fd);
  if (!ok || ::rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = ok ? errno : saved;
    ::unlink(temporary.c_str());
    return MakeError(ErrorCode::kIoError,
                     absl::StrCat("cannot write ", path, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

int64_t Micros(const google::protobuf::Timestamp& at) {
  return TimeUtil::TimestampToMicroseconds(at);
}

std::string Who(const pb::ReceiptActor& actor) {
  std::string who = absl::StrCat("uid ", actor.uid());
  if (!actor.admin_name().empty()) absl::StrAppend(&who, " (", actor.admin_name(), ")");
  return who;
}

std::string Sequence(uint64_t sequence) {
  return sequence == 0 ? "not recorded" : std::to_string(sequence);
}

void PrintReceipt(CommandContext& ctx, const pb::DeletionReceipt& r, const std::string& name) {
  std::ostream& out = ctx.out();
  out << "dataset          handle " << r.dataset_handle();
  if (r.dataset_name_commitment().empty()) {
    out << ", name sha256 " << r.dataset_name_sha256();
  } else {
    out << ", name commitment " << r.dataset_name_commitment();
  }
  if (!name.empty()) out << " (matches \"" << name << "\")";
  out << "\ncreated          " << FormatLocalTime(Micros(r.dataset_created_at()))
      << "\ndestruction      requested " << FormatLocalTime(Micros(r.destruction_requested_at()))
      << " by " << Who(r.destruction_requested_by())
      << (r.scheduled_by_lifecycle_automation() ? " (lifecycle automation)" : "") << '\n';
  for (const pb::ReceiptApproval& a : r.approvals()) {
    out << "approved by      " << Who(a.approver()) << ", request " << a.request_id()
        << ", audit entry " << a.audit_sequence() << '\n';
  }
  if (r.approvals().empty()) out << "approved by      - (no second admin: MFA off or automation)\n";
  out << "destroyed        " << FormatLocalTime(Micros(r.destroyed_at())) << ", "
      << r.key_versions_destroyed() << " key versions\n";
  for (const pb::ReceiptWrappingKey& k : r.wrapping_keys()) {
    out << "wrapping key     " << k.module() << " v" << k.version() << " destroyed in the token "
        << FormatLocalTime(Micros(k.destroyed_at()))
        << (k.already_absent() ? " (already absent on resume)" : "") << '\n';
  }
  out << "purged           " << r.records_purged() << " records, " << r.attachments_purged()
      << " attachments, " << r.bin_records_purged() << " + " << r.bin_attachments_purged()
      << " from the recycle bin, " << r.uploads_discarded() << " unfinished uploads\n"
      << "purge compaction " << (r.purge_compaction_finished() ? "finished " : "NOT finished ")
      << FormatLocalTime(Micros(r.purge_compaction_finished_at())) << '\n';
  const pb::ReceiptAuditSequences& s = r.audit_sequences();
  out << "audit entries    scheduled " << Sequence(s.destruction_scheduled()) << ", destroy "
      << Sequence(s.destruction_started()) << ".." << Sequence(s.destruction_completed())
      << ", erase " << Sequence(s.erasure_started()) << ".." << Sequence(s.erasure_completed())
      << '\n'
      << "tombstone sha256 " << r.tombstone_sha256() << '\n'
      << "issued           " << FormatLocalTime(Micros(r.issued_at())) << '\n';
}

}  // namespace

absl::Status ReceiptGet(CommandContext& ctx, const std::string& name,
                        std::optional<uint64_t> handle, const std::string& out_file) {
  pb::Request request;
  if (handle.has_value()) {
    request.mutable_receipt_get()->set_handle(*handle);
  } else {
    request.mutable_receipt_get()->set_name(name);
  }
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::ReceiptGetResponse& got = response.receipt_get();
  if (!out_file.empty()) COFFER_RETURN_IF_ERROR(WriteFileAtomically(out_file, got.receipt()));
  if (ctx.json()) {
    const std::string& file = got.receipt();
    nlohmann::json json = {{"dataset_handle", got.dataset_handle()}};
    json["receipt"] = nlohmann::json::parse(file.substr(0, file.find('\n')), nullptr,
                                            /*allow_exceptions=*/false);
    json["file"] = out_file.empty() ? nlohmann::json(nullptr) : nlohmann::json(out_file);
    if (out_file.empty()) json["receipt_file"] = file;
    PrintJson(ctx, json);
    return absl::OkStatus();
  }
  if (out_file.empty()) {
    ctx.out() << got.receipt();
  } else {
    ctx.out() << "deletion receipt for dataset handle " << got.dataset_handle() << " written to "
              << out_file << " (verify: keyctl receipt verify " << out_file
              << " --public-key audit-public-key.pem)\n";
  }
  return absl::OkStatus();
}

// Whether `receipt` is for the dataset named `name`: a v2 receipt commits to the name under its
// salt (given to the customer at creation), a v1 receipt carries the name's bare SHA-256.
absl::Status CheckName(const std::string& receipt_file, const pb::DeletionReceipt& receipt,
                       const std::string& name, const std::string& salt_hex) {
  const bool committed = !receipt.dataset_name_commitment().empty();
  if (name.empty()) {
    if (!salt_hex.empty()) {
      return MakeError(ErrorCode::kInvalidArgument, "--name-salt checks a name: pass --name too");
    }
    return absl::OkStatus();
  }
  std::string expected;
  if (committed) {
    if (salt_hex.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "this receipt commits to the name with a salt: pass --name-salt HEX (the "
                       "salt `keyctl dataset create` or `dataset describe` showed)");
    }
    if (salt_hex.size() != 2 * kms::receipt::kNameSaltBytes ||
        !std::all_of(salt_hex.begin(), salt_hex.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; })) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "--name-salt must be 64 hexadecimal digits (32 bytes)");
    }
    expected = kms::receipt::NameCommitmentHex(absl::HexStringToBytes(salt_hex), name);
  } else {
    if (!salt_hex.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "this receipt (issued before name commitments) carries the name's SHA-256: "
                       "drop --name-salt");
    }
    expected = kms::receipt::Sha256Hex(name);
  }
  const std::string& carried =
      committed ? receipt.dataset_name_commitment() : receipt.dataset_name_sha256();
  if (expected != carried) {
    return MakeError(
        ErrorCode::kReceiptInvalid,
        absl::StrCat(receipt_file,
                     committed ? ": the signature verifies, but the receipt is for a dataset with "
                                 "another name or salt"
                               : ": the signature verifies, but the receipt is for a dataset "
                                 "with another name"));
  }
  return absl::OkStatus();
}

absl::Status ReceiptVerify(CommandContext& ctx, const std::string& receipt_file,
                           const std::string& public_key_file, const std::string& name,
                           const std::string& salt_hex) {
  COFFER_ASSIGN_OR_RETURN(std::string file,
                          ReadFileUpTo(receipt_file, "receipt", kMaxReceiptBytes));
  COFFER_ASSIGN_OR_RETURN(std::string pem,
                          ReadFileUpTo(public_key_file, "public key", kMaxReceiptBytes));
  absl::StatusOr<pb::DeletionReceipt> receipt = kms::receipt::VerifyFile(file, pem);
  if (!receipt.ok()) {
    return MakeError(ErrorCodeOf(receipt.status()),
                     absl::StrCat(receipt_file, ": ", receipt.status().message()));
  }
  COFFER_RETURN_IF_ERROR(CheckName(receipt_file, *receipt, name, salt_hex));
  if (ctx.json()) {
    nlohmann::json json = {{"verified", true}};
    json["receipt"] = nlohmann::json::parse(file.substr(0, file.find('\n')), nullptr,
                                            /*allow_exceptions=*/false);
    json["name_matches"] = name.empty() ? nlohmann::json(nullptr) : nlohmann::json(true);
    PrintJson(ctx, json);
    return absl::OkStatus();
  }
  ctx.out() << "receipt " << receipt_file << " verified: signed by the key in " << public_key_file
            << " (sha256 " << receipt->signing_key_sha256() << ")\n";
  PrintReceipt(ctx, *receipt, name);
  return absl::OkStatus();
}

void AddReceiptCommands(CLI::App& app, CommandLine& line) {
  struct Values {
    std::string name;
    uint64_t handle = 0;
    std::string out_file, receipt_file, public_key, name_salt;
  };
  Values& v = line.NewValues<Values>();
  CLI::App* receipt = AddCommandGroup(
      app, "receipt", "Fetch and verify a destroyed dataset's signed deletion receipt",
      "keyctl receipt get crm/acme -o acme.receipt");

  CLI::App* get = AddCommand(
      receipt, "get", "Fetch the receipt of the destroyed dataset that had NAME (or --handle)",
      "keyctl receipt get crm/acme -o acme.receipt");
  CLI::Option* name = get->add_option("NAME", v.name, "The name the dataset had");
  CLI::Option* handle = get->add_option("--handle", v.handle, "The dataset's handle instead");
  name->excludes(handle);
  get->add_option("-o,--out", v.out_file, "Write the receipt file here (else print it)");
  get->callback([&v, &line, name, handle] {
    if (name->count() == 0 && handle->count() == 0) {
      throw CLI::ValidationError("receipt get", "name a dataset: NAME or --handle H");
    }
    std::optional<uint64_t> by_handle;
    if (handle->count() > 0) by_handle = v.handle;
    line.Choose([&v, by_handle](CommandContext& ctx) {
      return ReceiptGet(ctx, v.name, by_handle, v.out_file);
    });
  });

  CLI::App* verify = AddCommand(
      receipt, "verify", "Verify a receipt file offline with the token's public key (no daemon)",
      "keyctl receipt verify acme.receipt --public-key audit-public-key.pem "
      "--name crm/acme");
  verify->add_option("FILE", v.receipt_file, "The receipt file")->required();
  verify
      ->add_option("--public-key", v.public_key,
                   "The token's public key (PEM): cofferd's audit-public-key.pem")
      ->required();
  verify->add_option("--name", v.name, "Also check that the receipt is for this dataset name");
  verify->add_option("--name-salt", v.name_salt,
                     "The dataset's name salt (hex, from `dataset create` / `dataset describe`): "
                     "a v2 receipt commits to the name with it");
  line.Runs(verify, [&v](CommandContext& ctx) {
    return ReceiptVerify(ctx, v.receipt_file, v.public_key, v.name, v.name_salt);
  });
}

}  // namespace coffer::keyctl
