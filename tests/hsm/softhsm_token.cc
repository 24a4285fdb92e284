#include "tests/hsm/softhsm_token.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>

#include "crypto/base/status.h"

namespace coffer::hsm::testing {

absl::StatusOr<std::unique_ptr<SoftHsmToken>> SoftHsmToken::Create(const std::string& label) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/coffer-softhsm-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    return MakeError(ErrorCode::kIoError, "mkdtemp failed for " + pattern);
  }
  std::unique_ptr<SoftHsmToken> token(new SoftHsmToken(pattern, label));
  // The script is what developers and the demo use, so the tests exercise it too.
  pid_t child = ::fork();
  if (child == 0) {
    int null_fd = ::open("/dev/null", O_WRONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDOUT_FILENO);
    ::execl(COFFER_SOFTHSM_TOKEN_SCRIPT, COFFER_SOFTHSM_TOKEN_SCRIPT, pattern.c_str(),
            label.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int rc = 0;
  if (child < 0 || ::waitpid(child, &rc, 0) != child || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
    return MakeError(ErrorCode::kInternal, "scripts/softhsm-token failed for " + pattern);
  }
  ::setenv("SOFTHSM2_CONF", token->conf_file().c_str(), 1);
  return token;
}

SoftHsmToken::~SoftHsmToken() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

HsmOptions SoftHsmToken::Options(size_t session_pool_size) const {
  HsmOptions options;
  options.token_label = label_;
  options.pin = PinSource::FromFile(pin_file());
  options.session_pool_size = session_pool_size;
  return options;
}

void SoftHsmSuite::SetUpTestSuite() {
  absl::StatusOr<std::unique_ptr<SoftHsmToken>> token = SoftHsmToken::Create("coffer-test");
  ASSERT_TRUE(token.ok()) << token.status();
  token_ = *std::move(token);
  absl::StatusOr<std::unique_ptr<HsmClient>> client = HsmClient::Open(token_->Options());
  ASSERT_TRUE(client.ok()) << client.status();
  client_ = *std::move(client);
}

void SoftHsmSuite::TearDownTestSuite() {
  if (client_) {
    EXPECT_TRUE(client_->Close().ok());
  }
  client_.reset();
  token_.reset();
}

uint64_t UniqueDatasetHandle() {
  static std::atomic<uint64_t> next{1000};
  return next.fetch_add(1);
}

}  // namespace coffer::hsm::testing
