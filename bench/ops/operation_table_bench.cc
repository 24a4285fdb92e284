// The operation table's lookup (kms/ops/operation_table.h), which every request makes several
// times: OperationTable::Find (an index by op number) beside a scan of the same rows, in one
// run. Ops are taken in a fixed mix: data operations first in the table, admin ones last.

#include <algorithm>
#include <vector>

#include "benchmark/benchmark.h"
#include "kms/ops/operation_table.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;

const std::vector<Operation>& Mix() {
  static const std::vector<Operation> mix = {
      pb::Request::kRecordGet,    pb::Request::kRecordPut,       pb::Request::kAttachmentGet,
      pb::Request::kPseudonymize, pb::Request::kDatasetDescribe, pb::Request::kKeyRotate,
      pb::Request::kAuditQuery,   pb::Request::kApprovalDecide};
  return mix;
}

void BM_FindIndexed(benchmark::State& state) {
  const OperationTable& table = OperationTable::Default();
  for (auto _ : state) {
    for (Operation op : Mix()) benchmark::DoNotOptimize(table.Find(op));
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(Mix().size()));
}
BENCHMARK(BM_FindIndexed);

void BM_FindByScan(benchmark::State& state) {
  const absl::Span<const OperationRow> rows = OperationTable::Default().rows();
  for (auto _ : state) {
    for (Operation op : Mix()) {
      auto it = std::find_if(rows.begin(), rows.end(),
                             [op](const OperationRow& row) { return row.op == op; });
      benchmark::DoNotOptimize(it);
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(Mix().size()));
}
BENCHMARK(BM_FindByScan);

}  // namespace
}  // namespace coffer::daemon

BENCHMARK_MAIN();
