#include "kms/keyctl/job_commands.h"

#include <CLI/CLI.hpp>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "crypto/base/status.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

namespace {

// The damaged items a job skipped (docs/daemon.md, "Damaged items"), one line each.
void PrintDamaged(CommandContext& ctx, uint64_t id, const pb::JobStatus& job) {
  if (job.damaged() == 0) return;
  ctx.out() << "job " << id << ": " << job.damaged()
            << " damaged item(s) skipped (stored bytes no longer open):\n";
  for (const pb::DamagedItem& item : job.damaged_items()) {
    ctx.out() << "  " << item.ref() << "  " << item.code_name() << "  " << item.column_family()
              << '\n';
  }
  if (static_cast<uint64_t>(job.damaged_items_size()) < job.damaged()) {
    ctx.out() << "  (" << job.damaged() - job.damaged_items_size() << " more not listed)\n";
  }
}

void PrintJobs(CommandContext& ctx, const google::protobuf::RepeatedPtrField<pb::JobStatus>& jobs) {
  const int64_t now = NowMicros();
  Table table({"ID", "KIND", "STATE", "DATASET", "PROGRESS", "RATE/S", "ETA", "STARTED", "NEXT",
               "DAMAGED"});
  for (const pb::JobStatus& job : jobs) {
    std::string progress = job.total() > 0
                               ? std::to_string(job.done()) + "/" + std::to_string(job.total())
                               : std::to_string(job.done());
    std::string rate = absl::StrFormat("%.1f", job.rate_per_second());
    std::string kind = job.name().empty() ? JobKindName(job.kind()) : job.name();
    std::string state = JobStateName(job.state());
    if (job.state() == pb::JOB_FAILED && job.has_error()) state += ": " + job.error().code_name();
    table.AddRow({std::to_string(job.id()), kind, state,
                  job.dataset().empty() ? "-" : job.dataset(), progress, rate,
                  job.eta_seconds() < 0 ? "-" : FormatDuration(job.eta_seconds()),
                  FormatAge(job.started_micros(), now), FormatAge(job.next_run_micros(), now),
                  std::to_string(job.damaged())});
  }
  table.Print(ctx.out());
  for (const pb::JobStatus& job : jobs) PrintDamaged(ctx, job.id(), job);
}

void PrintJobResult(CommandContext& ctx, const pb::JobStatus& job) {
  if (ctx.json()) return PrintJson(ctx, ProtoToJson(job));
  ctx.out() << JobProgressLine(job) << '\n';
  if (job.kind() == pb::JOB_SCRUB) {
    ctx.out() << "items that failed authentication: " << job.failures() << '\n';
  }
  PrintDamaged(ctx, job.id(), job);
  if (job.version_counts_size() > 0) {
    Table table({"PURPOSE", "VERSION", "ITEMS"});
    for (const pb::VersionCount& c : job.version_counts()) {
      table.AddRow(
          {PurposeName(c.purpose()), std::to_string(c.version()), std::to_string(c.items())});
    }
    table.Print(ctx.out());
  }
}

}  // namespace

absl::Status JobStart(CommandContext& ctx, pb::JobKind kind, const std::string& dataset,
                      uint32_t max_items_per_second, bool wait) {
  pb::Request request;
  auto* r = request.mutable_job_start();
  r->set_kind(kind);
  r->set_dataset(dataset);
  r->set_max_items_per_second(max_items_per_second);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::JobStatus& started = response.job_start();
  if (wait) {
    COFFER_ASSIGN_OR_RETURN(pb::JobStatus done, ctx.WaitForJob(started.id()));
    PrintJobResult(ctx, done);
    return absl::OkStatus();
  }
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(started));
  } else {
    ctx.out() << "started " << JobKindName(kind) << " job " << started.id()
              << (dataset.empty() ? "" : " on " + dataset) << "; follow it with: keyctl "
              << (kind == pb::JOB_REINDEX ? "reindex" : "reencrypt") << " wait " << started.id()
              << '\n';
  }
  return absl::OkStatus();
}

absl::Status JobStatus(CommandContext& ctx, uint64_t id) {
  pb::Request request;
  request.mutable_job_status()->set_id(id);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.job_status()));
  } else {
    PrintJobs(ctx, response.job_status().jobs());
  }
  return absl::OkStatus();
}

absl::Status JobWait(CommandContext& ctx, uint64_t id) {
  COFFER_ASSIGN_OR_RETURN(pb::JobStatus done, ctx.WaitForJob(id));
  PrintJobResult(ctx, done);
  return absl::OkStatus();
}

absl::Status DaemonMetrics(CommandContext& ctx) {
  pb::Request request;
  request.mutable_metrics();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.metrics()));
    return absl::OkStatus();
  }
  ctx.out() << response.metrics().text();
  return absl::OkStatus();
}

absl::Status DaemonStatus(CommandContext& ctx) {
  pb::Request request;
  request.mutable_status();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::StatusResponse& s = response.status();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(s));
    return absl::OkStatus();
  }
  const int64_t now = NowMicros();
  Table table({"cofferd", s.version()});
  table.AddRow({"started", FormatTimeWithAge(s.started_micros(), now)});
  table.AddRow({"datasets", std::to_string(s.datasets())});
  table.AddRow({"durability", s.durability()});
  table.AddRow({"data socket", s.data_socket()});
  table.AddRow({"admin socket", s.admin_socket()});
  table.AddRow({"metrics endpoint", s.metrics_endpoint().empty()
                                        ? std::string("off (keyctl metrics prints the same text)")
                                        : "http://" + s.metrics_endpoint() + "/metrics"});
  table.AddRow({"connections open", std::to_string(s.connections_open())});
  table.AddRow({"connections total", std::to_string(s.connections_total())});
  table.AddRow({"requests total", std::to_string(s.requests_total())});
  table.AddRow({"requests refused", std::to_string(s.requests_refused())});
  table.AddRow({"requests slowed", std::to_string(s.requests_slowed())});
  table.AddRow({"audit entries", std::to_string(s.audit_entries())});
  const pb::TransportStatus& t = s.transport();
  table.AddRow({"buffered bytes in / out", std::to_string(t.buffered_input_bytes()) + " / " +
                                               std::to_string(t.buffered_output_bytes())});
  table.AddRow({"replies waiting for readers", std::to_string(t.sends_waiting())});
  table.AddRow({"busy: slots / uid cap / bytes", std::to_string(t.busy_connection_limit()) + " / " +
                                                     std::to_string(t.busy_uid_connections()) +
                                                     " / " +
                                                     std::to_string(t.busy_buffered_bytes())});
  table.AddRow({"requests on the reactor / in all",
                std::to_string(t.requests_inline()) + " / " + std::to_string(t.requests())});
  table.AddRow({"reactor requests parked for their audit", std::to_string(t.requests_parked())});
  table.AddRow({"dropped slow readers", std::to_string(t.output_timeouts())});
  table.AddRow({"closed after refusals", std::to_string(t.closed_after_refusals())});
  if (s.has_hsm()) {
    const pb::HsmStatus& h = s.hsm();
    table.AddRow({"hsm", (h.connected() ? "connected" : "NOT CONNECTED") +
                             (h.module().empty() ? std::string() : " (" + h.module() + ")")});
    table.AddRow({"hsm reconnects / re-initialisations / failed",
                  std::to_string(h.reconnects()) + " / " + std::to_string(h.reinitializations()) +
                      " / " + std::to_string(h.failed_reconnects())});
    if (!h.last_error().empty()) table.AddRow({"hsm last error", h.last_error()});
  }
  if (s.has_audit()) {
    const pb::AuditStatus& a = s.audit();
    table.AddRow({"audit log", a.writable() ? "writable"
                                            : "NOT WRITABLE (a write failed: free the disk; it "
                                              "reopens itself on the next request)"});
    table.AddRow(
        {"audit last checkpoint", a.last_checkpoint_micros() == 0
                                      ? std::string("none since start")
                                      : FormatTimeWithAge(a.last_checkpoint_micros(), now)});
    table.AddRow({"audit checkpoints / failed / anchors failed",
                  std::to_string(a.checkpoints_written()) + " / " +
                      std::to_string(a.checkpoint_failures()) + " / " +
                      std::to_string(a.anchor_failures())});
    table.AddRow({"audit reopens / failed",
                  std::to_string(a.reopens()) + " / " + std::to_string(a.reopen_failures())});
    table.AddRow({"audit failure policy (data requests)",
                  a.access_failure() == pb::SERVE_AND_COUNT
                      ? "serve-and-count: " + std::to_string(a.served_unaudited()) +
                            " served unaudited since start, " +
                            std::to_string(a.unaudited_pending()) + " not yet written"
                      : std::string("fail-closed")});
  }
  table.Print(ctx.out());
  if (s.jobs_size() > 0) {
    ctx.out() << '\n';
    PrintJobs(ctx, s.jobs());
  }
  return absl::OkStatus();
}

namespace {

// The texts of one dataset job's command group: `keyctl NAME start|status|wait`.
struct JobGroupTexts {
  const char* name;
  const char* about;
  const char* example;
  const char* start_about;
  const char* wait_about;
};

void AddJobGroup(CLI::App& app, CommandLine& line, pb::JobKind kind, const JobGroupTexts& texts) {
  struct Values {
    std::string dataset;
    uint32_t rate = 0;
    bool wait = false;
    uint64_t job_id = 0;
  };
  Values& v = line.NewValues<Values>();
  const std::string name = texts.name;
  CLI::App* group = AddCommandGroup(app, name, texts.about, texts.example);
  CLI::App* start = AddCommand(group, "start", texts.start_about,
                               "keyctl " + name + " start crm/contacts --rate 500");
  start->add_option("DATASET", v.dataset, "Dataset name")->required();
  start->add_option("--rate", v.rate, "Items per second at most (default: unlimited)");
  start->add_flag("--wait", v.wait, "Follow the job to its end, showing progress");
  line.Runs(start, [&v, kind](CommandContext& ctx) {
    return JobStart(ctx, kind, v.dataset, v.rate, v.wait);
  });
  CLI::App* status = AddCommand(group, "status", "Show one job, or every job the daemon knows",
                                "keyctl " + name + " status 7");
  status->add_option("ID", v.job_id, "Job id (default: every job)");
  line.Runs(status, [&v](CommandContext& ctx) { return JobStatus(ctx, v.job_id); });
  CLI::App* wait = AddCommand(group, "wait", texts.wait_about, "keyctl " + name + " wait 7");
  wait->add_option("ID", v.job_id, "Job id")->required();
  line.Runs(wait, [&v](CommandContext& ctx) { return JobWait(ctx, v.job_id); });
}

}  // namespace

void AddJobCommands(CLI::App& app, CommandLine& line) {
  AddJobGroup(app, line, pb::JOB_REENCRYPT,
              {"reencrypt", "Move a dataset's data onto its primary key versions",
               "keyctl reencrypt start crm/contacts --wait", "Start a re-encryption job",
               "Wait for a job (re-encryption or scrub) to end, showing rate and ETA"});
  AddJobGroup(app, line, pb::JOB_REINDEX,
              {"reindex",
               "Move a dataset's items onto its primary lookup version (after a lookup rotation)",
               "keyctl reindex start crm/contacts --wait",
               "Start (or resume) a re-index job; a lookup rotation starts one by itself",
               "Wait for a job to end, showing rate and ETA, then the items per lookup version"});

  struct Values {
    std::string dataset;
    bool wait = false;
  };
  Values& v = line.NewValues<Values>();
  CLI::App* scrub =
      AddCommand(&app, "scrub",
                 "Authenticate every record and segment (one dataset or all); changes "
                 "nothing",
                 "keyctl scrub crm/contacts --wait");
  scrub->add_option("DATASET", v.dataset, "Dataset name (default: every dataset)");
  scrub->add_flag("--wait", v.wait, "Follow the job to its end, showing progress");
  line.Runs(scrub, [&v](CommandContext& ctx) {
    return JobStart(ctx, pb::JOB_SCRUB, v.dataset, 0, v.wait);
  });
}

namespace {

// `keyctl job run NAME`: the periodic jobs by the names cofferd registers them under.
const std::map<std::string, pb::JobKind>& PeriodicJobs() {
  static const auto* const kJobs = new std::map<std::string, pb::JobKind>{
      {"rotation", pb::JOB_ROTATION},     {"bin-retention", pb::JOB_BIN_RETENTION},
      {"backup", pb::JOB_BACKUP},         {"upload-cleanup", pb::JOB_UPLOAD_CLEANUP},
      {"scrub", pb::JOB_SCHEDULED_SCRUB}, {"reencrypt", pb::JOB_SCHEDULED_REENCRYPT},
  };
  return *kJobs;
}

// Runs a periodic job now; the daemon answers after the run.
absl::Status JobRun(CommandContext& ctx, const std::string& name) {
  pb::Request request;
  request.mutable_job_start()->set_kind(PeriodicJobs().at(name));
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::JobStatus& ran = response.job_start();
  if (ran.state() == pb::JOB_FAILED) return JobError(ran);
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(ran));
    return absl::OkStatus();
  }
  ctx.out() << "ran " << name << " (run " << ran.done() << " since the daemon started)\n";
  return absl::OkStatus();
}

}  // namespace

void AddJobRunCommand(CLI::App& app, CommandLine& line) {
  std::string& name = line.NewValues<std::string>();
  CLI::App* group =
      AddCommandGroup(app, "job", "Background jobs of the daemon", "keyctl job run rotation");
  CLI::App* run = AddCommand(group, "run",
                             "Run a periodic job now, as its next scheduled run would "
                             "(rotation: due rotations, destructions and receipts)",
                             "keyctl job run rotation");
  std::vector<std::string> names;
  for (const auto& [n, kind] : PeriodicJobs()) names.push_back(n);
  run->add_option("NAME", name, "rotation, bin-retention, backup, upload-cleanup or scrub")
      ->required()
      ->check(CLI::IsMember(names));
  line.Runs(run, [&name](CommandContext& ctx) { return JobRun(ctx, name); });
}

void AddStatusCommand(CLI::App& app, CommandLine& line) {
  CLI::App* status = AddCommand(&app, "status", "The daemon's version, sockets, counters and jobs",
                                "keyctl status");
  line.Runs(status, [](CommandContext& ctx) { return DaemonStatus(ctx); });
  CLI::App* metrics =
      AddCommand(&app, "metrics",
                 "The daemon's metrics in the Prometheus text format (what its metrics endpoint "
                 "serves; docs/daemon.md, \"Metrics\")",
                 "keyctl metrics | grep coffer_request_duration_seconds_count");
  line.Runs(metrics, [](CommandContext& ctx) { return DaemonMetrics(ctx); });
}

}  // namespace coffer::keyctl
