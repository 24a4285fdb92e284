// keyctl's shell and batch pieces without a daemon (kms/keyctl/shell.h): shell-like word
// splitting, comments, line numbers in errors, stopping at the first failing line, options that
// belong to the keyctl process refused on a line, and help. Commands that reach the daemon are
// pointed at a socket path where nothing listens, so they fail with DAEMON_UNAVAILABLE; the
// suites on a running cofferd (keyctl_mfa_session_test.cc) show the MFA side.

#include "kms/keyctl/shell.h"

#include <sstream>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {
namespace {

using Words = std::vector<std::string>;

Words Split(std::string_view line) {
  absl::StatusOr<Words> words = SplitWords(line);
  EXPECT_TRUE(words.ok()) << line << ": " << words.status();
  return words.value_or(Words{"<error>"});
}

TEST(SplitWordsTest, SplitsLikeAShellWithoutExpansions) {
  EXPECT_EQ(Split("dataset create crm/contacts"), (Words{"dataset", "create", "crm/contacts"}));
  EXPECT_EQ(Split("  \tdataset   list  "), (Words{"dataset", "list"}));
  EXPECT_EQ(Split("canary plant crm --record 'decoy 7' --value '{\"n\": 1}'"),
            (Words{"canary", "plant", "crm", "--record", "decoy 7", "--value", "{\"n\": 1}"}));
  EXPECT_EQ(Split(R"(a "b \"c\" \\ \$x \n" d)"), (Words{"a", R"(b "c" \ $x \n)", "d"}));
  EXPECT_EQ(Split(R"(one\ word 'it''s' x"y"z)"), (Words{"one word", "its", "xyz"}));
  EXPECT_EQ(Split("'' \"\""), (Words{"", ""}));
  EXPECT_EQ(Split("$HOME *.txt ~"), (Words{"$HOME", "*.txt", "~"}));  // no expansion
}

TEST(SplitWordsTest, CommentsAndEmptyLines) {
  EXPECT_TRUE(Split("").empty());
  EXPECT_TRUE(Split("   ").empty());
  EXPECT_TRUE(Split("# a comment").empty());
  EXPECT_TRUE(Split("   # indented comment").empty());
  EXPECT_EQ(Split("dataset list # the rest is a comment"), (Words{"dataset", "list"}));
  EXPECT_EQ(Split("key rotate a#b '#x'"), (Words{"key", "rotate", "a#b", "#x"}));
}

TEST(SplitWordsTest, UnterminatedQuotesAndTrailingBackslashAreErrors) {
  for (std::string_view bad : {"dataset create 'crm", "a \"b", "a \\"}) {
    absl::StatusOr<Words> words = SplitWords(bad);
    EXPECT_EQ(ErrorCodeOf(words.status()), ErrorCode::kInvalidArgument) << bad;
  }
}

class BatchTest : public ::testing::Test {
 protected:
  int Batch(const std::string& text) {
    std::istringstream in(text);
    return RunBatch(ctx_, in, "ops.keyctl", err_);
  }
  int Shell(const std::string& text) {
    std::istringstream in(text);
    return RunShell(ctx_, in, /*prompt=*/false, err_);
  }
  std::ostringstream out_, err_, progress_;
  // Nothing listens there: every request fails with DAEMON_UNAVAILABLE.
  CommandContext ctx_{"/nonexistent/coffer/admin.sock", false, out_, progress_, false};
};

TEST_F(BatchTest, ABatchOfCommentsAndBlankLinesSucceeds) {
  EXPECT_EQ(Batch("# setup\n\n   \n# done\n"), kExitOk);
  EXPECT_EQ(err_.str(), "");
}

TEST_F(BatchTest, AUsageErrorNamesItsLineAndStopsTheBatch) {
  EXPECT_EQ(Batch("# first\n\ndataset frob\ndataset list --bogus\n"), kExitUsage);
  EXPECT_NE(err_.str().find("keyctl: ops.keyctl:3: unknown command 'frob'"), std::string::npos)
      << err_.str();
  EXPECT_EQ(err_.str().find("ops.keyctl:4"), std::string::npos) << "ran past the failure";
}

TEST_F(BatchTest, AFailingCommandStopsTheBatchWithItsExitCode) {
  // Line 1 reaches for the daemon and fails; line 2 would be a usage error if it ran.
  const int code = Batch("dataset list\ndataset frob\n");
  EXPECT_EQ(code, ExitCodeFor(MakeError(ErrorCode::kDaemonUnavailable, "x"))) << err_.str();
  EXPECT_NE(code, kExitOk);
  EXPECT_NE(err_.str().find("keyctl: ops.keyctl:1: "), std::string::npos) << err_.str();
  EXPECT_EQ(err_.str().find("ops.keyctl:2"), std::string::npos) << err_.str();
}

TEST_F(BatchTest, QuotingErrorsAndProcessOptionsOnALineAreUsageErrors) {
  EXPECT_EQ(Batch("dataset create 'crm\n"), kExitUsage);
  EXPECT_NE(err_.str().find("ops.keyctl:1: unterminated single quote"), std::string::npos)
      << err_.str();
  for (const char* line : {"--totp 123456 dataset list\n", "dataset list --socket /x\n",
                           "--json dataset list\n", "dataset list --batch f\n"}) {
    err_.str("");
    EXPECT_EQ(Batch(line), kExitUsage) << line;
    EXPECT_NE(err_.str().find("belongs to keyctl itself"), std::string::npos) << err_.str();
  }
  err_.str("");
  EXPECT_EQ(Batch("shell\n"), kExitUsage);
  EXPECT_NE(err_.str().find("does not nest"), std::string::npos) << err_.str();
}

TEST_F(BatchTest, TheShellGoesOnAfterAFailureAndEndsAtExit) {
  // A usage error, a help, then exit: what follows exit never runs.
  EXPECT_EQ(Shell("dataset frob\nhelp\nexit\ndataset frob2\n"), kExitOk);
  EXPECT_NE(err_.str().find("unknown command 'frob'"), std::string::npos) << err_.str();
  EXPECT_EQ(err_.str().find("frob2"), std::string::npos) << err_.str();
  EXPECT_NE(out_.str().find("dataset"), std::string::npos) << "help lists the commands";
  // The exit code is the last command's.
  err_.str("");
  EXPECT_EQ(Shell("help\ndataset frob\n"), kExitUsage);
}

}  // namespace
}  // namespace coffer::keyctl
