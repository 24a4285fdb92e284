#include "crypto/base/status.h"

#include "gtest/gtest.h"

namespace coffer {
namespace {

TEST(StatusTest, MakeErrorCarriesStableCodeAndCanonicalCode) {
  absl::Status status = MakeError(ErrorCode::kWrappedKeyCorrupt, "wrapped key corrupt");
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kWrappedKeyCorrupt);
  EXPECT_EQ(status.message(), "wrapped key corrupt");
  EXPECT_EQ(ErrorCodeName(ErrorCode::kWrappedKeyCorrupt), "WRAPPED_KEY_CORRUPT");
}

TEST(StatusTest, OkAndForeignStatusesMapToGeneralCodes) {
  EXPECT_EQ(ErrorCodeOf(absl::OkStatus()), ErrorCode::kOk);
  EXPECT_EQ(ErrorCodeOf(absl::NotFoundError("x")), ErrorCode::kNotFound);
  EXPECT_EQ(ErrorCodeOf(absl::InvalidArgumentError("x")), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(absl::UnknownError("x")), ErrorCode::kInternal);
}

TEST(StatusTest, MakeErrorWithOkCodeIsInternal) {
  absl::Status status = MakeError(ErrorCode::kOk, "misuse");
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kInternal);
}

TEST(StatusTest, ForgedPayloadFallsBackToCanonicalCode) {
  absl::Status status = absl::DataLossError("x");
  status.SetPayload("type.coffer.dev/coffer.ErrorCode", absl::Cord("99999"));
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kDataLoss);
  status.SetPayload("type.coffer.dev/coffer.ErrorCode", absl::Cord("12abc"));
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kDataLoss);
}

TEST(StatusTest, EveryCodeHasADistinctName) {
  std::set<std::string_view> names;
  for (int value = 0; value < 1000; ++value) {
    auto code = static_cast<ErrorCode>(value);
    if (ErrorCodeName(code) == "UNKNOWN") continue;
    EXPECT_TRUE(names.insert(ErrorCodeName(code)).second) << value;
    EXPECT_EQ(ErrorCodeOf(MakeError(code, "m")), value == 0 ? ErrorCode::kInternal : code);
  }
  EXPECT_GE(names.size(), 30u);
}

TEST(StatusTest, PseudonymCodesKeepTheirNumbersAndNames) {
  EXPECT_EQ(static_cast<int>(ErrorCode::kIdentifierInvalid), 413);
  EXPECT_EQ(static_cast<int>(ErrorCode::kPseudonymTokenMalformed), 414);
  EXPECT_EQ(static_cast<int>(ErrorCode::kPseudonymTokenMismatch), 415);
  EXPECT_EQ(ErrorCodeName(ErrorCode::kIdentifierInvalid), "IDENTIFIER_INVALID");
  EXPECT_EQ(ErrorCodeName(ErrorCode::kPseudonymTokenMalformed), "PSEUDONYM_TOKEN_MALFORMED");
  EXPECT_EQ(ErrorCodeName(ErrorCode::kPseudonymTokenMismatch), "PSEUDONYM_TOKEN_MISMATCH");
  for (ErrorCode code : {ErrorCode::kIdentifierInvalid, ErrorCode::kPseudonymTokenMalformed,
                         ErrorCode::kPseudonymTokenMismatch}) {
    EXPECT_EQ(CanonicalCode(code), absl::StatusCode::kInvalidArgument) << ErrorCodeName(code);
  }
}

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return MakeError(ErrorCode::kInvalidArgument, "odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  COFFER_ASSIGN_OR_RETURN(int half, Half(x));
  COFFER_ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

absl::Status CheckEven(int x) {
  COFFER_RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusTest, MacrosPropagate) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(ErrorCodeOf(Quarter(6).status()), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_FALSE(CheckEven(5).ok());
}

}  // namespace
}  // namespace coffer
