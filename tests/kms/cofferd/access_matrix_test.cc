// The access matrix (issue 19 item 6): every operation of the operation table × data and admin
// socket × caller × own and other dataset, tried against a running test-cofferd, each cell
// allowed or refused exactly as the table says, and every refusal found in the audit log.
//
// The cells are generated from OperationTable::Default(), so an operation added to the table gets
// its cells without a change here; a request is built by reflection on coffer.v1.Request (the
// oneof case of the row, with the dataset field the row's DatasetNameFn reads), and a row whose
// dataset this file cannot name fails the suite instead of being skipped. ExpectedOutcome is the
// table's semantics as docs/api.md states them, written out once here and independently of
// kms/ops/authz.cc, whose job is to agree with it.
//
// "Allowed" means the request got past every access rule: its answer is no refusal (it may still
// fail on its empty arguments, e.g. INVALID_ARGUMENT or DATASET_NOT_FOUND; an allowed cell runs
// with the arguments the matrix gives it, not a useful request). Refused cells must be answered
// with exactly the refusal the table implies, and the audit log must hold each of them: the
// REQUEST_REFUSED entries of each caller, summed by (socket, code, dataset), equal the refused
// cells (the daemon folds repeated refusals of one caller into one entry with a count).
//
// Two daemons: development mode (no MFA: the configured admin is root) and MFA with dual control
// (root an enrolled admin that also holds a READ grant, uid 1 a configured admin that never
// enrolled), where the admin socket's cells are tried without a code and, for the enrolled
// admin, with a fresh code each. Callers other than root run in a child process that drops to
// their uid (tests/kms/cofferd/cofferd_harness.h RunAsUid), with the daemon's group so that both
// sockets accept their connection. Each cell gets a connection of its own, so no cell sees an
// upload, MFA session or refusal count another left behind. Needs root; skipped otherwise.

#include <unistd.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "gtest/gtest.h"
#include "kms/ops/operation_table.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/raw_connection.h"

namespace coffer {
namespace {

namespace pb = ::coffer::v1;
using ::coffer::daemon::DualControl;
using ::coffer::daemon::Handler;
using ::coffer::daemon::kRightDelete;
using ::coffer::daemon::kRightMetadata;
using ::coffer::daemon::kRightPseudonymize;
using ::coffer::daemon::kRightRead;
using ::coffer::daemon::kRightReidentify;
using ::coffer::daemon::kRightWrite;
using ::coffer::daemon::Mfa;
using ::coffer::daemon::OperationRow;
using ::coffer::daemon::OperationTable;
using ::coffer::daemon::Sockets;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::RawConnection;

constexpr char kOwn[] = "crm/matrix-own";
constexpr char kOther[] = "crm/matrix-other";
constexpr uint32_t kAllRights = kRightRead | kRightWrite | kRightDelete | kRightMetadata |
                                kRightPseudonymize | kRightReidentify;

// The callers of the matrix (uids without accounts; the kernel needs none).
struct Caller {
  std::string name;
  uid_t uid;
  uint32_t rights_on_own;  // the union of its grants on kOwn; none on kOther
  bool admin;              // among the configured admins
  bool enrolled;           // an enrolled admin (MFA on only)
};

enum class Socket { kData, kAdmin };
enum class Target {
  kOwnDataset,
  kOtherDataset,
  kNoDataset
};                                  // kNone: the operation names no dataset
enum class Code { kNone, kFresh };  // the TOTP code the request carries

struct Cell {
  const OperationRow* row;
  Socket socket;
  const Caller* caller;
  Target target;
  Code code;
};

std::string Describe(const Cell& cell) {
  std::string out(cell.row->name.view());
  out += cell.socket == Socket::kData ? " on data" : " on admin";
  out += " by " + cell.caller->name;
  if (cell.target == Target::kOwnDataset) out += " on own dataset";
  if (cell.target == Target::kOtherDataset) out += " on other dataset";
  if (cell.code == Code::kFresh) out += " with a fresh code";
  return out;
}

// The answers that say "the caller may not" (kms/server IsRefusal, plus a frame out of order and
// a request filed for a second admin's approval).
bool IsRefusal(int code) {
  switch (static_cast<ErrorCode>(code)) {
    case ErrorCode::kNotGranted:
    case ErrorCode::kSlowDown:
    case ErrorCode::kWrongSocket:
    case ErrorCode::kUnexpectedFrame:
    case ErrorCode::kMfaRequired:
    case ErrorCode::kAdminNotEnrolled:
    case ErrorCode::kApprovalPending:
      return true;
    default:
      return false;
  }
}

// The attachment_put_begin that opens the upload an upload-frame `cell` is tried in: the same
// caller and socket, on its own dataset.
Cell BeginFor(const Cell& cell) {
  Cell begin = cell;
  begin.row = OperationTable::Default().Find(pb::Request::kAttachmentPutBegin);
  begin.target = Target::kOwnDataset;
  return begin;
}

// What the table says `cell` gets: ErrorCode::kOk for "allowed", otherwise the refusal.
// `audited_by_handler`: the refusal is the handler's (an admin request audited as ADMIN_REQUEST
// with its result), not the access rules' (REQUEST_REFUSED).
struct Outcome {
  ErrorCode code;
  bool audited_by_handler = false;
};
ErrorCode ExpectedOutcome(const Cell& cell, bool mfa);

Outcome ExpectedAudit(const Cell& cell, bool mfa) {
  const ErrorCode code = ExpectedOutcome(cell, mfa);
  const bool handler =
      code == ErrorCode::kApprovalPending || (cell.socket == Socket::kAdmin && cell.caller->admin &&
                                              cell.row->op == pb::Request::kAdminEnroll);
  return Outcome{code, handler};
}

ErrorCode ExpectedOutcome(const Cell& cell, bool mfa) {
  const OperationRow& row = *cell.row;
  const Caller& caller = *cell.caller;
  if (row.handler == Handler::kUploadFrame) {
    // A chunk, commit or abort is served only inside an upload its connection opened, and one
    // can be opened only where attachment_put_begin is allowed.
    return ExpectedOutcome(BeginFor(cell), mfa) == ErrorCode::kOk ? ErrorCode::kOk
                                                                  : ErrorCode::kUnexpectedFrame;
  }
  if (cell.socket == Socket::kAdmin) {
    if (row.sockets == Sockets::kData) return ErrorCode::kWrongSocket;
    if (!caller.admin) return ErrorCode::kNotGranted;
    if (!mfa || row.mfa == Mfa::kNone) return ErrorCode::kOk;
    // A claim (admin_enroll naming no uid) is the one way in for an admin not yet enrolled; its
    // handler refuses it without an invitation once the first admin has enrolled (the matrix's
    // daemons invite none of its callers).
    if (row.op == pb::Request::kAdminEnroll) {
      return caller.enrolled ? ErrorCode::kOk : ErrorCode::kAdminNotEnrolled;
    }
    if (!caller.enrolled) return ErrorCode::kAdminNotEnrolled;
    if (cell.code == Code::kNone) return ErrorCode::kMfaRequired;
    // With a fresh code: what one admin may never do alone is filed for a second admin. The
    // other rules depend on arguments (a destruction, a weakening, destroy_old...) that the
    // matrix's empty requests do not carry; tests/kms/keyctl/keyctl_dual_control_test.cc tries
    // each of them.
    if (row.dual_control == DualControl::kAlways || row.dual_control == DualControl::kPurge) {
      return ErrorCode::kApprovalPending;
    }
    return ErrorCode::kOk;
  }
  if (row.sockets == Sockets::kAdmin) return ErrorCode::kWrongSocket;
  const uint32_t held = cell.target == Target::kOwnDataset ? caller.rights_on_own : 0;
  bool granted = false;
  if (row.op == pb::Request::kDatasetList) {
    granted = caller.rights_on_own != 0;  // named by some grant
  } else if (row.data_right == kRightMetadata) {
    granted = held != 0;
  } else {
    granted = (held & row.data_right) != 0;
  }
  if (!granted) return ErrorCode::kNotGranted;
  // Content is never served to an enrolled admin, whatever its grants.
  if (row.sockets == Sockets::kData && caller.enrolled) return ErrorCode::kNotGranted;
  return ErrorCode::kOk;
}

// `row`'s request naming `dataset`. Fails the test when the row names a dataset through a field
// this function does not know, so that a new operation cannot slip past the matrix unnamed.
pb::Request RequestFor(const OperationRow& row, const std::string& dataset) {
  pb::Request request;
  const google::protobuf::Descriptor* descriptor = request.GetDescriptor();
  const google::protobuf::FieldDescriptor* field =
      descriptor->FindFieldByNumber(static_cast<int>(row.op));
  if (field == nullptr || field->type() != google::protobuf::FieldDescriptor::TYPE_MESSAGE) {
    ADD_FAILURE() << row.name.view() << ": no message field with the op's number in Request";
    return request;
  }
  google::protobuf::Message* body = request.GetReflection()->MutableMessage(&request, field);
  if (row.dataset == nullptr || dataset.empty()) return request;
  for (const char* name : {"dataset", "name"}) {
    const google::protobuf::FieldDescriptor* named = body->GetDescriptor()->FindFieldByName(name);
    if (named == nullptr || named->type() != google::protobuf::FieldDescriptor::TYPE_STRING ||
        named->is_repeated()) {
      continue;
    }
    body->GetReflection()->SetString(body, named, dataset);
    if (row.dataset(request) == dataset) return request;
    body->GetReflection()->ClearField(body, named);
  }
  ADD_FAILURE() << row.name.view() << ": the matrix cannot name its dataset (no string field "
                << "`dataset` or `name` that the row's DatasetNameFn reads)";
  return request;
}

// One caller's cells, tried on connections of their own; the answers' codes, one per cell, as
// "code\n" lines (negative: the transport failed; -1000: no connection; -2000: the upload a
// frame was to be tried in could not be opened). `open_upload[i]`: cell i is an upload frame
// tried inside an upload its connection opens first (a chunk there is answered by the commit
// that follows it).
std::string TryCells(const std::vector<Cell>& cells, std::vector<pb::Request> requests,
                     const std::vector<bool>& open_upload, const std::string& data_socket,
                     const std::string& admin_socket,
                     const std::function<std::string()>& next_code) {
  std::ostringstream out;
  for (size_t i = 0; i < cells.size(); ++i) {
    RawConnection conn(cells[i].socket == Socket::kData ? data_socket : admin_socket);
    if (!conn.ok()) {
      out << "-1000\n";
      continue;
    }
    if (open_upload[i]) {
      pb::Request begin;
      begin.mutable_attachment_put_begin()->set_dataset(kOwn);
      begin.mutable_attachment_put_begin()->set_name("matrix.bin");
      auto begun = conn.Call(begin);
      if (!begun.ok() || begun->has_error()) {
        out << "-2000\n";
        continue;
      }
    }
    // A code is single-use and valid for its step only: taken as the request leaves.
    if (cells[i].code == Code::kFresh) requests[i].set_totp_code(next_code());
    absl::StatusOr<pb::Response> answer;
    if (open_upload[i] && requests[i].has_attachment_chunk()) {
      // A chunk inside an upload is not answered: the commit after it answers for it.
      pb::Request commit;
      commit.mutable_attachment_put_commit();
      absl::Status sent = conn.Send(requests[i]);
      answer = sent.ok() ? conn.Call(commit) : absl::StatusOr<pb::Response>(sent);
    } else {
      answer = conn.Call(requests[i]);
    }
    out << (answer.ok() ? answer->error().code() : -static_cast<int>(ErrorCodeOf(answer.status())))
        << "\n";
  }
  return out.str();
}

std::vector<int> ParseCodes(const std::string& text) {
  std::vector<int> codes;
  std::istringstream in(text);
  int code;
  while (in >> code) codes.push_back(code);
  return codes;
}

// How a refusal is found in the audit log: (kind, socket for REQUEST_REFUSED or operation for
// ADMIN_REQUEST, code, dataset handle) → how many.
using RefusalKey = std::tuple<std::string, std::string, int, uint64_t>;

class AccessMatrixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: the callers drop to other uids";
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::cerr << "cofferd's log:\n" << daemon_->Logs();
  }

  absl::StatusOr<pb::Response> Admin(pb::Request request, const std::string& code = "") {
    if (!code.empty()) request.set_totp_code(code);
    RawConnection admin(daemon_->admin_socket());
    return admin.Call(request);
  }
  uint64_t Create(const std::string& name, const std::string& code = "") {
    pb::Request create;
    create.mutable_dataset_create()->set_name(name);
    auto created = Admin(create, code);
    EXPECT_TRUE(created.ok() && !created->has_error())
        << (created.ok() ? created->DebugString() : created.status().ToString());
    return created.ok() ? created->dataset_create().handle() : 0;
  }

  // The sequence of the audit log's last entry.
  uint64_t LastAuditSequence() {
    uint64_t last = 0;
    for (;;) {
      pb::Request query;
      query.mutable_audit_query()->set_after_sequence(last);
      query.mutable_audit_query()->set_limit(1000);
      auto page = Admin(query);
      EXPECT_TRUE(page.ok() && !page->has_error());
      if (!page.ok() || page->has_error()) return last;
      for (const pb::AuditRecord& entry : page->audit_query().entries()) last = entry.sequence();
      if (!page->audit_query().more()) return last;
    }
  }

  // The cells of `callers` on both sockets; with `fresh_code_for`, that caller's admin-socket
  // cells are tried again with a fresh code each.
  std::vector<Cell> Cells(const std::vector<Caller>& callers, const Caller* fresh_code_for) {
    std::vector<Cell> cells;
    for (const OperationRow& row : OperationTable::Default().rows()) {
      std::vector<Target> targets = {Target::kNoDataset};
      if (row.dataset != nullptr) targets = {Target::kOwnDataset, Target::kOtherDataset};
      for (const Caller& caller : callers) {
        for (Socket socket : {Socket::kData, Socket::kAdmin}) {
          for (Target target : targets) {
            cells.push_back(Cell{&row, socket, &caller, target, Code::kNone});
            if (&caller == fresh_code_for && socket == Socket::kAdmin) {
              cells.push_back(Cell{&row, socket, &caller, target, Code::kFresh});
            }
          }
        }
      }
    }
    return cells;
  }

  // Tries every cell (root's in this process, fresh codes from `next_code`, the others' as their
  // uid) and checks each answer and the audit log against the table.
  void RunMatrix(const std::vector<Caller>& callers, const std::vector<Cell>& cells, bool mfa,
                 const std::function<std::string()>& next_code) {
    // Only what the cells caused counts: the set-up (datasets, enrolments) is audited before.
    const uint64_t audited_before = LastAuditSequence();
    std::map<uid_t, std::vector<size_t>> by_uid;
    for (size_t i = 0; i < cells.size(); ++i) by_uid[cells[i].caller->uid].push_back(i);
    std::vector<int> answers(cells.size(), -3000);
    const std::string data = daemon_->data_socket();
    const std::string admin = daemon_->admin_socket();
    for (const Caller& caller : callers) {
      std::vector<Cell> mine;
      std::vector<pb::Request> requests;
      std::vector<bool> open_upload;
      for (size_t i : by_uid[caller.uid]) {
        mine.push_back(cells[i]);
        open_upload.push_back(cells[i].row->handler == Handler::kUploadFrame &&
                              ExpectedOutcome(BeginFor(cells[i]), mfa) == ErrorCode::kOk);
        std::string dataset = cells[i].target == Target::kOwnDataset     ? kOwn
                              : cells[i].target == Target::kOtherDataset ? kOther
                                                                         : "";
        requests.push_back(RequestFor(*cells[i].row, dataset));
      }
      std::string text =
          caller.uid == geteuid()
              ? TryCells(mine, requests, open_upload, data, admin, next_code)
              : ::coffer::testing::RunAsUid(caller.uid, daemon_->daemon_gid(), [&] {
                  return TryCells(mine, requests, open_upload, data, admin, next_code);
                });
      std::vector<int> codes = ParseCodes(text);
      ASSERT_EQ(codes.size(), mine.size()) << caller.name << ": " << text;
      for (size_t k = 0; k < codes.size(); ++k) answers[by_uid[caller.uid][k]] = codes[k];
    }

    std::map<uid_t, std::map<RefusalKey, uint64_t>> expected_refusals;
    size_t allowed = 0;
    size_t served = 0;  // allowed and answered OK (the others failed on their empty arguments)
    size_t refused = 0;
    for (size_t i = 0; i < cells.size(); ++i) {
      const Cell& cell = cells[i];
      const ErrorCode expected = ExpectedOutcome(cell, mfa);
      const int got = answers[i];
      if (expected == ErrorCode::kOk) {
        ++allowed;
        if (got == 0) ++served;
        EXPECT_TRUE(got >= 0 && !IsRefusal(got))
            << Describe(cell) << ": the table allows it, the daemon answered " << got << " ("
            << ErrorCodeName(static_cast<ErrorCode>(got < 0 ? -got : got)) << ")";
        continue;
      }
      ++refused;
      EXPECT_EQ(got, static_cast<int>(expected))
          << Describe(cell) << ": the table says " << ErrorCodeName(expected) << ", got "
          << ErrorCodeName(static_cast<ErrorCode>(got < 0 ? -got : got));
      uint64_t handle = cell.target == Target::kOwnDataset     ? own_
                        : cell.target == Target::kOtherDataset ? other_
                                                               : 0;
      // Refusals before a row is consulted for its dataset name none (upload frames).
      if (cell.row->handler == Handler::kUploadFrame) handle = 0;
      if (ExpectedAudit(cell, mfa).audited_by_handler) {
        ++expected_refusals[cell.caller->uid][{"ADMIN_REQUEST", std::string(cell.row->name.view()),
                                               static_cast<int>(expected), handle}];
      } else {
        ++expected_refusals[cell.caller->uid]
                           [{"REQUEST_REFUSED", cell.socket == Socket::kData ? "data" : "admin",
                             static_cast<int>(expected), handle}];
      }
    }
    std::cout << "access matrix (" << (mfa ? "MFA on" : "development mode") << "): " << cells.size()
              << " cells, " << allowed << " allowed (" << served << " answered OK), " << refused
              << " refused\n";

    for (const Caller& caller : callers) {
      std::map<RefusalKey, uint64_t> audited;
      uint64_t after = audited_before;
      for (;;) {
        pb::Request query;
        query.mutable_audit_query()->set_caller_uid(caller.uid);
        query.mutable_audit_query()->set_after_sequence(after);
        query.mutable_audit_query()->set_limit(1000);
        auto page = Admin(query);  // audit_query needs no code
        ASSERT_TRUE(page.ok()) << page.status();
        ASSERT_FALSE(page->has_error()) << page->error().DebugString();
        for (const pb::AuditRecord& entry : page->audit_query().entries()) {
          after = entry.sequence();
          // REQUEST_REFUSED also records key operations a dataset's state refused (e.g.
          // DATASET_EXISTS): only access refusals are cells of the matrix.
          if (entry.uid() != caller.uid || !IsRefusal(entry.result_code())) continue;
          if (entry.kind() == "REQUEST_REFUSED") {
            audited[{entry.kind(), entry.socket(), entry.result_code(), entry.dataset_handle()}] +=
                std::max<uint32_t>(1, entry.record_count());
          } else if (entry.kind() == "ADMIN_REQUEST") {
            ++audited[{entry.kind(), entry.detail(), entry.result_code(), entry.dataset_handle()}];
          }
        }
        if (!page->audit_query().more()) break;
      }
      EXPECT_EQ(audited, expected_refusals[caller.uid])
          << caller.name << ": the audit log's refusals differ from the refused cells";
    }
  }

  std::unique_ptr<Cofferd> daemon_;
  uint64_t own_ = 0;
  uint64_t other_ = 0;
};

constexpr uid_t kApp = 42001;       // every right on kOwn
constexpr uid_t kMetadata = 42002;  // METADATA on kOwn
constexpr uid_t kNoGrant = 42003;   // in the daemon's group, no grant
constexpr uid_t kThirdAdmin = 3;    // MFA on: a third enrolled admin

std::string CallerGrants() {
  return "grants { principals { uid: " + std::to_string(kApp) + " } datasets: \"" + kOwn +
         "\" rights: READ rights: WRITE rights: DELETE rights: METADATA rights: PSEUDONYMIZE "
         "rights: REIDENTIFY }\n"
         "grants { principals { uid: " +
         std::to_string(kMetadata) + " } datasets: \"" + kOwn +
         "\" rights: METADATA }\n"
         // Every cell on a connection of its own, far below any rate limit.
         "rate_limit { default_limit { requests_per_second: 1000000 burst: 1000000 } }\n";
}

// Development mode: no MFA, root the one configured admin, with no grant. The access audit has
// a window of 50 ms, so the data requests the operation table runs on the reactor do so: the
// MFA matrix below has window 0, so its run on the workers; both paths pass the same cells.
TEST_F(AccessMatrixTest, DevelopmentModeEveryCellAsTheTableSays) {
  CofferdOptions options;
  options.name = "access-matrix";
  options.config_body = [](const std::string&, const std::string& group) {
    return CallerGrants() + "admins { uid: 0 }\nmfa { required: false }\n" +
           "access_audit { crash_loss_window_millis: 50 }\n" +
           (group.empty() ? "" : "admin_socket_group: \"" + group + "\"\n");
  };
  daemon_ = Cofferd::Create(std::move(options));
  ASSERT_NE(daemon_, nullptr);
  own_ = Create(kOwn);
  other_ = Create(kOther);
  ASSERT_NE(own_, 0u);
  const std::vector<Caller> callers = {
      {"the application (all rights on own)", kApp, kAllRights, false, false},
      {"a metadata-only caller", kMetadata, kRightMetadata, false, false},
      {"a caller without a grant", kNoGrant, 0, false, false},
      {"the admin (root, no grant)", 0, 0, true, false},
  };
  RunMatrix(callers, Cells(callers, nullptr), /*mfa=*/false, [] { return std::string(); });
}

// MFA and dual control on: root (admin A) enrolled and holding a READ grant on kOwn, nobody
// (admin B) and uid 3 enrolled so that dual control has its second admin and an admin_remove
// leaves two (below three admins the daemon refuses it outright), uid 1 (admin C) configured but
// never enrolled. Root's admin-socket cells are tried without a code and with a fresh one each.
TEST_F(AccessMatrixTest, MfaAndDualControlEveryCellAsTheTableSays) {
  using ::coffer::testing::kAdminA;
  using ::coffer::testing::kAdminB;
  using ::coffer::testing::kAdminC;
  CofferdOptions options;
  options.name = "access-matrix-mfa";
  options.mfa = true;
  options.extra_config = [](const std::string&) {
    return CallerGrants() + "grants { principals { uid: 0 } datasets: \"" + kOwn +
           "\" rights: READ }\nadmins { uid: " + std::to_string(kThirdAdmin) + " }\n";
  };
  daemon_ = Cofferd::Create(std::move(options));
  ASSERT_NE(daemon_, nullptr);
  ::coffer::testing::TotpCodes codes(daemon_.get());
  auto keyctl = [this](uid_t uid, const std::string& args) {
    return ::coffer::testing::KeyctlAs(uid, daemon_->keyctl(), daemon_->admin_socket(), args);
  };
  auto claim = [&](uid_t uid) {
    auto claimed = keyctl(uid, "--json admin enroll");
    EXPECT_EQ(claimed.exit_code, 0) << claimed.err << claimed.out;
    const std::string secret =
        ::coffer::testing::SecretOf(claimed.JsonOrEmpty().value("otpauth_uri", ""));
    EXPECT_FALSE(secret.empty()) << claimed.out;
    codes.SetSecret(uid, secret);
  };
  claim(kAdminA);
  auto invited = keyctl(
      kAdminA, "--totp " + codes.Next(kAdminA) + " admin enroll --uid " + std::to_string(kAdminB));
  ASSERT_EQ(invited.exit_code, 0) << invited.err << invited.out;
  claim(kAdminB);
  // With two enrolled, an invitation is filed for the other admin's approval.
  auto filed = keyctl(kAdminA, "--json --totp " + codes.Next(kAdminA) + " admin enroll --uid " +
                                   std::to_string(kThirdAdmin));
  ASSERT_EQ(filed.exit_code, 5) << filed.err << filed.out;
  const uint64_t id = filed.JsonOrEmpty()["pending"].value("id", uint64_t{0});
  auto approved =
      keyctl(kAdminB, "--totp " + codes.Next(kAdminB) + " request approve " + std::to_string(id));
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  claim(kThirdAdmin);
  ASSERT_FALSE(HasFailure());
  own_ = Create(kOwn, codes.Next(kAdminA));
  other_ = Create(kOther, codes.Next(kAdminA));
  ASSERT_NE(own_, 0u);
  const std::vector<Caller> callers = {
      {"the application (all rights on own)", kApp, kAllRights, false, false},
      {"a metadata-only caller", kMetadata, kRightMetadata, false, false},
      {"a caller without a grant", kNoGrant, 0, false, false},
      {"admin A (root, enrolled, READ on own)", kAdminA, kRightRead, true, true},
      {"admin C (configured, never enrolled)", kAdminC, 0, true, false},
  };
  RunMatrix(callers, Cells(callers, &callers[3]), /*mfa=*/true,
            [&] { return codes.Next(kAdminA); });
}

}  // namespace
}  // namespace coffer
