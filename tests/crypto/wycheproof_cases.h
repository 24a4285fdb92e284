// Flattens a Wycheproof JSON file into one row per test case, for TEST_P + ValuesIn.
//
// Each row carries its group's parameters next to the case, so a parameterised test sees
// everything it needs. Loading happens when the suite is instantiated; a missing file yields
// no rows, which the per-file count tests turn into a failure.

#ifndef COFFER_TESTS_CRYPTO_WYCHEPROOF_CASES_H_
#define COFFER_TESTS_CRYPTO_WYCHEPROOF_CASES_H_

#include <string>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/testing/vectors.h"

namespace coffer::testing {

struct WycheproofCase {
  nlohmann::json group;  // the enclosing testGroups[] entry without its "tests"
  nlohmann::json test;   // one tests[] entry
  int id() const { return test.at("tcId").get<int>(); }
  bool valid() const { return test.at("result").get<std::string>() == "valid"; }
  std::string Bytes(const char* field) const {
    return HexToBytes(test.at(field).get<std::string>());
  }
};

// Returns every case in wycheproof/<file_name>, in file order.
inline std::vector<WycheproofCase> LoadWycheproofCases(std::string_view file_name) {
  std::vector<WycheproofCase> cases;
  nlohmann::json file = LoadVectorFile("wycheproof/" + std::string(file_name));
  if (!file.is_object()) return cases;
  for (const nlohmann::json& group : file.at("testGroups")) {
    nlohmann::json group_params = group;
    group_params.erase("tests");
    for (const nlohmann::json& test : group.at("tests")) {
      cases.push_back({group_params, test});
    }
  }
  return cases;
}

// Returns the "numberOfTests" a Wycheproof file declares (0 when it cannot be read).
inline int DeclaredWycheproofCount(std::string_view file_name) {
  nlohmann::json file = LoadVectorFile("wycheproof/" + std::string(file_name));
  return file.is_object() ? file.at("numberOfTests").get<int>() : 0;
}

// Names parameterised tests after the Wycheproof tcId, so a failure names the vector.
struct WycheproofCaseName {
  std::string operator()(const ::testing::TestParamInfo<WycheproofCase>& info) const {
    return "tc" + std::to_string(info.param.id());
  }
};

}  // namespace coffer::testing

#endif  // COFFER_TESTS_CRYPTO_WYCHEPROOF_CASES_H_
