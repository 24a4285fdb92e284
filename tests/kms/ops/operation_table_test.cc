// The operation table (kms/ops/operation_table.h): complete over coffer.v1.Request.op, one row
// per case, the rules every row must keep, and docs/api.md carrying the table as generated.
// Default deny at run time is shown in services_test.cc
// (AnOperationWithoutARowIsRefusedOnBothSocketsAndAudited).

#include "kms/ops/operation_table.h"

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "coffer/v1/service.pb.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;
using google::protobuf::FieldDescriptor;
using google::protobuf::OneofDescriptor;

const OneofDescriptor& OpOneof() {
  const OneofDescriptor* op = pb::Request::descriptor()->FindOneofByName("op");
  EXPECT_NE(op, nullptr);
  return *op;
}

// Fails for every case of Request.op without a row: adding an operation to service.proto and
// forgetting the table does not compile into an allowed operation, it fails here (and is refused
// at run time).
TEST(OperationTableTest, EveryRequestOpCaseHasItsRow) {
  const OneofDescriptor& op = OpOneof();
  ASSERT_GT(op.field_count(), 0);
  for (int i = 0; i < op.field_count(); ++i) {
    const FieldDescriptor* field = op.field(i);
    const OperationRow* row =
        OperationTable::Default().Find(static_cast<Operation>(field->number()));
    ASSERT_NE(row, nullptr) << "Request." << field->name() << " (" << field->number()
                            << ") has no row in kms/ops/operation_table.cc";
    EXPECT_EQ(row->name.view(), field->name())
        << "row " << field->number() << " is named otherwise";
  }
}

TEST(OperationTableTest, EveryRowIsOneRequestOpCase) {
  const OneofDescriptor& op = OpOneof();
  std::set<int> seen;
  for (const OperationRow& row : OperationTable::Default().rows()) {
    const FieldDescriptor* field = pb::Request::descriptor()->FindFieldByNumber(row.op);
    ASSERT_NE(field, nullptr) << row.name.view() << ": no such Request field";
    EXPECT_EQ(field->containing_oneof(), &op) << row.name.view() << " is not a case of Request.op";
    EXPECT_TRUE(seen.insert(row.op).second) << row.name.view() << " has two rows";
  }
  EXPECT_EQ(static_cast<int>(seen.size()), op.field_count());
}

// The rules that make the table a policy rather than a list.
TEST(OperationTableTest, EveryRowKeepsThePolicyRules) {
  for (const OperationRow& row : OperationTable::Default().rows()) {
    SCOPED_TRACE(std::string(row.name.view()));
    // Served on the data socket exactly when it names a grant.
    EXPECT_EQ(row.sockets != Sockets::kAdmin, row.data_right != kRightNone);
    // Content is never served on the admin socket. Shared with it: metadata (any right) and
    // taking an item back out of the bin (which answers no content).
    static const std::set<Operation> kSharedWithAdmins = {
        pb::Request::kDatasetList, pb::Request::kDatasetDescribe, pb::Request::kRecordRestore,
        pb::Request::kAttachmentRestore};
    EXPECT_EQ(row.sockets == Sockets::kDataAndAdmin, kSharedWithAdmins.count(row.op) == 1);
    if (row.sockets == Sockets::kDataAndAdmin && row.effect == Effect::kReadOnly) {
      EXPECT_EQ(row.data_right, kRightMetadata);
    }
    // Every other data operation is served to grants on the data socket only; so on the admin
    // socket it needs no MFA column (it is WRONG_SOCKET there).
    const kms::audit::v1::Purpose purpose = AccessPurposeOf(row.handler);
    if (purpose != kms::audit::v1::PURPOSE_UNSPECIFIED && row.sockets != Sockets::kDataAndAdmin) {
      EXPECT_EQ(row.sockets, Sockets::kData);
      EXPECT_EQ(row.mfa, Mfa::kNone);
    }
    // An access entry names what was accessed: the purpose follows the operation's domain.
    const std::string_view name = row.name.view();
    if (name.starts_with("record_")) {
      EXPECT_EQ(purpose, kms::audit::v1::PURPOSE_RECORDS);
    } else if (name.starts_with("attachment_")) {
      EXPECT_EQ(purpose, kms::audit::v1::PURPOSE_ATTACHMENTS);
    } else if (name.starts_with("pseudonym")) {
      EXPECT_EQ(purpose, kms::audit::v1::PURPOSE_PSEUDONYM);
    } else {
      EXPECT_EQ(purpose, kms::audit::v1::PURPOSE_UNSPECIFIED);
    }
    // A state change on the admin socket needs an enrolled admin's code when MFA is on.
    if (row.effect == Effect::kChangesState && row.sockets != Sockets::kData) {
      EXPECT_NE(row.mfa, Mfa::kNone);
    }
    // Admins, approvals and the operations cofferd wires in are admin-socket only.
    if (row.handler == Handler::kAdminControl || row.handler == Handler::kWired ||
        row.handler == Handler::kGrants) {
      EXPECT_EQ(row.sockets, Sockets::kAdmin);
    }
    // A dual-control rule belongs to the one operation it reads, and says why.
    static const std::map<DualControl, std::set<Operation>> kRuleOps = {
        {DualControl::kAlways, {pb::Request::kKeyRetire, pb::Request::kAdminRemove}},
        {DualControl::kInviteAfterBootstrap, {pb::Request::kAdminEnroll}},
        {DualControl::kScheduleDestruction, {pb::Request::kDatasetLifecycle}},
        {DualControl::kDestroyOldWrapping, {pb::Request::kKeyRewrap}},
        {DualControl::kClearHold, {pb::Request::kHoldSet}},
        {DualControl::kWeakenPolicy, {pb::Request::kPolicySet}},
        {DualControl::kPurge, {pb::Request::kPurge}},
        {DualControl::kFileExport, {pb::Request::kDatasetExport}},
        {DualControl::kGrantChange, {pb::Request::kGrantAdd, pb::Request::kGrantRemove}},
        {DualControl::kRelaxAuditPolicy, {pb::Request::kAuditPolicySet}},
    };
    if (row.dual_control != DualControl::kNever) {
      EXPECT_TRUE(kRuleOps.at(row.dual_control).count(row.op));
      EXPECT_FALSE(DualControlWhy(row.dual_control).empty());
      EXPECT_EQ(row.sockets, Sockets::kAdmin);
    }
  }
}

// A row names its dataset by the request's own `dataset` field (or `name` for the dataset_*
// operations): DatasetNamedBy returns exactly what the request carries. Operations whose message
// has such a field but name no dataset here are listed with the reason.
TEST(OperationTableTest, EveryRowNamesTheDatasetItsRequestCarries) {
  const std::map<std::string, std::string> kNoDatasetOnPurpose = {
      {"receipt_get", "names a destroyed dataset by its former name or handle"},
  };
  const OneofDescriptor& op = OpOneof();
  for (int i = 0; i < op.field_count(); ++i) {
    const FieldDescriptor* field = op.field(i);
    const auto* message = field->message_type();
    ASSERT_NE(message, nullptr);
    const FieldDescriptor* named = message->FindFieldByName("dataset");
    if (named == nullptr && field->name().rfind("dataset_", 0) == 0) {
      named = message->FindFieldByName("name");
    }
    const OperationRow* row =
        OperationTable::Default().Find(static_cast<Operation>(field->number()));
    ASSERT_NE(row, nullptr);
    SCOPED_TRACE(field->name());
    if (named == nullptr || named->type() != FieldDescriptor::TYPE_STRING ||
        named->containing_oneof() != nullptr || kNoDatasetOnPurpose.count(field->name())) {
      if (!kNoDatasetOnPurpose.count(field->name())) {
        EXPECT_EQ(row->dataset, nullptr);
      }
      continue;
    }
    ASSERT_NE(row->dataset, nullptr) << "the request carries " << named->name();
    pb::Request request;
    auto* inner = request.GetReflection()->MutableMessage(&request, field);
    inner->GetReflection()->SetString(inner, named, "crm/contacts");
    EXPECT_EQ(DatasetNamedBy(request), "crm/contacts");
  }
}

// Design brief: "changing a grant at run time needs two admins" — adding and removing alike (a
// removal can cut a backend off); listing is read-only and needs no code.
TEST(OperationTableTest, GrantChangesAreAlwaysUnderDualControl) {
  const OperationTable& table = OperationTable::Default();
  for (Operation op : {pb::Request::kGrantAdd, pb::Request::kGrantRemove}) {
    const OperationRow* row = table.Find(op);
    ASSERT_NE(row, nullptr);
    SCOPED_TRACE(std::string(row->name.view()));
    EXPECT_EQ(row->sockets, Sockets::kAdmin);
    EXPECT_EQ(row->effect, Effect::kChangesState);
    EXPECT_EQ(row->mfa, Mfa::kSession);
    EXPECT_EQ(row->dual_control, DualControl::kGrantChange);
    EXPECT_EQ(row->handler, Handler::kGrants);
  }
  const OperationRow* list = table.Find(pb::Request::kGrantList);
  ASSERT_NE(list, nullptr);
  EXPECT_EQ(list->sockets, Sockets::kAdmin);
  EXPECT_EQ(list->effect, Effect::kReadOnly);
  EXPECT_EQ(list->mfa, Mfa::kNone);
  EXPECT_EQ(list->dual_control, DualControl::kNever);
}

TEST(OperationTableTest, AnOperationWithoutARowIsNotFound) {
  std::vector<OperationRow> rows;
  for (const OperationRow& row : OperationTable::Default().rows()) {
    if (row.op != pb::Request::kPurge) rows.push_back(row);
  }
  const OperationTable smaller(rows);
  EXPECT_EQ(smaller.Find(pb::Request::kPurge), nullptr);
  EXPECT_NE(smaller.Find(pb::Request::kRecordGet), nullptr);
  EXPECT_EQ(OperationTable::Default().Find(pb::Request::OP_NOT_SET), nullptr);
  EXPECT_EQ(OperationName(pb::Request::OP_NOT_SET).view(), "unknown");
}

// docs/api.md carries the table between its operation-table markers exactly as generated.
TEST(OperationTableTest, DocsApiCarriesTheGeneratedTable) {
  std::ifstream in(COFFER_SOURCE_DIR "/docs/api.md");
  ASSERT_TRUE(in) << "cannot read docs/api.md";
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const std::string begin =
      "<!-- operation-table:begin (generated from kms/ops/operation_table.cc"
      "; tests/kms/ops/operation_table_test.cc checks it) -->\n";
  const std::string end = "<!-- operation-table:end -->";
  const size_t from = doc.find(begin);
  const size_t to = doc.find(end);
  ASSERT_NE(from, std::string::npos) << "docs/api.md lacks the line\n" << begin;
  ASSERT_NE(to, std::string::npos) << "docs/api.md lacks the line\n" << end;
  const std::string expected = OperationTableMarkdown(OperationTable::Default());
  EXPECT_EQ(doc.substr(from + begin.size(), to - from - begin.size()), expected)
      << "replace the table in docs/api.md with:\n"
      << expected;
}

}  // namespace
}  // namespace coffer::daemon
