// Fuzz target: one connection's bytes from the wire, served by the real handlers.
//
// The input is what a client sends on one connection: after one selector byte (which peer the
// connection is: a granted writer or an admin on their sockets, or a stranger), a sequence of
// frames. Each frame's size prefix goes through api::DecodeFrameHeader (what cofferd's reactor
// calls), its payload through Request::ParseFromArray, and every request that parses through
// Session::Handle of the real Services — over a data DB, key DB and audit log in a temporary
// directory, with hsm::FakeKeyWrapper as the wrapping module and software keys for rows and
// signatures. The session is closed at the end of the input, as when the peer hangs up, so an
// attachment upload left open is aborted. Per-connection state (upload, page tokens) lives in
// the session; the stores persist across inputs of one process.
//
// Page tokens: a record_list or bin_list whose page_token is "$" gets the next_page_token of the
// connection's last list response instead, so that real continuations are served (a token is
// authenticated; the fuzzer could not make one up); any other token is passed as it is.
//
// Findings: a crash, a sanitizer report, or a response that does not survive the wire.

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "hsm/service_keys.h"
#include "hsm/testing/fake_key_wrapper.h"
#include "kms/api/framing.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/batching_writer.h"
#include "kms/audit/signer.h"
#include "kms/config/config.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/store_graph.h"
#include "kms/ops/authz.h"
#include "kms/ops/jobs.h"
#include "kms/ops/services.h"
#include "storage/data_db.h"
#include "storage/testing/fakes.h"
#include "tests/fuzz/fuzz_keys.h"
#include "tests/fuzz/fuzz_support.h"

namespace coffer::fuzz {
namespace {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;

constexpr uid_t kWriter = 1001;
constexpr uid_t kStranger = 1003;
constexpr uid_t kAdmin = 2000;
// Small enough that the fuzzer reaches FRAME_TOO_LARGE, large enough for every seed.
constexpr size_t kMaxFrameBytes = 64 << 10;

constexpr char kGrants[] = R"pb(
  grants {
    principals { uid: 1001 }
    datasets: "fuzz/records"
    datasets: "fuzz/files"
    datasets: "fuzz/more"
    rights: READ
    rights: WRITE
    rights: DELETE
    rights: METADATA
  }
  admins { uid: 2000 }
  rate_limit { default_limit { requests_per_second: 1000000 burst: 1000000 } }
)pb";

// The key manager's tombstone signer, a software P-256 key.
class SoftwareSigner final : public hsm::Signer {
 public:
  explicit SoftwareSigner(audit::CheckpointSigner* key) : key_(key) {}
  absl::StatusOr<std::string> Sign(std::string_view message) override {
    return key_->Sign(message);
  }
  absl::StatusOr<std::string> PublicKeyPem() override { return key_->PublicKeyPem(); }

 private:
  audit::CheckpointSigner* key_;
};

class DiscardingSink final : public daemon::ResponseSink {
 public:
  absl::Status Send(const pb::Response& response) override {
    // What a client parses must parse (proto3 strings must be valid UTF-8 on the wire).
    std::string wire;
    if (!response.SerializeToString(&wire)) Fail("a response does not serialize");
    pb::Response parsed;
    if (!parsed.ParseFromString(wire)) Fail("a response does not survive the wire");
    if (response.has_record_list()) last_page_token = response.record_list().next_page_token();
    if (response.has_bin_list()) last_page_token = response.bin_list().next_page_token();
    Report("response " + std::to_string(response.result_case()),
           response.has_error() ? MakeError(static_cast<ErrorCode>(response.error().code()), "")
                                : absl::OkStatus());
    return absl::OkStatus();
  }

  // Replaces a "$" page token with the last one a list response carried.
  void FillPageToken(pb::Request* request) const {
    if (request->has_record_list() && request->record_list().page_token() == "$") {
      request->mutable_record_list()->set_page_token(last_page_token);
    }
    if (request->has_bin_list() && request->bin_list().page_token() == "$") {
      request->mutable_bin_list()->set_page_token(last_page_token);
    }
  }

  std::string last_page_token;
};

// Everything a Services needs, built once per process.
struct World {
  World() {
    directory = MakeTemporaryDirectory("fuzz-request");
    checkpoint_key = FixedSigner();
    tombstone_signer = std::make_unique<SoftwareSigner>(checkpoint_key.get());

    audit::AuditLogOptions audit_options;
    audit_options.directory = directory + "/audit";
    audit_options.signer = checkpoint_key.get();
    audit_options.epoch_keys = kms::HsmEpochKeyProvider(rows);
    audit_options.clock = &clock;
    log = Must(audit::AuditLog::Open(std::move(audit_options)));
    access_audit = Must(audit::BatchingAuditWriter::Start(log.get(), {}));

    data_db = Must(storage::DataDb::Open(directory + "/data", storage::DataDbOptions{}));
    kms::StoreGraphOptions graph;
    graph.data_db = data_db.get();
    graph.keys.key_db_directory = directory + "/keys";
    graph.keys.modules = {{"fake", &wrapper}};
    graph.keys.default_module = "fake";
    graph.keys.row_authenticator = &rows;
    graph.keys.signer = tombstone_signer.get();
    graph.keys.audit_log = log.get();
    graph.keys.clock = &clock;
    stores = Must(kms::StoreGraph::Open(std::move(graph)));
    jobs = std::make_unique<daemon::JobRegistry>(
        daemon::JobRegistryDeps{data_db.get(), &stores->key_manager(), &stores->attachments(),
                                nullptr, nullptr},
        clock);
    auto config = Must(daemon::ParseConfig(kGrants, "fuzz"));
    authorizer = std::make_unique<daemon::Authorizer>(Must(daemon::GrantTable::FromConfig(config)));

    daemon::ServicesDeps deps;
    deps.keys = &stores->key_manager();
    deps.data_db = data_db.get();
    deps.records = &stores->records();
    deps.attachments = &stores->attachments();
    deps.bin = &stores->bin();
    deps.audit_log = log.get();
    deps.access_audit = access_audit.get();
    deps.clock = &clock;
    deps.jobs = jobs.get();
    deps.authorizer = authorizer.get();
    deps.audit_directory = directory + "/audit";
    deps.audit_public_key_pem = Must(checkpoint_key->PublicKeyPem());
    deps.version = "fuzz";
    deps.durability = "wal";
    deps.data_socket = "/run/coffer/data.sock";
    deps.admin_socket = "/run/coffer/admin.sock";
    services = Must(daemon::Services::Create(std::move(deps)));

    // Two datasets the seeds name, so that record and attachment requests reach the stores.
    auto admin = services->Open(Peer(kAdmin, daemon::SocketKind::kAdmin));
    for (const char* name : {"fuzz/records", "fuzz/files"}) {
      pb::Request create;
      create.mutable_dataset_create()->set_name(name);
      DiscardingSink sink;
      if (!admin->Handle(create, &sink).ok()) Fail("dataset_create");
    }
    admin->Closed();
  }

  static daemon::PeerIdentity Peer(uid_t uid, daemon::SocketKind socket) {
    daemon::PeerIdentity peer;
    peer.uid = uid;
    peer.gid = 100;
    peer.pid = 4321;
    peer.socket = socket;
    return peer;
  }

  std::string directory;
  storage::testing::FakeClock clock;
  FixedRowAuthenticator rows;
  hsm::FakeKeyWrapper wrapper;
  std::unique_ptr<audit::SoftwareEcdsaSigner> checkpoint_key;
  std::unique_ptr<SoftwareSigner> tombstone_signer;
  std::unique_ptr<audit::AuditLog> log;
  std::unique_ptr<audit::BatchingAuditWriter> access_audit;
  std::unique_ptr<storage::DataDb> data_db;
  std::unique_ptr<kms::StoreGraph> stores;
  std::unique_ptr<daemon::JobRegistry> jobs;
  std::unique_ptr<daemon::Authorizer> authorizer;
  std::unique_ptr<daemon::Services> services;
};

World* g_world = nullptr;

void DestroyWorld() { delete std::exchange(g_world, nullptr); }

World& TheWorld() {
  if (g_world == nullptr) {
    g_world = new World();
    // Destroyed at exit, and first: exit handlers run in reverse order of registration, so this
    // one runs before those registered while the world was built — OpenSSL's OPENSSL_cleanup,
    // RocksDB's and protobuf's statics, the removal of the temporary directory. Left alive, the
    // world's threads (the refusal audit's writer above all) kept appending to the audit log
    // while those ran: a SEGV in EVP_MD_fetch after OPENSSL_cleanup (scripts/sanitize asan).
    std::atexit(DestroyWorld);
  }
  return *g_world;
}

}  // namespace
}  // namespace coffer::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace coffer::fuzz;
  if (size == 0) return 0;
  World& world = TheWorld();
  std::unique_ptr<coffer::daemon::Session> session;
  switch (data[0] % 3) {
    case 0:
      session = world.services->Open(World::Peer(kWriter, coffer::daemon::SocketKind::kData));
      break;
    case 1:
      session = world.services->Open(World::Peer(kAdmin, coffer::daemon::SocketKind::kAdmin));
      break;
    default:
      session = world.services->Open(World::Peer(kStranger, coffer::daemon::SocketKind::kData));
      break;
  }
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  DiscardingSink sink;
  while (!rest.empty()) {
    size_t header_bytes = 0;
    size_t payload_bytes = 0;
    absl::Status header =
        coffer::api::DecodeFrameHeader(rest, kMaxFrameBytes, &header_bytes, &payload_bytes);
    if (!header.ok() || header_bytes == 0) break;  // the transport closes the connection
    if (header_bytes > rest.size() || payload_bytes > rest.size() - header_bytes) break;
    coffer::v1::Request request;
    if (!request.ParseFromArray(rest.data() + header_bytes, static_cast<int>(payload_bytes))) {
      break;  // MALFORMED_REQUEST: the transport answers and closes
    }
    rest.remove_prefix(header_bytes + payload_bytes);
    sink.FillPageToken(&request);
    if (!session->Handle(request, &sink).ok()) break;
  }
  session->Closed();
  return 0;
}
