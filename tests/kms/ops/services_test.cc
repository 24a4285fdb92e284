// cofferd's services driven through Session::Handle with a recording sink — no sockets — over
// the real components: a SoftHSM2 token (one per suite), the key manager and its key DB, the
// data DB, the audit log and its batching writer (window 0, so entries are durable before the
// reply), the recycle bin and the job registry.

#include "kms/ops/services.h"

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/audit/verifier.h"
#include "kms/config/config.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/store_graph.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/kms_test_env.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;

constexpr uid_t kWriter = 1001;     // read, write, delete on crm/contacts, crm/files, crm/tickets
constexpr uid_t kSupport = 1002;    // metadata on every dataset
constexpr uid_t kStranger = 1003;   // no grant
constexpr uid_t kThrottled = 1005;  // read on crm/contacts, burst 3, 1 request per second
constexpr uid_t kAdmin = 2000;

constexpr char kGrants[] = R"pb(
  grants {
    principals { uid: 1001 }
    datasets: "crm/contacts"
    datasets: "crm/files"
    datasets: "crm/tickets"
    rights: READ
    rights: WRITE
    rights: DELETE
  }
  grants {
    principals { uid: 1002 }
    datasets: "*"
    rights: METADATA
  }
  grants {
    principals { uid: 1005 }
    datasets: "crm/contacts"
    rights: READ
  }
  admins { uid: 2000 }
  rate_limit {
    default_limit { requests_per_second: 1000 burst: 1000 }
    overrides {
      principal { uid: 1005 }
      limit { requests_per_second: 1 burst: 3 }
    }
  }
)pb";

class RecordingSink final : public ResponseSink {
 public:
  // Keeps what a client would parse from the wire (proto3 strings must be valid UTF-8 there).
  absl::Status Send(const pb::Response& response) override {
    std::string wire;
    EXPECT_TRUE(response.SerializeToString(&wire));
    pb::Response parsed;
    EXPECT_TRUE(parsed.ParseFromString(wire)) << "a response does not survive the wire";
    responses.push_back(std::move(parsed));
    return absl::OkStatus();
  }
  std::vector<pb::Response> responses;
};

PeerIdentity Peer(uid_t uid, SocketKind socket = SocketKind::kData) {
  PeerIdentity peer;
  peer.uid = uid;
  peer.gid = 100;
  peer.pid = 4321;
  peer.socket = socket;
  return peer;
}

int Code(const pb::Response& response) { return response.error().code(); }
constexpr int C(ErrorCode code) { return static_cast<int>(code); }

class DaemonServicesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::Status opened = suite_.Open("daemon-services");
    ASSERT_TRUE(opened.ok()) << opened;
  }
  static void TearDownTestSuite() { suite_.Reset(); }

  void SetUp() override {
    audit::AuditLogOptions audit_options = suite_.AuditOptions(dir_.Sub("audit"), &clock_);
    auto log = audit::AuditLog::Open(std::move(audit_options));
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
    auto writer = audit::BatchingAuditWriter::Start(log_.get(), {});
    ASSERT_TRUE(writer.ok()) << writer.status();
    writer_ = *std::move(writer);

    auto db = storage::DataDb::Open(dir_.Sub("data"), storage::DataDbOptions{});
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);

    kms::StoreGraphOptions graph;
    graph.data_db = db_.get();
    graph.keys.key_db_directory = dir_.Sub("keys");
    graph.keys.modules = {{"softhsm", &suite_.client->wrapping_keys()}};
    graph.keys.default_module = "softhsm";
    graph.keys.row_authenticator = &suite_.client->row_authenticator();
    graph.keys.signer = &suite_.client->signer();
    graph.keys.audit_log = log_.get();
    graph.keys.clock = &clock_;
    auto stores = kms::StoreGraph::Open(std::move(graph));
    ASSERT_TRUE(stores.ok()) << stores.status();
    stores_ = *std::move(stores);
    keys_ = &stores_->key_manager();
    records_ = &stores_->records();
    attachments_ = &stores_->attachments();
    bin_ = &stores_->bin();
    jobs_ = std::make_unique<JobRegistry>(
        JobRegistryDeps{db_.get(),
                        keys_,
                        attachments_,
                        {},
                        [this](uint64_t handle, const audit::AuditActor& actor) {
                          return keys_->RetireCompromised(handle, actor);
                        }},
        clock_);

    authorizer_ = std::make_unique<Authorizer>(Grants(kGrants), [this] { return now_; });

    auto services = Services::Create(Deps());
    ASSERT_TRUE(services.ok()) << services.status();
    services_ = *std::move(services);

    admin_ = services_->Open(Peer(kAdmin, SocketKind::kAdmin));
    writer_session_ = services_->Open(Peer(kWriter));
  }

  void TearDown() override {
    admin_.reset();
    writer_session_.reset();
    services_.reset();
    if (jobs_) jobs_->Stop();
    jobs_.reset();
    stores_.reset();
    db_.reset();
    if (writer_) writer_->Stop().IgnoreError();
    writer_.reset();
    if (log_) log_->Close().IgnoreError();
  }

  ServicesDeps Deps() {
    ServicesDeps deps;
    deps.keys = keys_;
    deps.data_db = db_.get();
    deps.records = records_;
    deps.attachments = attachments_;
    deps.bin = bin_;
    deps.audit_log = log_.get();
    deps.access_audit = writer_.get();
    deps.clock = &clock_;
    deps.jobs = jobs_.get();
    deps.authorizer = authorizer_.get();
    deps.audit_directory = dir_.Sub("audit");
    auto pem = suite_.signer->PublicKeyPem();
    EXPECT_TRUE(pem.ok()) << pem.status();
    deps.audit_public_key_pem = pem.value_or("");
    deps.version = "test";
    deps.durability = "wal";
    deps.data_socket = "/run/coffer/data.sock";
    deps.admin_socket = "/run/coffer/admin.sock";
    return deps;
  }

  static std::shared_ptr<const GrantTable> Grants(const std::string& text) {
    auto config = ParseConfig(text, "test");
    EXPECT_TRUE(config.ok()) << config.status();
    auto table = GrantTable::FromConfig(*config);
    EXPECT_TRUE(table.ok()) << table.status();
    return *table;
  }

  // Every response Handle sent for `request` (Handle itself must return OK).
  std::vector<pb::Response> CallAll(Session* session, pb::Request request) {
    request.set_request_id(++next_request_id_);
    RecordingSink sink;
    absl::Status handled = session->Handle(request, &sink);
    EXPECT_TRUE(handled.ok()) << handled;
    for (const auto& response : sink.responses) {
      EXPECT_EQ(response.request_id(), request.request_id());
    }
    return sink.responses;
  }
  // The single response to `request`.
  pb::Response Call(Session* session, pb::Request request) {
    std::vector<pb::Response> all = CallAll(session, std::move(request));
    EXPECT_EQ(all.size(), 1u);
    return all.empty() ? pb::Response() : all.front();
  }

  static pb::Request Put(std::string_view dataset, std::string_view id, std::string_view value) {
    pb::Request r;
    r.mutable_record_put()->set_dataset(std::string(dataset));
    r.mutable_record_put()->set_id(std::string(id));
    r.mutable_record_put()->set_value(std::string(value));
    return r;
  }
  static pb::Request Get(std::string_view dataset, std::string_view id) {
    pb::Request r;
    r.mutable_record_get()->set_dataset(std::string(dataset));
    r.mutable_record_get()->set_id(std::string(id));
    return r;
  }
  static pb::Request Create(std::string_view name) {
    pb::Request r;
    r.mutable_dataset_create()->set_name(std::string(name));
    return r;
  }
  static pb::Request Describe(std::string_view name) {
    pb::Request r;
    r.mutable_dataset_describe()->set_name(std::string(name));
    return r;
  }
  static pb::Request Chunk(std::string data) {
    pb::Request r;
    r.mutable_attachment_chunk()->set_data(std::move(data));
    return r;
  }
  static pb::Request Commit() {
    pb::Request r;
    r.mutable_attachment_put_commit();
    return r;
  }

  uint64_t CreateDataset(std::string_view name) {
    pb::Response created = Call(admin_.get(), Create(name));
    EXPECT_FALSE(created.has_error()) << created.error().message();
    return created.dataset_create().handle();
  }

  std::vector<audit::v1::AuditEntry> AuditEntries() {
    if (services_ != nullptr) {
      EXPECT_TRUE(services_->FlushRefusalAudit().ok());
    }
    auto entries = audit::ReadAuditEntries(dir_.Sub("audit"));
    EXPECT_TRUE(entries.ok()) << entries.status();
    return entries.value_or(std::vector<audit::v1::AuditEntry>{});
  }
  int CountEntries(audit::v1::EventKind kind, uint32_t uid, ErrorCode result) {
    int n = 0;
    for (const auto& entry : AuditEntries()) {
      if (entry.kind() == kind && entry.actor().uid() == uid &&
          entry.result_code() == static_cast<int>(result)) {
        // A REQUEST_REFUSED entry stands for record_count coalesced refusals.
        n += kind == audit::v1::REQUEST_REFUSED ? static_cast<int>(entry.record_count()) : 1;
      }
    }
    return n;
  }

  static inline kms::testing::SuiteToken suite_;

  audit::testing::TempDir dir_;
  audit::testing::FakeClock clock_;
  std::chrono::steady_clock::time_point now_{std::chrono::seconds(5000)};
  std::unique_ptr<audit::AuditLog> log_;
  std::unique_ptr<audit::BatchingAuditWriter> writer_;
  std::unique_ptr<storage::DataDb> db_;
  std::unique_ptr<kms::StoreGraph> stores_;  // as cofferd wires it
  kms::KeyManager* keys_ = nullptr;
  storage::RecordStore* records_ = nullptr;
  storage::AttachmentStore* attachments_ = nullptr;
  storage::RecycleBin* bin_ = nullptr;
  std::unique_ptr<JobRegistry> jobs_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<Services> services_;
  std::unique_ptr<Session> admin_;
  std::unique_ptr<Session> writer_session_;
  uint64_t next_request_id_ = 0;
};

TEST_F(DaemonServicesTest, RecordRoundTripAndEveryRecordOperation) {
  CreateDataset("crm/contacts");
  Session* s = writer_session_.get();
  pb::Response put = Call(s, Put("crm/contacts", "c-1", "Ada Lovelace"));
  ASSERT_FALSE(put.has_error()) << put.error().message();
  EXPECT_TRUE(put.has_record_put());
  ASSERT_FALSE(Call(s, Put("crm/contacts", "c-2", "Grace Hopper")).has_error());

  pb::Response got = Call(s, Get("crm/contacts", "c-1"));
  ASSERT_FALSE(got.has_error()) << got.error().message();
  EXPECT_EQ(got.record_get().value(), "Ada Lovelace");

  pb::Request exists;
  exists.mutable_record_exists()->set_dataset("crm/contacts");
  exists.mutable_record_exists()->set_id("c-2");
  EXPECT_TRUE(Call(s, exists).record_exists().exists());
  exists.mutable_record_exists()->set_id("c-9");
  EXPECT_FALSE(Call(s, exists).record_exists().exists());

  pb::Request list;
  list.mutable_record_list()->set_dataset("crm/contacts");
  list.mutable_record_list()->set_max_ids(1);
  pb::Response page1 = Call(s, list);
  ASSERT_FALSE(page1.has_error()) << page1.error().message();
  ASSERT_EQ(page1.record_list().ids_size(), 1);
  ASSERT_FALSE(page1.record_list().next_page_token().empty());
  list.mutable_record_list()->set_page_token(page1.record_list().next_page_token());
  list.mutable_record_list()->set_max_ids(10);
  pb::Response page2 = Call(s, list);
  ASSERT_EQ(page2.record_list().ids_size(), 1);
  EXPECT_NE(page1.record_list().ids(0), page2.record_list().ids(0));
  list.mutable_record_list()->set_page_token("not base64!");
  EXPECT_EQ(Code(Call(s, list)), C(ErrorCode::kInvalidArgument));
  list.mutable_record_list()->clear_page_token();
  list.mutable_record_list()->set_max_ids(10001);
  EXPECT_EQ(Code(Call(s, list)), C(ErrorCode::kInvalidArgument));

  pb::Request del;
  del.mutable_record_delete()->set_dataset("crm/contacts");
  del.mutable_record_delete()->set_id("c-1");
  EXPECT_FALSE(Call(s, del).has_error());
  pb::Response gone = Call(s, Get("crm/contacts", "c-1"));
  EXPECT_EQ(Code(gone), C(ErrorCode::kRecordNotFound));
  EXPECT_EQ(gone.error().code_name(), "RECORD_NOT_FOUND");
  EXPECT_FALSE(gone.error().message().empty());
  EXPECT_EQ(gone.error().message().find("c-1"), std::string::npos);

  pb::Request restore;
  restore.mutable_record_restore()->set_dataset("crm/contacts");
  restore.mutable_record_restore()->set_id("c-1");
  EXPECT_FALSE(Call(s, restore).has_error());
  EXPECT_EQ(Code(Call(s, restore)), C(ErrorCode::kNotInRecycleBin));
  EXPECT_EQ(Call(s, Get("crm/contacts", "c-1")).record_get().value(), "Ada Lovelace");

  // A granted name that is not a dataset.
  EXPECT_EQ(Code(Call(s, Get("crm/files", "x"))), C(ErrorCode::kDatasetNotFound));
}

TEST_F(DaemonServicesTest, AttachmentUploadInChunksAndRangedDownloadInSeveralFrames) {
  CreateDataset("crm/files");
  Session* s = writer_session_.get();
  std::string content;
  for (size_t i = 0; i < (5u << 19); ++i)
    content.push_back(static_cast<char>((i * 7 + i / 9) & 0xff));

  pb::Request begin;
  begin.mutable_attachment_put_begin()->set_dataset("crm/files");
  begin.mutable_attachment_put_begin()->set_name("contract.pdf");
  begin.mutable_attachment_put_begin()->set_content_type("application/pdf");
  pb::Response began = Call(s, begin);
  ASSERT_FALSE(began.has_error()) << began.error().message();
  for (size_t at = 0; at < content.size(); at += 512 << 10) {
    EXPECT_TRUE(CallAll(s, Chunk(content.substr(at, 512 << 10))).empty());  // no response
  }
  pb::Response committed = Call(s, Commit());
  ASSERT_FALSE(committed.has_error()) << committed.error().message();
  EXPECT_EQ(committed.attachment_put_commit().size(), content.size());
  EXPECT_EQ(committed.attachment_put_commit().content_type(), "application/pdf");

  pb::Request get;
  get.mutable_attachment_get()->set_dataset("crm/files");
  get.mutable_attachment_get()->set_name("contract.pdf");
  std::vector<pb::Response> frames = CallAll(s, get);
  ASSERT_EQ(frames.size(), 3u);  // 2.5 MiB in frames of at most 1 MiB
  std::string downloaded;
  for (size_t i = 0; i < frames.size(); ++i) {
    ASSERT_FALSE(frames[i].has_error());
    EXPECT_EQ(frames[i].attachment_get().has_info(), i == 0);
    EXPECT_EQ(frames[i].attachment_get().last(), i + 1 == frames.size());
    EXPECT_LE(frames[i].attachment_get().data().size(), size_t{1} << 20);
    downloaded += frames[i].attachment_get().data();
  }
  EXPECT_EQ(frames[0].attachment_get().info().size(), content.size());
  EXPECT_EQ(downloaded, content);

  get.mutable_attachment_get()->set_offset(1000);
  get.mutable_attachment_get()->set_length((3u << 19) + 5);
  frames = CallAll(s, get);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].attachment_get().data() + frames[1].attachment_get().data(),
            content.substr(1000, (3u << 19) + 5));
  EXPECT_TRUE(frames[1].attachment_get().last());

  get.mutable_attachment_get()->set_offset(content.size() - 10);
  get.mutable_attachment_get()->set_length(11);
  EXPECT_EQ(Code(Call(s, get)), C(ErrorCode::kRangeBeyondEnd));

  pb::Request meta;
  meta.mutable_attachment_metadata()->set_dataset("crm/files");
  meta.mutable_attachment_metadata()->set_name("contract.pdf");
  EXPECT_EQ(Call(s, meta).attachment_metadata().size(), content.size());

  pb::Request del;
  del.mutable_attachment_delete()->set_dataset("crm/files");
  del.mutable_attachment_delete()->set_name("contract.pdf");
  EXPECT_FALSE(Call(s, del).has_error());
  EXPECT_EQ(Code(Call(s, meta)), C(ErrorCode::kAttachmentNotFound));
  pb::Request restore;
  restore.mutable_attachment_restore()->set_dataset("crm/files");
  restore.mutable_attachment_restore()->set_name("contract.pdf");
  EXPECT_FALSE(Call(s, restore).has_error());
  EXPECT_EQ(Call(s, meta).attachment_metadata().size(), content.size());
}

TEST_F(DaemonServicesTest, UploadFramesOutOfOrderAreUnexpectedFrame) {
  CreateDataset("crm/files");
  Session* s = writer_session_.get();
  EXPECT_EQ(Code(Call(s, Chunk("stray"))), C(ErrorCode::kUnexpectedFrame));
  EXPECT_EQ(Code(Call(s, Commit())), C(ErrorCode::kUnexpectedFrame));

  pb::Request begin;
  begin.mutable_attachment_put_begin()->set_dataset("crm/files");
  begin.mutable_attachment_put_begin()->set_name("a");
  ASSERT_FALSE(Call(s, begin).has_error());
  // Another request while the upload is open.
  EXPECT_EQ(Code(Call(s, Get("crm/files", "x"))), C(ErrorCode::kUnexpectedFrame));
  EXPECT_TRUE(CallAll(s, Chunk("hello")).empty());
  pb::Request abort;
  abort.mutable_attachment_put_abort();
  EXPECT_TRUE(Call(s, abort).has_attachment_put_abort());
  pb::Request meta;
  meta.mutable_attachment_metadata()->set_dataset("crm/files");
  meta.mutable_attachment_metadata()->set_name("a");
  EXPECT_EQ(Code(Call(s, meta)), C(ErrorCode::kAttachmentNotFound));
  EXPECT_GE(CountEntries(audit::v1::REQUEST_REFUSED, kWriter, ErrorCode::kUnexpectedFrame), 3);
}

TEST_F(DaemonServicesTest, ClosingMidUploadLeavesNothingVisible) {
  CreateDataset("crm/files");
  std::unique_ptr<Session> s = services_->Open(Peer(kWriter));
  pb::Request begin;
  begin.mutable_attachment_put_begin()->set_dataset("crm/files");
  begin.mutable_attachment_put_begin()->set_name("draft");
  ASSERT_FALSE(Call(s.get(), begin).has_error());
  EXPECT_TRUE(CallAll(s.get(), Chunk(std::string(200000, 'd'))).empty());
  s->Closed();
  s.reset();

  pb::Request meta;
  meta.mutable_attachment_metadata()->set_dataset("crm/files");
  meta.mutable_attachment_metadata()->set_name("draft");
  EXPECT_EQ(Code(Call(writer_session_.get(), meta)), C(ErrorCode::kAttachmentNotFound));
  auto orphans = attachments_->CleanupOrphanedUploads();
  ASSERT_TRUE(orphans.ok());
  EXPECT_EQ(*orphans, 0u);  // the abort removed its segments already
}

// A refusal the audit log cannot take yet (its write failed; it refuses until its reopen is due)
// stays pending and is written once the log has reopened: none is lost while the disk is full.
TEST_F(DaemonServicesTest, RefusalsMadeWhileTheLogFailsAreWrittenOnceItReopens) {
  audit::testing::FailingFileSystem fs;
  audit::AuditLogOptions options = suite_.AuditOptions(dir_.Sub("failing-audit"), &clock_);
  options.file_system = &fs;
  auto log = audit::AuditLog::Open(std::move(options));
  ASSERT_TRUE(log.ok()) << log.status();
  RefusalAudit refusals(log->get(), RefusalAuditOptions{std::chrono::hours(1), 16});
  audit::AuditActor caller;
  caller.uid = 9002;
  caller.socket = audit::v1::SOCKET_DATA;
  fs.fail_append = true;
  refusals.Record(caller, ErrorCode::kNotGranted, 0, "daemon: no grant");
  refusals.Record(caller, ErrorCode::kNotGranted, 0, "daemon: no grant");
  EXPECT_EQ(ErrorCodeOf(refusals.Flush()), ErrorCode::kAuditNotDurable);
  refusals.Record(caller, ErrorCode::kNotGranted, 0, "daemon: no grant");
  fs.fail_append = false;
  EXPECT_FALSE(refusals.Flush().ok());  // the log refuses until its reopen is due
  clock_.Advance(std::chrono::seconds(2));
  ASSERT_TRUE(refusals.Flush().ok());
  refusals.Stop();
  ASSERT_TRUE((*log)->Close().ok());
  auto entries = audit::ReadAuditEntries(dir_.Sub("failing-audit"));
  ASSERT_TRUE(entries.ok()) << entries.status();
  uint32_t refused = 0;
  for (const auto& entry : *entries) {
    if (entry.kind() == audit::v1::REQUEST_REFUSED && entry.actor().uid() == 9002) {
      refused += entry.record_count();
    }
  }
  EXPECT_EQ(refused, 3u);
}

TEST_F(DaemonServicesTest, RefusalsAreCoalescedIntoCountedEntriesAndNoneIsLost) {
  // An interval longer than the test: nothing is written until Flush, so what is coalesced is
  // deterministic.
  RefusalAudit refusals(log_.get(), RefusalAuditOptions{std::chrono::hours(1), 2});
  audit::AuditActor flooder;
  flooder.uid = 9001;
  flooder.socket = audit::v1::SOCKET_DATA;
  for (int i = 0; i < 500; ++i) {
    flooder.pid = 100 + static_cast<uint32_t>(i);
    refusals.Record(flooder, ErrorCode::kSlowDown, 0, "daemon: rate limit");
  }
  refusals.Record(flooder, ErrorCode::kNotGranted, 7, "daemon: no grant");
  refusals.Record(flooder, ErrorCode::kNotGranted, 8, "daemon: no grant");  // past the key bound
  ASSERT_TRUE(refusals.Flush().ok());
  std::map<std::pair<int, uint64_t>, uint32_t> counts;
  int entries = 0;
  uint32_t last_pid = 0;
  for (const auto& entry : AuditEntries()) {
    if (entry.kind() != audit::v1::REQUEST_REFUSED || entry.actor().uid() != 9001) continue;
    ++entries;
    counts[{entry.result_code(), entry.dataset_handle()}] += entry.record_count();
    if (entry.result_code() == C(ErrorCode::kSlowDown)) last_pid = entry.actor().pid();
  }
  EXPECT_EQ(entries, 3);  // one per (code, dataset); the key past the bound folded to handle 0
  EXPECT_EQ((counts[{C(ErrorCode::kSlowDown), 0}]), 500u);
  EXPECT_EQ((counts[{C(ErrorCode::kNotGranted), 7}]), 1u);
  EXPECT_EQ((counts[{C(ErrorCode::kNotGranted), 0}]), 1u);
  EXPECT_EQ(last_pid, 599u);  // the latest pid seen
  // After Stop, a refusal is written by the caller at once.
  refusals.Stop();
  refusals.Record(flooder, ErrorCode::kWrongSocket, 0, "daemon: wrong socket");
  int wrong_socket = 0;
  for (const auto& entry : AuditEntries()) {
    if (entry.kind() == audit::v1::REQUEST_REFUSED && entry.actor().uid() == 9001 &&
        entry.result_code() == C(ErrorCode::kWrongSocket)) {
      wrong_socket += static_cast<int>(entry.record_count());
    }
  }
  EXPECT_EQ(wrong_socket, 1);
}

TEST_F(DaemonServicesTest, APeerWithoutAGrantIsRefusedAndAudited) {
  uint64_t handle = CreateDataset("crm/contacts");
  std::unique_ptr<Session> s = services_->Open(Peer(kStranger));
  pb::Response refused = Call(s.get(), Get("crm/contacts", "c-1"));
  EXPECT_EQ(Code(refused), C(ErrorCode::kNotGranted));
  EXPECT_EQ(refused.error().code_name(), "NOT_GRANTED");
  EXPECT_EQ(refused.error().message().find("crm/contacts"), std::string::npos);
  bool found = false;
  for (const auto& entry : AuditEntries()) {
    if (entry.kind() == audit::v1::REQUEST_REFUSED && entry.actor().uid() == kStranger) {
      found = true;
      EXPECT_EQ(entry.result_code(), C(ErrorCode::kNotGranted));
      EXPECT_EQ(entry.actor().pid(), 4321u);
      EXPECT_EQ(entry.actor().socket(), audit::v1::SOCKET_DATA);
      EXPECT_EQ(entry.dataset_handle(), handle);
    }
  }
  EXPECT_TRUE(found);
  // Without any grant, not even the dataset list.
  pb::Request list;
  list.mutable_dataset_list();
  EXPECT_EQ(Code(Call(s.get(), list)), C(ErrorCode::kNotGranted));
}

// Default deny: a table without record_get's row refuses record_get on both sockets, for a
// writer that holds the grant and for an admin, audited as a refusal; the rows it has still run.
TEST_F(DaemonServicesTest, AnOperationWithoutARowIsRefusedOnBothSocketsAndAudited) {
  CreateDataset("crm/contacts");
  std::vector<OperationRow> rows;
  for (const OperationRow& row : OperationTable::Default().rows()) {
    if (row.op != pb::Request::kRecordGet) rows.push_back(row);
  }
  const OperationTable without_get(rows);
  ServicesDeps deps = Deps();
  deps.operations = &without_get;
  auto services = Services::Create(std::move(deps));
  ASSERT_TRUE(services.ok()) << services.status();
  std::unique_ptr<Session> writer = (*services)->Open(Peer(kWriter));
  ASSERT_FALSE(Call(writer.get(), Put("crm/contacts", "c-1", "v")).has_error());
  pb::Response refused = Call(writer.get(), Get("crm/contacts", "c-1"));
  EXPECT_EQ(Code(refused), C(ErrorCode::kNotGranted));
  EXPECT_NE(refused.error().message().find("default deny"), std::string::npos)
      << refused.error().message();
  std::unique_ptr<Session> admin = (*services)->Open(Peer(kAdmin, SocketKind::kAdmin));
  EXPECT_EQ(Code(Call(admin.get(), Get("crm/contacts", "c-1"))), C(ErrorCode::kNotGranted));
  ASSERT_TRUE((*services)->FlushRefusalAudit().ok());
  int refusals = 0;
  for (const auto& entry : AuditEntries()) {
    if (entry.kind() == audit::v1::REQUEST_REFUSED &&
        entry.result_code() == C(ErrorCode::kNotGranted)) {
      refusals += static_cast<int>(entry.record_count());
    }
  }
  EXPECT_EQ(refusals, 2);
}

TEST_F(DaemonServicesTest, TheMetadataRoleIsRefusedContentButDescribesWithCounts) {
  CreateDataset("crm/contacts");
  for (int i = 0; i < 4; ++i) {
    ASSERT_FALSE(Call(writer_session_.get(), Put("crm/contacts", "c-" + std::to_string(i), "v"))
                     .has_error());
  }
  pb::Request del;
  del.mutable_record_delete()->set_dataset("crm/contacts");
  del.mutable_record_delete()->set_id("c-0");
  ASSERT_FALSE(Call(writer_session_.get(), del).has_error());

  std::unique_ptr<Session> s = services_->Open(Peer(kSupport));
  std::vector<pb::Request> content_ops;
  content_ops.push_back(Get("crm/contacts", "c-1"));
  content_ops.push_back(Put("crm/contacts", "c-1", "x"));
  content_ops.emplace_back().mutable_record_exists()->set_dataset("crm/contacts");
  content_ops.emplace_back().mutable_record_list()->set_dataset("crm/contacts");
  content_ops.emplace_back().mutable_record_delete()->set_dataset("crm/contacts");
  content_ops.emplace_back().mutable_record_restore()->set_dataset("crm/contacts");
  content_ops.emplace_back().mutable_attachment_put_begin()->set_dataset("crm/contacts");
  content_ops.emplace_back().mutable_attachment_get()->set_dataset("crm/contacts");
  content_ops.emplace_back().mutable_attachment_metadata()->set_dataset("crm/contacts");
  content_ops.emplace_back().mutable_attachment_delete()->set_dataset("crm/contacts");
  content_ops.emplace_back().mutable_attachment_restore()->set_dataset("crm/contacts");
  for (const pb::Request& op : content_ops) {
    EXPECT_EQ(Code(Call(s.get(), op)), C(ErrorCode::kNotGranted)) << op.DebugString();
  }
  EXPECT_EQ(CountEntries(audit::v1::REQUEST_REFUSED, kSupport, ErrorCode::kNotGranted),
            static_cast<int>(content_ops.size()));

  pb::Response described = Call(s.get(), Describe("crm/contacts"));
  ASSERT_FALSE(described.has_error()) << described.error().message();
  EXPECT_EQ(described.dataset_describe().records(), 3u);
  EXPECT_EQ(described.dataset_describe().recycle_bin_items(), 1u);
  EXPECT_EQ(described.dataset_describe().attachments(), 0u);
  EXPECT_EQ(described.dataset_describe().state(), pb::DATASET_ACTIVE);
  EXPECT_GE(described.dataset_describe().versions_size(), 4);

  pb::Request list;
  list.mutable_dataset_list();
  pb::Response listed = Call(s.get(), list);
  ASSERT_EQ(listed.dataset_list().datasets_size(), 1);
  EXPECT_EQ(listed.dataset_list().datasets(0).name(), "crm/contacts");
}

TEST_F(DaemonServicesTest, AdminOperationsOnTheDataSocketAreWrongSocketAndAudited) {
  CreateDataset("crm/contacts");
  std::unique_ptr<Session> s = services_->Open(Peer(kAdmin));  // an admin, but on the data socket
  pb::Request rotate;
  rotate.mutable_key_rotate()->set_dataset("crm/contacts");
  EXPECT_EQ(Code(Call(s.get(), rotate)), C(ErrorCode::kWrongSocket));
  pb::Request status;
  status.mutable_status();
  EXPECT_EQ(Code(Call(s.get(), status)), C(ErrorCode::kWrongSocket));
  EXPECT_EQ(CountEntries(audit::v1::REQUEST_REFUSED, kAdmin, ErrorCode::kWrongSocket), 2);
}

TEST_F(DaemonServicesTest, UidZeroWithoutAGrantIsRefusedOnBothSockets) {
  CreateDataset("crm/contacts");
  std::unique_ptr<Session> data = services_->Open(Peer(0));
  EXPECT_EQ(Code(Call(data.get(), Get("crm/contacts", "c"))), C(ErrorCode::kNotGranted));
  std::unique_ptr<Session> admin = services_->Open(Peer(0, SocketKind::kAdmin));
  pb::Request status;
  status.mutable_status();
  EXPECT_EQ(Code(Call(admin.get(), status)), C(ErrorCode::kNotGranted));
  EXPECT_EQ(Code(Call(admin.get(), Create("root/own"))), C(ErrorCode::kNotGranted));
  EXPECT_EQ(CountEntries(audit::v1::REQUEST_REFUSED, 0, ErrorCode::kNotGranted), 3);
}

TEST_F(DaemonServicesTest, ARateLimitedUidSlowsDownWhileAnotherProceeds) {
  CreateDataset("crm/contacts");
  ASSERT_FALSE(Call(writer_session_.get(), Put("crm/contacts", "c-1", "v")).has_error());
  std::unique_ptr<Session> s = services_->Open(Peer(kThrottled));
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(Call(s.get(), Get("crm/contacts", "c-1")).has_error()) << i;
  }
  pb::Response slowed = Call(s.get(), Get("crm/contacts", "c-1"));
  EXPECT_EQ(Code(slowed), C(ErrorCode::kSlowDown));
  EXPECT_EQ(slowed.error().retry_after_ms(), 1000u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_FALSE(Call(writer_session_.get(), Get("crm/contacts", "c-1")).has_error()) << i;
  }
  now_ += std::chrono::seconds(1);
  EXPECT_FALSE(Call(s.get(), Get("crm/contacts", "c-1")).has_error());
  EXPECT_EQ(services_->metrics().requests_slowed, 1u);
  EXPECT_EQ(CountEntries(audit::v1::REQUEST_REFUSED, kThrottled, ErrorCode::kSlowDown), 1);
}

TEST_F(DaemonServicesTest, EveryDataOperationIsInTheAccessAudit) {
  uint64_t handle = CreateDataset("crm/contacts");
  Session* s = writer_session_.get();
  ASSERT_FALSE(Call(s, Put("crm/contacts", "c-1", "v")).has_error());
  ASSERT_FALSE(Call(s, Get("crm/contacts", "c-1")).has_error());
  EXPECT_EQ(Code(Call(s, Get("crm/contacts", "missing"))), C(ErrorCode::kRecordNotFound));
  pb::Request del;
  del.mutable_record_delete()->set_dataset("crm/contacts");
  del.mutable_record_delete()->set_id("c-1");
  ASSERT_FALSE(Call(s, del).has_error());

  // Window 0: the entries were durable before the replies.
  int writes = 0, reads_ok = 0, reads_missing = 0, deletes = 0;
  for (const auto& entry : AuditEntries()) {
    if (entry.actor().uid() != kWriter) continue;
    EXPECT_EQ(entry.dataset_handle(), handle);
    EXPECT_EQ(entry.actor().pid(), 4321u);
    EXPECT_EQ(entry.actor().socket(), audit::v1::SOCKET_DATA);
    if (entry.kind() == audit::v1::ACCESS_WRITE) ++writes;
    if (entry.kind() == audit::v1::ACCESS_READ && entry.result_code() == 0) ++reads_ok;
    if (entry.kind() == audit::v1::ACCESS_READ &&
        entry.result_code() == C(ErrorCode::kRecordNotFound)) {
      ++reads_missing;
    }
    if (entry.kind() == audit::v1::ACCESS_DELETE) ++deletes;
  }
  EXPECT_EQ(writes, 1);
  EXPECT_EQ(reads_ok, 1);
  EXPECT_EQ(reads_missing, 1);
  EXPECT_EQ(deletes, 1);
}

TEST_F(DaemonServicesTest, MalformedRequestsAreRefusedAndAudited) {
  CreateDataset("crm/contacts");
  pb::Request nothing;
  pb::Response refused = Call(admin_.get(), nothing);
  EXPECT_EQ(Code(refused), C(ErrorCode::kMalformedRequest));
  EXPECT_EQ(CountEntries(audit::v1::REQUEST_REFUSED, kAdmin, ErrorCode::kMalformedRequest), 1);

  // No dataset named: content is WRONG_SOCKET on the admin socket before anything reads the
  // request; a data peer is refused for want of a grant on "".
  pb::Response unnamed = Call(admin_.get(), Put("", "c-1", "v"));
  EXPECT_EQ(Code(unnamed), C(ErrorCode::kWrongSocket));
  EXPECT_EQ(unnamed.error().code_name(), "WRONG_SOCKET");
  EXPECT_EQ(Code(Call(writer_session_.get(), Put("", "c-1", "v"))), C(ErrorCode::kNotGranted));

  pb::Request job;
  job.mutable_job_start()->set_kind(pb::JOB_KIND_UNSPECIFIED);
  EXPECT_EQ(Code(Call(admin_.get(), job)), C(ErrorCode::kMalformedRequest));
  // A periodic kind runs that job now: none of this daemon's, and never for one dataset.
  job.mutable_job_start()->set_kind(pb::JOB_ROTATION);
  EXPECT_EQ(Code(Call(admin_.get(), job)), C(ErrorCode::kNotFound));
  job.mutable_job_start()->set_dataset("crm/contacts");
  EXPECT_EQ(Code(Call(admin_.get(), job)), C(ErrorCode::kMalformedRequest));
  pb::Request retire;
  retire.mutable_key_retire()->set_dataset("crm/contacts");
  EXPECT_EQ(Code(Call(admin_.get(), retire)), C(ErrorCode::kMalformedRequest));
  pb::Request status;
  status.mutable_job_status()->set_id(424242);
  EXPECT_EQ(Code(Call(admin_.get(), status)), C(ErrorCode::kNotFound));
}

TEST_F(DaemonServicesTest, ExtraAdminOperationsRunAfterAccessControlWithTheAdminAsActor) {
  ServicesDeps deps = Deps();
  uint32_t seen_uid = 0;
  deps.extra_admin_ops[pb::Request::kBackupList] =
      [&](const pb::Request&, const audit::AuditActor& actor, const coffer::ProgressFn&,
          pb::Response* response) {
        seen_uid = actor.uid;
        response->mutable_backup_list()->add_backups()->set_id(7);
        return absl::OkStatus();
      };
  deps.extra_admin_ops[pb::Request::kBackupVerify] =
      [](const pb::Request&, const audit::AuditActor&, const coffer::ProgressFn&, pb::Response*) {
        return MakeError(ErrorCode::kBackupCorrupt, "/secret/path/backup-7 checksum");
      };
  auto services = Services::Create(std::move(deps));
  ASSERT_TRUE(services.ok()) << services.status();
  std::unique_ptr<Session> admin = (*services)->Open(Peer(kAdmin, SocketKind::kAdmin));
  pb::Request list;
  list.mutable_backup_list();
  pb::Response listed = Call(admin.get(), list);
  ASSERT_FALSE(listed.has_error()) << listed.error().message();
  EXPECT_EQ(listed.backup_list().backups(0).id(), 7u);
  EXPECT_EQ(seen_uid, kAdmin);
  pb::Request verify;
  verify.mutable_backup_verify();
  pb::Response failed = Call(admin.get(), verify);
  EXPECT_EQ(Code(failed), C(ErrorCode::kBackupCorrupt));
  EXPECT_EQ(failed.error().message().find("/secret"), std::string::npos);

  seen_uid = 0;
  std::unique_ptr<Session> data = (*services)->Open(Peer(kWriter));
  EXPECT_EQ(Code(Call(data.get(), list)), C(ErrorCode::kWrongSocket));
  std::unique_ptr<Session> stranger = (*services)->Open(Peer(kStranger, SocketKind::kAdmin));
  EXPECT_EQ(Code(Call(stranger.get(), list)), C(ErrorCode::kNotGranted));
  EXPECT_EQ(seen_uid, 0u);
}

TEST_F(DaemonServicesTest, LongAdminOperationsStreamProgressFramesOnlyWhenAsked) {
  ServicesDeps deps = Deps();
  deps.extra_admin_ops[pb::Request::kBackupVerify] =
      [](const pb::Request&, const audit::AuditActor&, const coffer::ProgressFn& progress,
         pb::Response* response) {
        if (progress) {
          // Within a phase, only the first report and the one that completes it are sure to be
          // sent (the rest are throttled).
          for (uint64_t done = 0; done <= 4; ++done) progress({"data", done, 4});
          progress({"keys", 0, 0});
          progress({"keys", 10, 10});
        }
        response->mutable_backup_verify();
        return absl::OkStatus();
      };
  auto services = Services::Create(std::move(deps));
  ASSERT_TRUE(services.ok()) << services.status();
  std::unique_ptr<Session> admin = (*services)->Open(Peer(kAdmin, SocketKind::kAdmin));

  pb::Request verify;
  verify.mutable_backup_verify()->set_id(1);
  std::vector<pb::Response> quiet = CallAll(admin.get(), verify);
  ASSERT_EQ(quiet.size(), 1u);
  EXPECT_TRUE(quiet[0].has_backup_verify());
  EXPECT_FALSE(quiet[0].has_progress());

  verify.set_progress(true);
  std::vector<pb::Response> frames = CallAll(admin.get(), verify);
  ASSERT_GE(frames.size(), 5u);
  EXPECT_TRUE(frames.back().has_backup_verify());
  EXPECT_FALSE(frames.back().has_error());
  std::vector<std::string> phases;
  for (size_t i = 0; i + 1 < frames.size(); ++i) {
    const pb::Response& frame = frames[i];
    ASSERT_TRUE(frame.has_progress()) << i;
    EXPECT_FALSE(frame.has_error());
    EXPECT_EQ(frame.result_case(), pb::Response::RESULT_NOT_SET);
    if (phases.empty() || phases.back() != frame.progress().phase()) {
      phases.push_back(frame.progress().phase());
    }
  }
  EXPECT_EQ(phases, (std::vector<std::string>{"data", "keys"}));
  const pb::OperationProgress& first = frames.front().progress();
  EXPECT_EQ(first.done(), 0u);
  EXPECT_EQ(first.total(), 4u);
  const pb::OperationProgress& data_end = frames[frames.size() - 4].progress();
  EXPECT_EQ(data_end.phase(), "data");
  EXPECT_EQ(data_end.done(), 4u);
  EXPECT_EQ(data_end.eta_seconds(), 0);
  const pb::OperationProgress& keys_start = frames[frames.size() - 3].progress();
  EXPECT_EQ(keys_start.total(), 0u);
  EXPECT_EQ(keys_start.eta_seconds(), -1);  // total unknown
  EXPECT_EQ(frames[frames.size() - 2].progress().done(), 10u);
}

TEST_F(DaemonServicesTest, KeyRewrapStreamsProgressPerVersion) {
  CreateDataset("crm/contacts");
  pb::Request rotate;
  rotate.mutable_key_rotate()->set_dataset("crm/contacts");
  ASSERT_FALSE(Call(admin_.get(), rotate).has_error());
  pb::Request rewrap;
  rewrap.mutable_key_rewrap()->set_dataset("crm/contacts");
  rewrap.set_progress(true);
  std::vector<pb::Response> frames = CallAll(admin_.get(), rewrap);
  ASSERT_GE(frames.size(), 2u);
  ASSERT_TRUE(frames.back().has_key_rewrap()) << frames.back().error().message();
  const pb::OperationProgress& last = frames[frames.size() - 2].progress();
  EXPECT_EQ(last.phase(), "rewrap");
  EXPECT_GT(last.total(), 0u);
  EXPECT_EQ(last.done(), last.total());
}

TEST_F(DaemonServicesTest, TransportRefusalsAreAudited) {
  services_->TransportRefused(Peer(777), ErrorCode::kFrameTooLarge);
  services_->TransportRefused(Peer(778, SocketKind::kAdmin), ErrorCode::kRequestTimeout);
  EXPECT_EQ(CountEntries(audit::v1::REQUEST_REFUSED, 777, ErrorCode::kFrameTooLarge), 1);
  EXPECT_EQ(CountEntries(audit::v1::REQUEST_REFUSED, 778, ErrorCode::kRequestTimeout), 1);
  EXPECT_EQ(services_->metrics().requests_refused, 2u);
}

TEST_F(DaemonServicesTest, AGrantReloadSwapsRights) {
  CreateDataset("crm/contacts");
  std::unique_ptr<Session> s = services_->Open(Peer(kStranger));
  EXPECT_EQ(Code(Call(s.get(), Get("crm/contacts", "c"))), C(ErrorCode::kNotGranted));
  authorizer_->Reload(
      Grants("grants { principals { uid: 1003 } datasets: \"crm/contacts\" rights: READ }"));
  EXPECT_EQ(Code(Call(s.get(), Get("crm/contacts", "c"))), C(ErrorCode::kRecordNotFound));
  // The writer lost its grant with the new table.
  EXPECT_EQ(Code(Call(writer_session_.get(), Get("crm/contacts", "c"))), C(ErrorCode::kNotGranted));
  authorizer_->Reload(Grants(kGrants));
  EXPECT_EQ(Code(Call(s.get(), Get("crm/contacts", "c"))), C(ErrorCode::kNotGranted));
}

TEST_F(DaemonServicesTest, AReencryptionJobReachesDoneWithPerVersionCounts) {
  CreateDataset("crm/contacts");
  for (int i = 0; i < 20; ++i) {
    ASSERT_FALSE(Call(writer_session_.get(),
                      Put("crm/contacts", "c-" + std::to_string(i), "body " + std::to_string(i)))
                     .has_error());
  }
  pb::Request rotate;
  rotate.mutable_key_rotate()->set_dataset("crm/contacts");
  rotate.mutable_key_rotate()->add_purposes(pb::PURPOSE_RECORDS);
  pb::Response rotated = Call(admin_.get(), rotate);
  ASSERT_FALSE(rotated.has_error()) << rotated.error().message();
  ASSERT_EQ(rotated.key_rotate().new_primaries_size(), 1);
  EXPECT_EQ(rotated.key_rotate().new_primaries(0).version(), 2u);

  pb::Request start;
  start.mutable_job_start()->set_kind(pb::JOB_REENCRYPT);
  start.mutable_job_start()->set_dataset("crm/contacts");
  pb::Response started = Call(admin_.get(), start);
  ASSERT_FALSE(started.has_error()) << started.error().message();
  uint64_t id = started.job_start().id();
  auto finished = jobs_->Wait(id);
  ASSERT_TRUE(finished.ok()) << finished.status();

  pb::Request status;
  status.mutable_job_status()->set_id(id);
  pb::Response job = Call(admin_.get(), status);
  ASSERT_EQ(job.job_status().jobs_size(), 1);
  const pb::JobStatus& done = job.job_status().jobs(0);
  EXPECT_EQ(done.state(), pb::JOB_DONE) << done.error().message();
  EXPECT_EQ(done.kind(), pb::JOB_REENCRYPT);
  EXPECT_EQ(done.dataset(), "crm/contacts");
  EXPECT_EQ(done.done(), 20u);
  uint64_t on_v1 = 0, on_v2 = 0;
  for (const auto& count : done.version_counts()) {
    if (count.purpose() != pb::PURPOSE_RECORDS) continue;
    if (count.version() == 1) on_v1 += count.items();
    if (count.version() == 2) on_v2 += count.items();
  }
  EXPECT_EQ(on_v1, 0u);
  EXPECT_EQ(on_v2, 20u);

  // Version 1 can now be retired through the admin socket.
  pb::Request retire;
  retire.mutable_key_retire()->set_dataset("crm/contacts");
  retire.mutable_key_retire()->set_purpose(pb::PURPOSE_RECORDS);
  retire.mutable_key_retire()->set_below(2);
  pb::Response retired = Call(admin_.get(), retire);
  ASSERT_FALSE(retired.has_error()) << retired.error().message();
  ASSERT_EQ(retired.key_retire().retired_size(), 1);
  EXPECT_EQ(retired.key_retire().retired(0), 1u);
  EXPECT_EQ(Call(writer_session_.get(), Get("crm/contacts", "c-3")).record_get().value(), "body 3");

  // A scrub of every dataset finds nothing wrong.
  pb::Request scrub;
  scrub.mutable_job_start()->set_kind(pb::JOB_SCRUB);
  pb::Response scrubbing = Call(admin_.get(), scrub);
  ASSERT_FALSE(scrubbing.has_error()) << scrubbing.error().message();
  auto scrubbed = jobs_->Wait(scrubbing.job_start().id());
  ASSERT_TRUE(scrubbed.ok());
  EXPECT_EQ(scrubbed->state(), pb::JOB_DONE);
  EXPECT_EQ(scrubbed->failures(), 0u);
  EXPECT_GE(scrubbed->done(), 20u);
}

// job_start of a periodic kind runs that job at once on the admin's request and answers with
// its status after the run; a failed run is JOB_FAILED with its error, not a refusal.
TEST_F(DaemonServicesTest, AJobStartOfAPeriodicKindRunsItNow) {
  int runs = 0;
  absl::Status next = absl::OkStatus();
  ASSERT_TRUE(jobs_
                  ->RegisterPeriodic("rotation", pb::JOB_ROTATION, std::chrono::hours(1),
                                     [&]() -> absl::Status {
                                       ++runs;
                                       return next;
                                     })
                  .ok());
  pb::Request run;
  run.mutable_job_start()->set_kind(pb::JOB_ROTATION);
  pb::Response ran = Call(admin_.get(), run);
  ASSERT_FALSE(ran.has_error()) << ran.error().message();
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(ran.job_start().name(), "rotation");
  EXPECT_EQ(ran.job_start().state(), pb::JOB_PENDING);
  EXPECT_EQ(ran.job_start().done(), 1u);

  next = MakeError(ErrorCode::kDataDbError, "the disk is gone");
  ran = Call(admin_.get(), run);
  ASSERT_FALSE(ran.has_error()) << ran.error().message();
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(ran.job_start().state(), pb::JOB_FAILED);
  EXPECT_EQ(ran.job_start().error().code(), C(ErrorCode::kDataDbError));

  // Only an admin on the admin socket may run it.
  EXPECT_EQ(Code(Call(writer_session_.get(), run)), C(ErrorCode::kWrongSocket));
  EXPECT_EQ(runs, 2);
}

TEST_F(DaemonServicesTest, AdminOperationsThroughHandle) {
  // Create with a policy override; describe.
  pb::Request create = Create("crm/tickets");
  create.mutable_dataset_create()->mutable_policy()->set_bin_days(10);
  pb::Response created = Call(admin_.get(), create);
  ASSERT_FALSE(created.has_error()) << created.error().message();
  EXPECT_EQ(created.dataset_create().policy().bin_days(), 10u);
  EXPECT_EQ(created.dataset_create().state(), pb::DATASET_ACTIVE);
  EXPECT_EQ(Code(Call(admin_.get(), Create("crm/tickets"))), C(ErrorCode::kDatasetExists));
  EXPECT_EQ(Code(Call(admin_.get(), Create("Bad Name"))), C(ErrorCode::kDatasetNameInvalid));
  EXPECT_EQ(Code(Call(admin_.get(), Describe("crm/none"))), C(ErrorCode::kDatasetNotFound));

  // Data through the data socket (an admin gets no content: WRONG_SOCKET on the admin socket),
  // then policy and hold.
  EXPECT_EQ(Code(Call(admin_.get(), Put("crm/tickets", "t-1", "open"))),
            C(ErrorCode::kWrongSocket));
  ASSERT_FALSE(Call(writer_session_.get(), Put("crm/tickets", "t-1", "open")).has_error());
  ASSERT_FALSE(Call(writer_session_.get(), Put("crm/tickets", "t-2", "closed")).has_error());
  pb::Request policy;
  policy.mutable_policy_set()->set_dataset("crm/tickets");
  policy.mutable_policy_set()->mutable_policy()->set_bin_days(7);
  pb::Response policed = Call(admin_.get(), policy);
  ASSERT_FALSE(policed.has_error()) << policed.error().message();
  EXPECT_EQ(policed.policy_set().policy().bin_days(), 7u);
  EXPECT_EQ(policed.policy_set().records(), 2u);

  pb::Request hold;
  hold.mutable_hold_set()->set_dataset("crm/tickets");
  hold.mutable_hold_set()->set_hold(true);
  EXPECT_TRUE(Call(admin_.get(), hold).hold_set().legal_hold());
  pb::Request purge;
  purge.mutable_purge()->set_dataset("crm/tickets");
  purge.mutable_purge()->set_record_id("t-1");
  EXPECT_EQ(Code(Call(admin_.get(), purge)), C(ErrorCode::kLegalHold));
  hold.mutable_hold_set()->set_hold(false);
  EXPECT_FALSE(Call(admin_.get(), hold).hold_set().legal_hold());
  pb::Response purged = Call(admin_.get(), purge);
  ASSERT_FALSE(purged.has_error()) << purged.error().message();
  EXPECT_EQ(purged.purge().records(), 1u);
  EXPECT_EQ(Code(Call(writer_session_.get(), Get("crm/tickets", "t-1"))),
            C(ErrorCode::kRecordNotFound));
  pb::Request del;
  del.mutable_record_delete()->set_dataset("crm/tickets");
  del.mutable_record_delete()->set_id("t-2");
  ASSERT_FALSE(Call(writer_session_.get(), del).has_error());
  pb::Request empty_bin;
  empty_bin.mutable_purge()->set_dataset("crm/tickets");
  EXPECT_EQ(Call(admin_.get(), empty_bin).purge().records(), 1u);
  EXPECT_EQ(Call(admin_.get(), Describe("crm/tickets")).dataset_describe().recycle_bin_items(), 0u);

  // Lifecycle: a disabled dataset serves no data.
  pb::Request lifecycle;
  lifecycle.mutable_dataset_lifecycle()->set_name("crm/tickets");
  lifecycle.mutable_dataset_lifecycle()->set_action(pb::DatasetLifecycleRequest::DISABLE);
  EXPECT_EQ(Call(admin_.get(), lifecycle).dataset_lifecycle().state(), pb::DATASET_DISABLED);
  EXPECT_NE(Code(Call(writer_session_.get(), Put("crm/tickets", "t-3", "x"))), 0);
  lifecycle.mutable_dataset_lifecycle()->set_action(pb::DatasetLifecycleRequest::ENABLE);
  EXPECT_EQ(Call(admin_.get(), lifecycle).dataset_lifecycle().state(), pb::DATASET_ACTIVE);
  ASSERT_FALSE(Call(writer_session_.get(), Put("crm/tickets", "t-3", "x")).has_error());

  // Rotation: both data purposes by default.
  pb::Request rotate;
  rotate.mutable_key_rotate()->set_dataset("crm/tickets");
  pb::Response rotated = Call(admin_.get(), rotate);
  ASSERT_FALSE(rotated.has_error()) << rotated.error().message();
  EXPECT_EQ(rotated.key_rotate().new_primaries_size(), 2);

  // Audit query: the dataset's key operations, with its name.
  pb::Request query;
  query.mutable_audit_query()->set_dataset("crm/tickets");
  query.mutable_audit_query()->set_caller_uid(kAdmin);
  pb::Response queried = Call(admin_.get(), query);
  ASSERT_FALSE(queried.has_error()) << queried.error().message();
  int rotations = 0, policy_changes = 0, creates = 0;
  for (const auto& entry : queried.audit_query().entries()) {
    EXPECT_EQ(entry.dataset(), "crm/tickets");
    EXPECT_EQ(entry.uid(), kAdmin);
    EXPECT_EQ(entry.socket(), "admin");
    if (entry.kind() == "KEY_ROTATE") ++rotations;
    if (entry.kind() == "POLICY_CHANGE") ++policy_changes;
    if (entry.kind() == "DATASET_CREATE") ++creates;
  }
  EXPECT_EQ(rotations, 4);  // records and attachments, each REQUESTED then COMPLETED
  EXPECT_GE(policy_changes, 1);
  EXPECT_GE(creates, 1);
  query.mutable_audit_query()->set_limit(1);
  pb::Response one = Call(admin_.get(), query);
  EXPECT_EQ(one.audit_query().entries_size(), 1);
  EXPECT_TRUE(one.audit_query().more());

  pb::Request verify;
  verify.mutable_audit_verify();
  pb::Response verified = Call(admin_.get(), verify);
  ASSERT_FALSE(verified.has_error()) << verified.error().message();
  EXPECT_GT(verified.audit_verify().entries(), 10u);

  pb::Request status;
  status.mutable_status();
  pb::Response state = Call(admin_.get(), status);
  ASSERT_FALSE(state.has_error()) << state.error().message();
  EXPECT_EQ(state.status().datasets(), 1u);
  EXPECT_EQ(state.status().version(), "test");
  EXPECT_EQ(state.status().durability(), "wal");
  EXPECT_EQ(state.status().connections_open(), 2u);
  EXPECT_GT(state.status().requests_total(), 20u);
  EXPECT_GT(state.status().audit_entries(), 10u);

  // Backups are not served here without a handler.
  pb::Request backup;
  backup.mutable_backup_list();
  EXPECT_EQ(Code(Call(admin_.get(), backup)), C(ErrorCode::kMalformedRequest));
}

}  // namespace
}  // namespace coffer::daemon
