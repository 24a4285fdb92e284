// EventSource over a real audit log (software signer, fake clock): lifecycle entries become
// events exactly once across restarts and segment boundaries; failed or requested stages and
// other kinds are ignored; destruction warnings fire once; health changes are raised once.

#include "kms/events/event_source.h"

#include <chrono>
#include <filesystem>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/audit/audit_log.h"
#include "tests/kms/audit/audit_test_util.h"

namespace coffer::events {
namespace {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;
using audit::testing::TestLogEnv;

audit::AuditEvent Entry(audit::v1::EventKind kind, uint64_t handle,
                        audit::v1::Stage stage = audit::v1::STAGE_COMPLETED,
                        audit::AuditText detail = "") {
  audit::AuditEvent event;
  event.kind = kind;
  event.actor.uid = 1001;
  event.actor.pid = 77;
  event.actor.socket = audit::v1::SOCKET_ADMIN;
  event.dataset_handle = handle;
  event.stage = stage;
  event.detail = detail;
  return event;
}

class EventSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto options = env_.Options(1000);
    options.max_segment_bytes = 4096;  // several segments: the tail must cross them
    auto opened = audit::AuditLog::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    audit_ = *std::move(opened);
    OpenLog();
  }
  void OpenLog() {
    log_.reset();
    EventLogOptions options;
    options.directory = env_.dir.Sub("events");
    options.clock = &env_.clock;
    auto opened = EventLog::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    log_ = *std::move(opened);
  }
  std::unique_ptr<EventSource> Source(uint64_t audit_start = 0) {
    EventSourceOptions options;
    options.log = log_.get();
    options.audit_directory = env_.log_dir();
    options.audit_start = audit_start;
    options.clock = &env_.clock;
    options.datasets = [this] { return datasets_; };
    options.audit_failed = [this] { return audit_failed_; };
    options.hsm_probe = [this] { return hsm_; };
    options.hsm_check_interval = std::chrono::seconds(0);
    options.destruction_warning = std::chrono::hours(24 * 7);
    options.canary_lookup = [](uint64_t number) -> std::optional<CanaryRef> {
      if (number != 9) return std::nullopt;
      return CanaryRef{"crm", pb::CANARY_RECORD, "decoy-9"};
    };
    auto source = EventSource::Create(std::move(options));
    EXPECT_TRUE(source.ok()) << source.status();
    return source.ok() ? *std::move(source) : nullptr;
  }
  void Append(const audit::AuditEvent& event) { ASSERT_TRUE(audit_->Append(event).ok()); }
  std::vector<pb::Event> All(const std::string& who = "test") {
    auto read =
        log_->Read(who, /*caller=*/0, std::nullopt, false, 1000, std::chrono::milliseconds(0));
    EXPECT_TRUE(read.ok()) << read.status();
    return read.ok() ? read->events : std::vector<pb::Event>{};
  }

  TestLogEnv env_;
  std::unique_ptr<audit::AuditLog> audit_;
  std::unique_ptr<EventLog> log_;
  std::vector<DatasetView> datasets_ = {{5, "crm", false, 0}};
  bool audit_failed_ = false;
  absl::Status hsm_;
};

TEST_F(EventSourceTest, LifecycleEntriesBecomeEventsOnce) {
  auto source = Source();
  ASSERT_NE(source, nullptr);
  Append(Entry(audit::v1::DATASET_DISABLE, 5, audit::v1::STAGE_REQUESTED));  // not yet done
  Append(Entry(audit::v1::DATASET_DISABLE, 5));
  audit::AuditEvent refused = Entry(audit::v1::KEY_ROTATE, 5);
  refused.result = ErrorCode::kDatasetStateForbids;
  Append(refused);                              // failed: no event
  Append(Entry(audit::v1::DATASET_CREATE, 5));  // not a notification
  Append(Entry(audit::v1::KEY_ROTATE, 5, audit::v1::STAGE_COMPLETED,
               "emergency rotation: old versions compromised"));
  Append(Entry(audit::v1::KEY_ROTATE, 5, audit::v1::STAGE_COMPLETED, "manual rotation"));
  audit::AuditEvent canary = Entry(audit::v1::CANARY_READ, 5, audit::v1::STAGE_UNSPECIFIED);
  canary.actor.socket = audit::v1::SOCKET_DATA;
  canary.actor.uid = 3000;
  canary.record_count = 9;
  Append(canary);
  ASSERT_TRUE(source->RunOnce().ok());
  std::vector<pb::Event> events = All();
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].kind(), pb::EVENT_DATASET_DISABLED);
  EXPECT_EQ(events[0].dataset(), "crm");
  EXPECT_EQ(events[0].uid(), 1001u);
  EXPECT_EQ(events[1].kind(), pb::EVENT_EMERGENCY_ROTATION);
  EXPECT_EQ(events[2].kind(), pb::EVENT_KEY_ROTATED);
  EXPECT_EQ(events[3].kind(), pb::EVENT_CANARY_READ);
  EXPECT_EQ(events[3].uid(), 3000u);
  EXPECT_EQ(events[3].pid(), 77u);
  EXPECT_EQ(events[3].canary(), "decoy-9");
  EXPECT_EQ(events[3].canary_kind(), pb::CANARY_RECORD);
  EXPECT_LT(events[0].audit_sequence(), events[3].audit_sequence());
  // A second cycle adds nothing.
  ASSERT_TRUE(source->RunOnce().ok());
  EXPECT_EQ(All("other").size(), 4u);
}

TEST_F(EventSourceTest, RestartResumesAtTheSavedAuditCursor) {
  {
    auto source = Source();
    ASSERT_NE(source, nullptr);
    for (int i = 0; i < 40; ++i) Append(Entry(audit::v1::DATASET_DISABLE, 5));
    ASSERT_TRUE(source->RunOnce().ok());
  }
  for (int i = 0; i < 40; ++i) Append(Entry(audit::v1::DATASET_ENABLE, 5));
  OpenLog();
  // audit_start is ignored once a cursor is saved.
  auto source = Source(/*audit_start=*/1'000'000);
  ASSERT_NE(source, nullptr);
  ASSERT_TRUE(source->RunOnce().ok());
  std::vector<pb::Event> events = All();
  ASSERT_EQ(events.size(), 80u);
  // The audit log spans several segments by now.
  size_t segments = 0;
  for (const auto& entry : std::filesystem::directory_iterator(env_.log_dir())) {
    segments += entry.path().extension() == ".log";
  }
  EXPECT_GE(segments, 2u);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), i + 1);
    EXPECT_EQ(events[i].kind(), i < 40 ? pb::EVENT_DATASET_DISABLED : pb::EVENT_DATASET_ENABLED);
    if (i > 0) {
      EXPECT_EQ(events[i].audit_sequence(), events[i - 1].audit_sequence() + 1);
    }
  }
}

TEST_F(EventSourceTest, FirstStartSkipsHistory) {
  Append(Entry(audit::v1::DATASET_DISABLE, 5));
  auto source = Source(audit_->stats().next_sequence);
  ASSERT_NE(source, nullptr);
  Append(Entry(audit::v1::DATASET_ENABLE, 5));
  ASSERT_TRUE(source->RunOnce().ok());
  std::vector<pb::Event> events = All();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind(), pb::EVENT_DATASET_ENABLED);
}

TEST_F(EventSourceTest, DestructionWarningOncePerScheduledDestruction) {
  auto source = Source();
  ASSERT_NE(source, nullptr);
  const int64_t now = coffer::ToUnixMicros(env_.clock.Now());
  const int64_t day = int64_t{86400} * 1'000'000;
  datasets_ = {{5, "crm", true, now + 10 * day}};
  ASSERT_TRUE(source->RunOnce().ok());
  EXPECT_TRUE(All().empty());  // 10 days out, warning at 7
  env_.clock.Advance(std::chrono::hours(24 * 4));
  ASSERT_TRUE(source->RunOnce().ok());
  ASSERT_TRUE(source->RunOnce().ok());
  std::vector<pb::Event> events = All();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind(), pb::EVENT_DESTRUCTION_DUE_SOON);
  EXPECT_EQ(events[0].destruction_due_micros(), now + 10 * day);
  // Also after a restart of the source.
  source = Source();
  ASSERT_TRUE(source->RunOnce().ok());
  EXPECT_EQ(All("again").size(), 1u);
}

TEST_F(EventSourceTest, HealthChangesAreRaisedOnce) {
  auto source = Source();
  ASSERT_NE(source, nullptr);
  hsm_ = MakeError(ErrorCode::kHsmDeviceError, "down");
  audit_failed_ = true;
  ASSERT_TRUE(source->RunOnce().ok());
  ASSERT_TRUE(source->RunOnce().ok());
  hsm_ = absl::OkStatus();
  ASSERT_TRUE(source->RunOnce().ok());
  std::vector<pb::Event> events = All();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].kind(), pb::EVENT_AUDIT_WRITE_FAILURE);
  EXPECT_EQ(events[1].kind(), pb::EVENT_HSM_UNAVAILABLE);
  EXPECT_EQ(events[1].error_code(), static_cast<int32_t>(ErrorCode::kHsmDeviceError));
  EXPECT_EQ(events[2].kind(), pb::EVENT_HSM_AVAILABLE);

  // The log reopened itself, then failed again: a new event.
  audit_failed_ = false;
  ASSERT_TRUE(source->RunOnce().ok());
  audit_failed_ = true;
  ASSERT_TRUE(source->RunOnce().ok());
  ASSERT_TRUE(source->RunOnce().ok());
  events = All();
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[3].kind(), pb::EVENT_AUDIT_WRITE_FAILURE);
}

}  // namespace
}  // namespace coffer::events
