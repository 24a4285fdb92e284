#include "kms/cofferd/metrics.h"

#include <exception>
#include <utility>

#include "crypto/base/status.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace coffer::cofferd {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Request service times: 50 µs (a cached get) to 10 s (an export's frame, a slow reader).
const prometheus::Histogram::BucketBoundaries& RequestBuckets() {
  static const auto* const kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
  return *kBuckets;
}

const char* SocketLabel(daemon::SocketKind socket) {
  return socket == daemon::SocketKind::kAdmin ? "admin" : "data";
}

double Seconds(std::chrono::steady_clock::duration took) {
  return std::chrono::duration<double>(took).count();
}

ClientMetric Value(double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.counter.value = value;
  metric.gauge.value = value;
  return metric;
}

MetricFamily Family(std::string name, std::string help, MetricType type,
                    std::vector<ClientMetric> metrics) {
  return MetricFamily{std::move(name), std::move(help), type, std::move(metrics)};
}

void AddTransport(const server::ServerStats& s, std::vector<MetricFamily>* out) {
  out->push_back(Family("coffer_connections_open", "Open connections, both sockets",
                        MetricType::Gauge, {Value(s.connections_open)}));
  out->push_back(Family("coffer_connections_total",
                        "Connections accepted since start, refused ones included",
                        MetricType::Counter, {Value(s.connections_total)}));
  out->push_back(Family("coffer_transport_buffered_bytes",
                        "Bytes buffered by the transport: input buffers as allocated, and "
                        "response bytes not yet taken by their peers",
                        MetricType::Gauge,
                        {Value(s.buffered_input_bytes, {{"direction", "in"}}),
                         Value(s.buffered_output_bytes, {{"direction", "out"}})}));
  out->push_back(Family("coffer_transport_sends_waiting",
                        "Streaming replies waiting for a slow reader (each holds a worker)",
                        MetricType::Gauge, {Value(s.sends_waiting)}));
  out->push_back(Family("coffer_transport_received_bytes_total", "Bytes received since start",
                        MetricType::Counter, {Value(s.bytes_received)}));
  out->push_back(Family("coffer_transport_requests_held_total",
                        "Complete requests held at their caller's cap of requests in flight",
                        MetricType::Counter, {Value(s.requests_held)}));
  out->push_back(Family("coffer_transport_requests_total",
                        "Requests handed to the services, by the thread that ran them: the "
                        "reactor (run to completion) or a worker",
                        MetricType::Counter,
                        {Value(s.requests_inline, {{"thread", "reactor"}}),
                         Value(s.requests - s.requests_inline, {{"thread", "worker"}})}));
  out->push_back(Family("coffer_transport_requests_parked_total",
                        "Requests run on the reactor that parked until their access entry was "
                        "durable (audit window 0), the reactor serving others meanwhile",
                        MetricType::Counter, {Value(s.requests_parked)}));
  out->push_back(Family("coffer_transport_output_timeouts_total",
                        "Connections dropped: their peer took no reply byte in the request timeout",
                        MetricType::Counter, {Value(s.output_timeouts)}));
  out->push_back(Family("coffer_transport_closed_after_refusals_total",
                        "Connections closed after too many refusals in a row", MetricType::Counter,
                        {Value(s.closed_after_refusals)}));
}

void AddKeyCache(const kms::KeyCacheStats& s, std::vector<MetricFamily>* out) {
  out->push_back(Family("coffer_key_cache_entries", "Data keys held unwrapped in the key cache",
                        MetricType::Gauge, {Value(static_cast<double>(s.entries))}));
  out->push_back(Family("coffer_key_cache_hits_total", "Key cache lookups answered from the cache",
                        MetricType::Counter, {Value(s.hits)}));
  out->push_back(Family("coffer_key_cache_misses_total",
                        "Key cache lookups that unwrapped the key in the HSM", MetricType::Counter,
                        {Value(s.misses)}));
  out->push_back(Family("coffer_key_cache_evictions_total",
                        "Keys evicted for room (expirations not included)", MetricType::Counter,
                        {Value(s.evictions)}));
  out->push_back(Family("coffer_key_cache_expirations_total", "Keys dropped at their TTL",
                        MetricType::Counter, {Value(s.expirations)}));
  const uint64_t lookups = s.hits + s.misses;
  out->push_back(Family("coffer_key_cache_hit_ratio",
                        "Hits over lookups since start (0 before the first lookup); use the "
                        "counters' rates for a recent ratio",
                        MetricType::Gauge,
                        {Value(lookups == 0 ? 0.0 : static_cast<double>(s.hits) / lookups)}));
}

void AddHsm(const hsm::TokenHealth& s, std::vector<MetricFamily>* out) {
  out->push_back(Family("coffer_hsm_connected", "1 while the token is connected and serving",
                        MetricType::Gauge, {Value(s.connected ? 1 : 0)}));
  out->push_back(Family("coffer_hsm_operations_total",
                        "Token operations (one or a few PKCS#11 calls each: an unwrap, a wrap, "
                        "a signature, a row MAC)",
                        MetricType::Counter, {Value(s.operations)}));
  out->push_back(Family("coffer_hsm_operation_errors_total", "Token operations that failed",
                        MetricType::Counter, {Value(s.operation_errors)}));
  out->push_back(Family("coffer_hsm_reconnects_total",
                        "Reconnects after a session, device or token error", MetricType::Counter,
                        {Value(s.reconnects)}));
}

void AddAuditLog(const kms::audit::AuditLogStats& s, std::vector<MetricFamily>* out) {
  out->push_back(Family("coffer_audit_writable",
                        "1 while the audit log takes writes (0: a write failed; it reopens itself "
                        "once the disk recovers)",
                        MetricType::Gauge, {Value(s.failed || s.closed ? 0 : 1)}));
  out->push_back(Family("coffer_audit_next_sequence", "The sequence number of the next entry",
                        MetricType::Gauge, {Value(s.next_sequence)}));
  out->push_back(Family("coffer_audit_checkpoints_total", "Signed checkpoints written since start",
                        MetricType::Counter, {Value(s.checkpoints_written)}));
  out->push_back(Family("coffer_audit_checkpoint_failures_total",
                        "Checkpoints skipped: the signer or the epoch key failed",
                        MetricType::Counter, {Value(s.checkpoint_failures)}));
  out->push_back(Family("coffer_audit_last_checkpoint_timestamp_seconds",
                        "When the newest checkpoint since start was committed (0: none)",
                        MetricType::Gauge, {Value(s.last_checkpoint_micros / 1e6)}));
  out->push_back(Family("coffer_audit_reopens_total",
                        "Times the log reopened itself after a failed write", MetricType::Counter,
                        {Value(s.reopens)}));
}

// Jobs by id and kind (the periodic ones also by name): never the dataset they work on.
void AddJobs(const std::vector<coffer::v1::JobStatus>& jobs, std::vector<MetricFamily>* out) {
  std::vector<ClientMetric> done;
  std::vector<ClientMetric> total;
  for (const coffer::v1::JobStatus& job : jobs) {
    std::vector<ClientMetric::Label> labels{{"id", std::to_string(job.id())},
                                            {"kind", coffer::v1::JobKind_Name(job.kind())},
                                            {"name", job.name()},
                                            {"state", coffer::v1::JobState_Name(job.state())}};
    done.push_back(Value(static_cast<double>(job.done()), labels));
    total.push_back(Value(static_cast<double>(job.total()), std::move(labels)));
  }
  out->push_back(Family("coffer_job_done_items", "Items a job has done (its last run, if periodic)",
                        MetricType::Gauge, std::move(done)));
  out->push_back(Family("coffer_job_total_items",
                        "Items a job found to do (0 when unknown or not counted)",
                        MetricType::Gauge, std::move(total)));
}

}  // namespace

// The figures read from the parts when scraped.
class DaemonMetrics::Pulled final : public prometheus::Collectable {
 public:
  void Set(MetricsSources sources) {
    std::lock_guard<std::mutex> lock(mu_);
    sources_ = std::move(sources);
  }

  std::vector<MetricFamily> Collect() const override {
    MetricsSources sources;
    {
      std::lock_guard<std::mutex> lock(mu_);
      sources = sources_;
    }
    std::vector<MetricFamily> out;
    if (sources.transport) AddTransport(sources.transport(), &out);
    if (sources.key_cache) AddKeyCache(sources.key_cache(), &out);
    if (sources.hsm) AddHsm(sources.hsm(), &out);
    if (sources.audit_log) AddAuditLog(sources.audit_log(), &out);
    if (sources.jobs) AddJobs(sources.jobs(), &out);
    return out;
  }

 private:
  mutable std::mutex mu_;
  MetricsSources sources_;
};

DaemonMetrics::DaemonMetrics(const daemon::OperationTable& operations)
    : registry_(std::make_shared<prometheus::Registry>()), pulled_(std::make_shared<Pulled>()) {
  auto& took = prometheus::BuildHistogram()
                   .Name("coffer_request_duration_seconds")
                   .Help(
                       "Service time of requests by operation and socket (from the request's "
                       "start on a worker to its last reply written to the socket buffer); "
                       "_count is the number of requests")
                   .Register(*registry_);
  errors_ = &prometheus::BuildCounter()
                 .Name("coffer_request_errors_total")
                 .Help("Requests answered with an error, by operation, socket and error code")
                 .Register(*registry_);
  refusals_ = &prometheus::BuildCounter()
                   .Name("coffer_refusals_total")
                   .Help(
                       "Refusals by socket and code, the services' and the transport's (as the "
                       "refusal audit counts them)")
                   .Register(*registry_);
  audit_batch_events_ = &prometheus::BuildHistogram()
                             .Name("coffer_audit_batch_events")
                             .Help("Access events per audit batch (one write and one fsync each)")
                             .Register(*registry_)
                             .Add({}, prometheus::Histogram::BucketBoundaries{
                                          1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024});
  audit_batch_seconds_ = &prometheus::BuildHistogram()
                              .Name("coffer_audit_batch_commit_seconds")
                              .Help("Time to write and fsync one access-audit batch")
                              .Register(*registry_)
                              .Add({}, RequestBuckets());
  auto add_row = [&](const std::string& name) {
    PerOperation row{name, {}};
    for (daemon::SocketKind socket : {daemon::SocketKind::kData, daemon::SocketKind::kAdmin}) {
      row.took[static_cast<size_t>(socket)] =
          &took.Add({{"operation", name}, {"socket", SocketLabel(socket)}}, RequestBuckets());
    }
    rows_.push_back(row);
  };
  add_row("unknown");
  for (const daemon::OperationRow& row : operations.rows()) {
    const auto op = static_cast<size_t>(row.op);
    if (op >= kIndexSize || row_index_[op] != 0) continue;
    row_index_[op] = rows_.size();
    add_row(std::string(row.name.view()));
  }
}

DaemonMetrics::~DaemonMetrics() = default;

void DaemonMetrics::SetSources(MetricsSources sources) { pulled_->Set(std::move(sources)); }

const DaemonMetrics::PerOperation& DaemonMetrics::Row(::coffer::v1::Request::OpCase op) const {
  const auto index = static_cast<size_t>(op);
  return rows_[index < kIndexSize ? row_index_[index] : 0];
}

void DaemonMetrics::Handled(::coffer::v1::Request::OpCase op, daemon::SocketKind socket,
                            ErrorCode result, std::chrono::steady_clock::duration took) {
  const PerOperation& row = Row(op);
  row.took[static_cast<size_t>(socket)]->Observe(Seconds(took));
  if (result == ErrorCode::kOk) return;
  errors_
      ->Add({{"operation", row.name},
             {"socket", SocketLabel(socket)},
             {"code", std::string(ErrorCodeName(result))}})
      .Increment();
}

void DaemonMetrics::Refused(daemon::SocketKind socket, ErrorCode code) {
  refusals_->Add({{"socket", SocketLabel(socket)}, {"code", std::string(ErrorCodeName(code))}})
      .Increment();
}

void DaemonMetrics::AuditBatchWritten(size_t events, std::chrono::steady_clock::duration took) {
  audit_batch_events_->Observe(static_cast<double>(events));
  audit_batch_seconds_->Observe(Seconds(took));
}

std::vector<std::shared_ptr<prometheus::Collectable>> DaemonMetrics::Collectables() const {
  return {registry_, pulled_};
}

std::string DaemonMetrics::Text() const {
  std::vector<MetricFamily> families = registry_->Collect();
  std::vector<MetricFamily> pulled = pulled_->Collect();
  families.insert(families.end(), std::make_move_iterator(pulled.begin()),
                  std::make_move_iterator(pulled.end()));
  return prometheus::TextSerializer().Serialize(families);
}

MetricsEndpoint::MetricsEndpoint(std::unique_ptr<prometheus::Exposer> exposer, std::string endpoint)
    : exposer_(std::move(exposer)), endpoint_(std::move(endpoint)) {}

MetricsEndpoint::~MetricsEndpoint() = default;

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& listen, const DaemonMetrics& metrics) {
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // Two threads: a scrape is rare, and a second one keeps a slow scraper from blocking others.
    exposer = std::make_unique<prometheus::Exposer>(listen, 2);
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kIoError, "metrics_listen " + listen + ": cannot listen there (" +
                                              e.what() + "); is the port in use?");
  }
  std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return MakeError(ErrorCode::kIoError, "metrics_listen " + listen + ": no port was bound");
  }
  for (const auto& collectable : metrics.Collectables()) exposer->RegisterCollectable(collectable);
  const std::string host = listen.substr(0, listen.rfind(':'));
  return std::unique_ptr<MetricsEndpoint>(
      new MetricsEndpoint(std::move(exposer), host + ":" + std::to_string(ports.front())));
}

}  // namespace coffer::cofferd
