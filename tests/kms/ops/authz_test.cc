// Access control without the rest of the daemon: grants by uid, gid, supplementary group and
// name; the metadata role; admins; uid 0; reload; the per-uid token bucket on a fake clock.

#include "kms/ops/authz.h"

#include <chrono>
#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"

namespace coffer::daemon {
namespace {

// Whether `status`'s message starts with `prefix` (the field it names).
bool MessageStartsWith(const absl::Status& status, std::string_view prefix) {
  return std::string(status.message()).starts_with(prefix);
}

namespace pb = ::coffer::v1;

constexpr char kConfig[] = R"pb(
  grants {
    principals { uid: 1001 }
    principals { user: "crm" }
    datasets: "crm/contacts"
    rights: READ
    rights: WRITE
  }
  grants {
    principals { group: "support" }
    datasets: "*"
    rights: METADATA
  }
  grants {
    principals { gid: 3000 }
    datasets: "crm/contacts"
    rights: DELETE
  }
  admins { uid: 2000 }
  admins { user: "keyadmin" }
  rate_limit {
    default_limit { requests_per_second: 100 burst: 5 }
    overrides {
      principal { uid: 1001 }
      limit { requests_per_second: 1 burst: 2 }
    }
  }
)pb";

NameResolver FakeNames() {
  return NameResolver{[](const std::string& user) -> std::optional<uid_t> {
                        if (user == "crm") return 1500;
                        if (user == "keyadmin") return 2500;
                        return std::nullopt;
                      },
                      [](const std::string& group) -> std::optional<gid_t> {
                        if (group == "support") return 4000;
                        return std::nullopt;
                      }};
}

std::shared_ptr<const GrantTable> Table(const std::string& text) {
  auto config = ParseConfig(text, "test");
  EXPECT_TRUE(config.ok()) << config.status();
  auto table = GrantTable::FromConfig(*config, FakeNames());
  EXPECT_TRUE(table.ok()) << table.status();
  return *table;
}

PeerIdentity Peer(uid_t uid, gid_t gid = 100, std::vector<gid_t> groups = {},
                  SocketKind socket = SocketKind::kData) {
  PeerIdentity peer;
  peer.uid = uid;
  peer.gid = gid;
  peer.pid = 77;
  peer.groups = std::move(groups);
  peer.socket = socket;
  return peer;
}

ErrorCode CodeOf(const absl::Status& status) { return ErrorCodeOf(status); }

TEST(DaemonAuthzTest, GrantsMatchByUidUserGidAndSupplementaryGroup) {
  Authorizer authz(Table(kConfig));
  EXPECT_TRUE(authz.Check(Peer(1001), pb::Request::kRecordGet, "crm/contacts").ok());
  EXPECT_TRUE(authz.Check(Peer(1001), pb::Request::kRecordPut, "crm/contacts").ok());
  EXPECT_EQ(CodeOf(authz.Check(Peer(1001), pb::Request::kRecordDelete, "crm/contacts")),
            ErrorCode::kNotGranted);
  EXPECT_EQ(CodeOf(authz.Check(Peer(1001), pb::Request::kRecordGet, "crm/other")),
            ErrorCode::kNotGranted);
  EXPECT_TRUE(authz.Check(Peer(1500), pb::Request::kRecordGet, "crm/contacts").ok());  // "crm"
  // gid 3000 as the primary group, then as a supplementary one.
  EXPECT_TRUE(authz.Check(Peer(9, 3000), pb::Request::kRecordDelete, "crm/contacts").ok());
  EXPECT_TRUE(
      authz.Check(Peer(9, 100, {5, 3000}), pb::Request::kRecordRestore, "crm/contacts").ok());
  EXPECT_EQ(CodeOf(authz.Check(Peer(9, 100, {5}), pb::Request::kRecordDelete, "crm/contacts")),
            ErrorCode::kNotGranted);
}

TEST(DaemonAuthzTest, TheMetadataRoleGetsDatasetListAndDescribeOnly) {
  Authorizer authz(Table(kConfig));
  PeerIdentity support = Peer(3333, 100, {4000});
  EXPECT_TRUE(authz.Check(support, pb::Request::kDatasetDescribe, "anything").ok());
  EXPECT_TRUE(authz.Check(support, pb::Request::kDatasetList, "").ok());
  for (Operation op :
       {pb::Request::kRecordGet, pb::Request::kRecordPut, pb::Request::kRecordExists,
        pb::Request::kRecordList, pb::Request::kAttachmentGet, pb::Request::kAttachmentMetadata,
        pb::Request::kAttachmentPutBegin, pb::Request::kRecordDelete}) {
    EXPECT_EQ(CodeOf(authz.Check(support, op, "crm/contacts")), ErrorCode::kNotGranted) << op;
  }
  // A data right includes describe.
  EXPECT_TRUE(authz.Check(Peer(1001), pb::Request::kDatasetDescribe, "crm/contacts").ok());
}

TEST(DaemonAuthzTest, ReidentificationNeedsItsOwnRightAndNoOtherRightImpliesIt) {
  Authorizer authz(Table(R"pb(
    grants {
      principals { uid: 1001 }
      datasets: "*"
      rights: READ
      rights: WRITE
      rights: DELETE
      rights: PSEUDONYMIZE
    }
    grants {
      principals { uid: 1002 }
      datasets: "crm/contacts"
      rights: REIDENTIFY
    }
  )pb"));
  for (Operation op : {pb::Request::kPseudonymize, pb::Request::kPseudonymTranslate}) {
    EXPECT_TRUE(authz.Check(Peer(1001), op, "crm/contacts").ok()) << op;
    EXPECT_EQ(CodeOf(authz.Check(Peer(1002), op, "crm/contacts")), ErrorCode::kNotGranted) << op;
  }
  EXPECT_EQ(CodeOf(authz.Check(Peer(1001), pb::Request::kPseudonymReidentify, "crm/contacts")),
            ErrorCode::kNotGranted);
  EXPECT_TRUE(authz.Check(Peer(1002), pb::Request::kPseudonymReidentify, "crm/contacts").ok());
  EXPECT_EQ(CodeOf(authz.Check(Peer(1002), pb::Request::kPseudonymReidentify, "crm/other")),
            ErrorCode::kNotGranted);
  EXPECT_EQ(CodeOf(authz.Check(Peer(1002), pb::Request::kRecordGet, "crm/contacts")),
            ErrorCode::kNotGranted);
  // The pseudonym operations are data-socket operations.
  EXPECT_EQ(OperationTable::Default().Find(pb::Request::kPseudonymReidentify)->sockets,
            Sockets::kData);
}

// An admin role gives no content: every content operation is WRONG_SOCKET on the admin socket,
// for an admin too; metadata stays readable there.
TEST(DaemonAuthzTest, ContentIsWrongSocketOnTheAdminSocketEvenForAnAdmin) {
  Authorizer authz(Table(kConfig));
  const PeerIdentity admin = Peer(2000, 1, {}, SocketKind::kAdmin);
  int content = 0;
  for (const OperationRow& row : OperationTable::Default().rows()) {
    if (row.sockets != Sockets::kData) continue;
    ++content;
    EXPECT_EQ(CodeOf(authz.Check(admin, row, "crm/contacts")), ErrorCode::kWrongSocket)
        << row.name.view();
  }
  EXPECT_EQ(content, 17);
  EXPECT_TRUE(authz.Check(admin, pb::Request::kDatasetDescribe, "crm/contacts").ok());
  EXPECT_TRUE(authz.Check(admin, pb::Request::kDatasetList, "").ok());
}

TEST(DaemonAuthzTest, AdminOperationsAreWrongSocketOnTheDataSocketAndAdminOnlyOnTheAdminSocket) {
  Authorizer authz(Table(kConfig));
  EXPECT_EQ(CodeOf(authz.Check(Peer(2000), pb::Request::kKeyRotate, "crm/contacts")),
            ErrorCode::kWrongSocket);
  EXPECT_EQ(CodeOf(authz.Check(Peer(2000), pb::Request::kStatus, "")), ErrorCode::kWrongSocket);
  EXPECT_TRUE(
      authz.Check(Peer(2000, 1, {}, SocketKind::kAdmin), pb::Request::kKeyRotate, "x").ok());
  EXPECT_TRUE(authz.Check(Peer(2500, 1, {}, SocketKind::kAdmin), pb::Request::kStatus, "").ok());
  EXPECT_EQ(CodeOf(authz.Check(Peer(1001, 1, {}, SocketKind::kAdmin), pb::Request::kStatus, "")),
            ErrorCode::kNotGranted);
}

TEST(DaemonAuthzTest, UidZeroGetsNothingImplicitly) {
  Authorizer authz(Table(kConfig));
  EXPECT_EQ(CodeOf(authz.Check(Peer(0, 0), pb::Request::kRecordGet, "crm/contacts")),
            ErrorCode::kNotGranted);
  EXPECT_EQ(CodeOf(authz.Check(Peer(0, 0), pb::Request::kDatasetList, "")), ErrorCode::kNotGranted);
  EXPECT_EQ(CodeOf(authz.Check(Peer(0, 0, {}, SocketKind::kAdmin), pb::Request::kStatus, "")),
            ErrorCode::kNotGranted);
  // Listed, root is an admin like anyone else.
  Authorizer listed(Table("admins { uid: 0 }"));
  EXPECT_TRUE(listed.Check(Peer(0, 0, {}, SocketKind::kAdmin), pb::Request::kStatus, "").ok());
}

TEST(DaemonAuthzTest, ReloadSwapsTheGrantTable) {
  Authorizer authz(Table(kConfig));
  EXPECT_EQ(CodeOf(authz.Check(Peer(1001), pb::Request::kRecordDelete, "crm/contacts")),
            ErrorCode::kNotGranted);
  authz.Reload(
      Table("grants { principals { uid: 1001 } datasets: \"crm/contacts\" rights: DELETE }"));
  EXPECT_TRUE(authz.Check(Peer(1001), pb::Request::kRecordDelete, "crm/contacts").ok());
  EXPECT_EQ(CodeOf(authz.Check(Peer(1001), pb::Request::kRecordGet, "crm/contacts")),
            ErrorCode::kNotGranted);
}

// Stored grants (kms/ops/runtime_grants.h) add to the configuration's, take effect for the next
// check, survive a Reload of the configuration's, and follow their dataset's handle: once the
// name belongs to another handle (a destroyed dataset's name reused), the grant gives nothing.
TEST(DaemonAuthzTest, StoredGrantsAddToTheConfigsAndSurviveAReload) {
  Authorizer authz(Table(kConfig));
  EXPECT_EQ(CodeOf(authz.Check(Peer(3001), pb::Request::kRecordGet, "crm/orders")),
            ErrorCode::kNotGranted);
  uint64_t orders_handle = 77;
  DatasetHandleCheck check = [&orders_handle](std::string_view name, uint64_t handle) {
    return name == "crm/orders" && handle == orders_handle;
  };
  StoredGrantEntry stored;
  stored.uids = {3001};
  stored.dataset = "crm/orders";
  stored.handle = 77;
  stored.rights = kRightRead;
  StoredGrantEntry every;
  every.gids = {5000};
  every.dataset = "*";
  every.rights = kRightMetadata;
  authz.SetStoredGrants({stored, every}, check);
  EXPECT_TRUE(authz.Check(Peer(3001), pb::Request::kRecordGet, "crm/orders").ok());
  EXPECT_EQ(CodeOf(authz.Check(Peer(3001), pb::Request::kRecordPut, "crm/orders")),
            ErrorCode::kNotGranted);
  EXPECT_TRUE(authz.Check(Peer(3002, 100, {5000}), pb::Request::kDatasetDescribe, "any").ok());
  // The configuration's grants are still there.
  EXPECT_TRUE(authz.Check(Peer(1001), pb::Request::kRecordGet, "crm/contacts").ok());

  authz.Reload(Table("admins { uid: 2000 }"));  // SIGHUP: the config's grants replaced
  EXPECT_TRUE(authz.Check(Peer(3001), pb::Request::kRecordGet, "crm/orders").ok());
  EXPECT_EQ(CodeOf(authz.Check(Peer(1001), pb::Request::kRecordGet, "crm/contacts")),
            ErrorCode::kNotGranted);
  EXPECT_EQ(authz.table()->config_grants().size(), 0u);

  orders_handle = 78;  // the name now belongs to another dataset
  EXPECT_EQ(CodeOf(authz.Check(Peer(3001), pb::Request::kRecordGet, "crm/orders")),
            ErrorCode::kNotGranted);

  authz.SetStoredGrants({}, check);  // a removal: gone for the next check
  EXPECT_EQ(CodeOf(authz.Check(Peer(3002, 100, {5000}), pb::Request::kDatasetDescribe, "any")),
            ErrorCode::kNotGranted);
}

TEST(DaemonAuthzTest, AnUnknownUserOrGroupIsConfigInvalidNamingTheField) {
  auto config = ParseConfig(
      "grants { principals { uid: 1 } principals { group: \"nope\" } datasets: \"a\" "
      "rights: READ }",
      "test");
  ASSERT_TRUE(config.ok());
  auto table = GrantTable::FromConfig(*config, FakeNames());
  EXPECT_EQ(ErrorCodeOf(table.status()), ErrorCode::kConfigInvalid);
  EXPECT_TRUE(MessageStartsWith(table.status(), "grants[0].principals[1].group")) << table.status();
  auto admins = ParseConfig("admins { user: \"ghost\" }", "test");
  ASSERT_TRUE(admins.ok());
  auto admin_table = GrantTable::FromConfig(*admins, FakeNames());
  EXPECT_TRUE(MessageStartsWith(admin_table.status(), "admins[0].user")) << admin_table.status();
}

TEST(DaemonAuthzTest, TokenBucketSlowsOneUidWhileOthersProceed) {
  auto now = std::chrono::steady_clock::time_point(std::chrono::seconds(1000));
  Authorizer authz(Table(kConfig), [&now] { return now; });
  EXPECT_TRUE(authz.Admit(1001).admitted);
  EXPECT_TRUE(authz.Admit(1001).admitted);
  Admission slowed = authz.Admit(1001);  // burst 2, 1 per second
  EXPECT_FALSE(slowed.admitted);
  EXPECT_EQ(slowed.retry_after_ms, 1000u);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(authz.Admit(1002).admitted) << i;  // default burst 5
  EXPECT_FALSE(authz.Admit(1002).admitted);
  now += std::chrono::milliseconds(500);
  Admission half = authz.Admit(1001);
  EXPECT_FALSE(half.admitted);
  EXPECT_EQ(half.retry_after_ms, 500u);
  now += std::chrono::milliseconds(500);
  EXPECT_TRUE(authz.Admit(1001).admitted);
  EXPECT_FALSE(authz.Admit(1001).admitted);
}

}  // namespace
}  // namespace coffer::daemon
