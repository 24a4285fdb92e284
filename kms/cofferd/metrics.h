// cofferd's metrics in the Prometheus text format (docs/daemon.md, "Metrics"), through
// prometheus-cpp (Debian's prometheus-cpp-dev): the same text on the optional loopback HTTP
// endpoint (config metrics_listen) and through the admin operation `metrics` (keyctl metrics).
//
// Two kinds of figures:
//  - observed as they happen: each request's service time per operation and socket (a
//    histogram; its _count is the request count), error answers per operation, socket and code,
//    refusals per socket and code (the services' and the transport's, as the refusal audit counts
//    them), and the access-audit writer's batches (events per batch, write+fsync time);
//  - read when scraped, from the parts' own counters: the transport (connections, buffered
//    bytes), the key cache (hits, misses, evictions), the HSM token (operations, errors,
//    reconnects), the audit log (writable, checkpoints) and the jobs (items done of total).
// No label carries a dataset name, a uid or anything a request contains: the endpoint has no
// authentication (it listens on loopback only), and dataset names are sealed at rest.
//
// Thread safety: every member may be called from any thread. Handled/Refused are on the request
// path: a histogram per (operation, socket) is made up front, so they take no registry lock.

#ifndef COFFER_KMS_COFFERD_METRICS_H_
#define COFFER_KMS_COFFERD_METRICS_H_

#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coffer/v1/admin.pb.h"
#include "hsm/token.h"
#include "kms/audit/audit_log.h"
#include "kms/keys/key_cache.h"
#include "kms/ops/operation_table.h"
#include "kms/ops/request_observer.h"
#include "kms/server/server.h"

namespace prometheus {
class Collectable;
class Counter;
class Exposer;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace coffer::cofferd {

// Where the figures read at scrape time come from; each is optional (unset: not shown).
struct MetricsSources {
  std::function<server::ServerStats()> transport;
  std::function<kms::KeyCacheStats()> key_cache;
  std::function<hsm::TokenHealth()> hsm;
  std::function<kms::audit::AuditLogStats()> audit_log;
  std::function<std::vector<coffer::v1::JobStatus>()> jobs;
};

class DaemonMetrics final : public daemon::RequestObserver {
 public:
  // One histogram per row of `operations` and socket, plus one for requests without a row.
  explicit DaemonMetrics(const daemon::OperationTable& operations);
  ~DaemonMetrics() override;

  // Replaces the sources (the wiring sets them as the parts open).
  void SetSources(MetricsSources sources);

  void Handled(::coffer::v1::Request::OpCase op, daemon::SocketKind socket, ErrorCode result,
               std::chrono::steady_clock::duration took) override;
  void Refused(daemon::SocketKind socket, ErrorCode code) override;
  // The access-audit writer wrote a batch (BatchingAuditWriterOptions::on_batch_written).
  void AuditBatchWritten(size_t events, std::chrono::steady_clock::duration took);

  // Every figure, in the text exposition format 0.0.4.
  std::string Text() const;

  // What the endpoint serves: the registry and the figures read at scrape time.
  std::vector<std::shared_ptr<prometheus::Collectable>> Collectables() const;

 private:
  class Pulled;
  struct PerOperation {
    std::string name;
    std::array<prometheus::Histogram*, 2> took{};  // by socket: data, admin
  };
  static constexpr size_t kIndexSize = 256;  // as OperationTable's index

  const PerOperation& Row(::coffer::v1::Request::OpCase op) const;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<Pulled> pulled_;
  prometheus::Family<prometheus::Counter>* errors_ = nullptr;
  prometheus::Family<prometheus::Counter>* refusals_ = nullptr;
  prometheus::Histogram* audit_batch_events_ = nullptr;
  prometheus::Histogram* audit_batch_seconds_ = nullptr;
  std::vector<PerOperation> rows_;              // [0]: requests without a row
  std::array<size_t, kIndexSize> row_index_{};  // by op number; 0 = without a row
};

// The HTTP endpoint (prometheus-cpp's Exposer over civetweb) on a loopback address.
class MetricsEndpoint {
 public:
  // `listen` as config metrics_listen allows ("127.0.0.1:PORT", "[::1]:PORT"); `metrics` must
  // outlive the endpoint. IO_ERROR when the address cannot be bound (in use, say).
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& listen,
                                                                const DaemonMetrics& metrics);
  ~MetricsEndpoint();

  // The address as bound: "127.0.0.1:40123" for a listen port of 0.
  const std::string& endpoint() const { return endpoint_; }

 private:
  MetricsEndpoint(std::unique_ptr<prometheus::Exposer> exposer, std::string endpoint);
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string endpoint_;
};

}  // namespace coffer::cofferd

#endif  // COFFER_KMS_COFFERD_METRICS_H_
