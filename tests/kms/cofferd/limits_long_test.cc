// The long forms of issue 19 item 8, run by scripts/limits (not by the test command: they take
// minutes): a 1 GiB attachment both ways with the daemon's memory bounded, and 10,000 datasets
// served and surviving a restart. Each prints its figures; assertions are about behaviour
// (bytes, counts, memory), never time. (The full disk is in kms_daemon_limits_test.)

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/one_dataset_daemon.h"
#include "tests/kms/cofferd/raw_connection.h"
#include "tests/testing/process.h"
#include "tests/testing/text.h"

namespace coffer {
namespace {

using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::RawConnection;
using ::coffer::testing::ReadWholeFile;
namespace fs = std::filesystem;
namespace pb = ::coffer::v1;

// A /proc/PID/status field in kB ("VmHWM", "VmRSS"); 0 when absent.
uint64_t StatusKb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1));
  }
  return 0;
}

// Chunk `i` of the attachment: `size` bytes that compress badly.
std::string Chunk(uint64_t i, size_t size) {
  return ::coffer::testing::Pattern(size, static_cast<uint32_t>(i));
}

class LimitsLongTest : public ::coffer::testing::OneDatasetDaemonTest {
 protected:
  LimitsLongTest() : OneDatasetDaemonTest("cofferd-limits-long", "crm/long") {}
};

TEST_F(LimitsLongTest, AOneGibAttachmentBothWaysInBoundedMemory) {
  constexpr size_t kChunk = size_t{1} << 20;
  constexpr uint64_t kChunks = 1024;
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  const uint64_t rss_before_kb = StatusKb(daemon_->pid(), "VmRSS");
  const auto start = std::chrono::steady_clock::now();
  auto writer = c->BeginAttachment("crm/long", "archive.tar", "application/x-tar");
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (uint64_t i = 0; i < kChunks; ++i) {
    ASSERT_TRUE((*writer)->Append(Chunk(i, kChunk)).ok()) << i;
  }
  auto info = (*writer)->Commit();
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->size, kChunks * kChunk);
  const auto written = std::chrono::steady_clock::now();
  auto reader = c->OpenAttachment("crm/long", "archive.tar");
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::string buf(kChunk, '\0');
  for (uint64_t i = 0; i < kChunks; ++i) {
    size_t have = 0;
    while (have < kChunk) {
      auto n = (*reader)->Read(buf.data() + have, kChunk - have);
      ASSERT_TRUE(n.ok()) << n.status();
      ASSERT_GT(*n, 0u) << "short download at chunk " << i;
      have += *n;
    }
    ASSERT_TRUE(buf == Chunk(i, kChunk)) << "chunk " << i << " differs";
  }
  const auto read = std::chrono::steady_clock::now();
  const uint64_t peak_kb = StatusKb(daemon_->pid(), "VmHWM");
  // Streamed in segments: the daemon never holds the attachment (1 GiB), nor a large part of it.
  EXPECT_LT(peak_kb, uint64_t{256} * 1024) << "peak RSS " << peak_kb << " kB";
  const double seconds_w = std::chrono::duration<double>(written - start).count();
  const double seconds_r = std::chrono::duration<double>(read - written).count();
  std::cout << "limits: 1 GiB attachment: write " << 1024 / seconds_w << " MiB/s, read "
            << 1024 / seconds_r << " MiB/s, daemon RSS before " << rss_before_kb / 1024
            << " MiB, peak " << peak_kb / 1024 << " MiB (load " << ReadWholeFile("/proc/loadavg")
            << ")";
}

TEST_F(LimitsLongTest, TenThousandDatasetsAreServedAndSurviveARestart) {
  const int kDatasets = std::getenv("COFFER_LIMITS_DATASETS") != nullptr
                            ? std::atoi(std::getenv("COFFER_LIMITS_DATASETS"))
                            : 10000;
  const auto start = std::chrono::steady_clock::now();
  {
    RawConnection admin(daemon_->admin_socket());
    ASSERT_TRUE(admin.ok());
    for (int i = 0; i < kDatasets; ++i) {
      pb::Request create;
      create.mutable_dataset_create()->set_name("tenant/" + std::to_string(i));
      auto created = admin.Call(create);
      ASSERT_TRUE(created.ok() && !created->has_error())
          << i << ": " << (created.ok() ? created->DebugString() : created.status().ToString());
    }
  }
  const auto created = std::chrono::steady_clock::now();
  // A record in a sample of them.
  std::vector<int> sample;
  for (int i = 0; i < kDatasets; i += std::max(1, kDatasets / 50)) sample.push_back(i);
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    for (int i : sample) {
      ASSERT_TRUE(
          c->PutRecord("tenant/" + std::to_string(i), "r", "record of " + std::to_string(i)).ok())
          << i;
    }
  }
  ASSERT_TRUE(daemon_->Stop());
  const auto restart = std::chrono::steady_clock::now();
  ASSERT_TRUE(daemon_->Start());
  const auto serving = std::chrono::steady_clock::now();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto listed = c->ListDatasets();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->size(), static_cast<size_t>(kDatasets + 1));  // and crm/long
  for (int i : sample) {
    auto value = c->GetRecord("tenant/" + std::to_string(i), "r");
    ASSERT_TRUE(value.ok()) << i << ": " << value.status();
    EXPECT_EQ(*value, "record of " + std::to_string(i));
  }
  std::cout << "limits: " << kDatasets << " datasets created in "
            << std::chrono::duration<double>(created - start).count() << " s; restart to serving "
            << std::chrono::duration<double>(serving - restart).count() << " s; daemon RSS "
            << StatusKb(daemon_->pid(), "VmRSS") / 1024 << " MiB (load "
            << ReadWholeFile("/proc/loadavg") << ")";
}

}  // namespace
}  // namespace coffer
