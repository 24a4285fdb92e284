#include "kms/keyctl/audit_commands.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "kms/audit/anchor_check.h"
#include "kms/audit/verifier.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

namespace {

void PrintAudit(CommandContext& ctx, const std::vector<pb::AuditRecord>& entries) {
  Table table({"SEQ", "TIME", "KIND", "UID", "PID", "SOCKET", "DATASET", "PURPOSE", "VERSION",
               "RESULT", "COUNT", "DETAIL"});
  for (const pb::AuditRecord& e : entries) {
    std::string dataset = !e.dataset().empty()      ? e.dataset()
                          : e.dataset_handle() != 0 ? absl::StrCat("#", e.dataset_handle())
                                                    : "-";
    std::string result = e.result_code() == 0
                             ? "OK"
                             : std::string(ErrorCodeName(static_cast<ErrorCode>(e.result_code())));
    table.AddRow({std::to_string(e.sequence()), FormatLocalTime(e.time_micros()), e.kind(),
                  std::to_string(e.uid()), std::to_string(e.pid()),
                  e.socket().empty() ? "-" : e.socket(), dataset,
                  e.purpose() == pb::PURPOSE_UNSPECIFIED ? "-" : PurposeName(e.purpose()),
                  e.key_version() == 0 ? "-" : std::to_string(e.key_version()), result,
                  std::to_string(e.record_count()), e.detail().empty() ? "-" : e.detail()});
  }
  table.Print(ctx.out());
}

void PrintAuditJson(CommandContext& ctx, const std::vector<pb::AuditRecord>& entries, bool more) {
  nlohmann::json array = nlohmann::json::array();
  for (const pb::AuditRecord& e : entries) array.push_back(ProtoToJson(e));
  PrintJson(ctx, {{"entries", std::move(array)}, {"more", more}});
}

// Where a walk over the log starts and how far it goes.
struct AuditPaging {
  uint64_t after = 0;  // entries after this sequence
  uint64_t limit = 0;  // at most this many entries; 0: every matching entry
};

// Calls `each` with every entry matching `filter` (its limit aside; `paging` says how many),
// oldest first, a page at a time. Returns whether more entries match than `each` was given.
absl::StatusOr<bool> ForEachAuditEntry(CommandContext& ctx, const AuditFilter& filter,
                                       const AuditPaging& paging,
                                       const std::function<void(const pb::AuditRecord&)>& each) {
  constexpr uint64_t kPage = 10'000;
  uint64_t after = paging.after;
  uint64_t given = 0;
  while (paging.limit == 0 || given < paging.limit) {
    pb::Request request;
    auto* q = request.mutable_audit_query();
    q->set_since_micros(filter.since_micros);
    q->set_until_micros(filter.until_micros);
    q->set_dataset(filter.dataset);
    if (filter.caller_uid) q->set_caller_uid(*filter.caller_uid);
    q->set_after_sequence(after);
    q->set_limit(
        static_cast<uint32_t>(paging.limit == 0 ? kPage : std::min(kPage, paging.limit - given)));
    COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
    for (const pb::AuditRecord& e : response.audit_query().entries()) each(e);
    given += response.audit_query().entries_size();
    if (!response.audit_query().more() || response.audit_query().entries_size() == 0) return false;
    after = response.audit_query().entries().rbegin()->sequence();
  }
  return true;  // stopped at the limit with more matching
}

// One caller's reads, for who-read.
struct Reader {
  uint64_t records = 0;      // records read (record_get; record_list ids; record_exists)
  uint64_t attachments = 0;  // attachment reads (downloads, metadata)
  uint64_t reidentified = 0;
  uint64_t unclassified = 0;  // reads an older cofferd logged without a purpose
  int64_t first_micros = 0;
  int64_t last_micros = 0;
};

}  // namespace

absl::Status AuditWhoRead(CommandContext& ctx, const AuditFilter& filter) {
  std::map<uint32_t, Reader> readers;
  COFFER_RETURN_IF_ERROR(ForEachAuditEntry(ctx, filter, {}, [&](const pb::AuditRecord& e) {
                           const bool read = e.kind() == "ACCESS_READ" || e.kind() == "CANARY_READ";
                           const bool reidentify = e.kind() == "ACCESS_REIDENTIFY";
                           if ((!read && !reidentify) || e.result_code() != 0 ||
                               e.socket() != "data")
                             return;
                           Reader& r = readers[e.uid()];
                           if (reidentify) {
                             r.reidentified += e.record_count();
                           } else if (e.purpose() == pb::PURPOSE_RECORDS) {
                             r.records += e.record_count();
                           } else if (e.purpose() == pb::PURPOSE_ATTACHMENTS) {
                             r.attachments += e.record_count();
                           } else {
                             r.unclassified += e.record_count();
                           }
                           if (r.first_micros == 0) r.first_micros = e.time_micros();
                           r.last_micros = e.time_micros();
                         }).status());
  if (ctx.json()) {
    nlohmann::json array = nlohmann::json::array();
    for (const auto& [uid, r] : readers) {
      array.push_back({{"uid", uid},
                       {"records", r.records},
                       {"attachments", r.attachments},
                       {"reidentified", r.reidentified},
                       {"unclassified", r.unclassified},
                       {"first_micros", r.first_micros},
                       {"last_micros", r.last_micros}});
    }
    PrintJson(ctx, {{"dataset", filter.dataset}, {"readers", std::move(array)}});
    return absl::OkStatus();
  }
  if (readers.empty()) {
    ctx.out() << "no successful reads of " << filter.dataset << " in that period\n";
    return absl::OkStatus();
  }
  const int64_t now = NowMicros();
  Table table({"UID", "RECORDS", "ATTACHMENTS", "RE-IDENTIFIED", "UNCLASSIFIED", "FIRST", "LAST"});
  for (const auto& [uid, r] : readers) {
    table.AddRow({std::to_string(uid), std::to_string(r.records), std::to_string(r.attachments),
                  std::to_string(r.reidentified), std::to_string(r.unclassified),
                  FormatTimeWithAge(r.first_micros, now), FormatTimeWithAge(r.last_micros, now)});
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

absl::Status AuditExport(CommandContext& ctx, const AuditFilter& filter) {
  return ForEachAuditEntry(
             ctx, filter, {},
             [&](const pb::AuditRecord& e) { ctx.out() << ProtoToJson(e).dump() << '\n'; })
      .status();
}

absl::Status AuditShow(CommandContext& ctx, uint32_t limit) {
  pb::Request status_request;
  status_request.mutable_status();
  COFFER_ASSIGN_OR_RETURN(pb::Response status, ctx.Call(std::move(status_request)));
  const uint64_t next = status.status().audit_entries();
  // Start just before the newest `limit` entries and page to the end, keeping the last `limit`
  // (the log grows while we read: the status and these queries may be audited).
  AuditPaging paging;
  paging.after = next > limit ? next - limit - 1 : 0;
  std::deque<pb::AuditRecord> newest;
  COFFER_RETURN_IF_ERROR(
      ForEachAuditEntry(ctx, AuditFilter{}, paging, [&](const pb::AuditRecord& e) {
        newest.push_back(e);
        if (newest.size() > limit) newest.pop_front();
      }).status());
  std::vector<pb::AuditRecord> entries(newest.begin(), newest.end());
  if (ctx.json()) {
    PrintAuditJson(ctx, entries, false);
  } else {
    PrintAudit(ctx, entries);
  }
  return absl::OkStatus();
}

absl::Status AuditSearch(CommandContext& ctx, const AuditFilter& filter) {
  std::vector<pb::AuditRecord> entries;
  AuditPaging paging;
  paging.limit = filter.limit;  // at least 1 (the command line checks it)
  COFFER_ASSIGN_OR_RETURN(
      const bool more, ForEachAuditEntry(ctx, filter, paging,
                                         [&](const pb::AuditRecord& e) { entries.push_back(e); }));
  if (ctx.json()) {
    PrintAuditJson(ctx, entries, more);
    return absl::OkStatus();
  }
  PrintAudit(ctx, entries);
  if (more) {
    ctx.out() << "(more entries match: raise --limit or narrow --since/--until)\n";
  }
  return absl::OkStatus();
}

absl::Status AuditVerify(CommandContext& ctx) {
  pb::Request request;
  request.mutable_audit_verify();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::AuditVerifyResponse& v = response.audit_verify();
  if (ctx.json()) {
    nlohmann::json json = ProtoToJson(v);
    json["verified"] = true;
    PrintJson(ctx, json);
  } else {
    ctx.out() << "audit log verified: " << v.entries() << " entries, " << v.checkpoints()
              << " signed checkpoints, last sequence " << v.last_sequence() << '\n';
  }
  return absl::OkStatus();
}

namespace {

std::string_view AccessFailureText(pb::AccessAuditFailure policy) {
  switch (policy) {
    case pb::SERVE_AND_COUNT:
      return "serve-and-count";
    case pb::FAIL_CLOSED:
    case pb::ACCESS_AUDIT_FAILURE_UNSPECIFIED:  // a daemon from before the policy fails closed
    default:
      return "fail-closed";
  }
}

}  // namespace

absl::Status AuditPolicy(CommandContext& ctx, const std::string& access_failure) {
  pb::Request request;
  if (access_failure.empty()) {
    request.mutable_status();
    COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
    const pb::AuditStatus& a = response.status().audit();
    if (ctx.json()) {
      nlohmann::json json;
      json["access_failure"] = std::string(AccessFailureText(a.access_failure()));
      json["served_unaudited"] = a.served_unaudited();
      json["unaudited_pending"] = a.unaudited_pending();
      PrintJson(ctx, json);
      return absl::OkStatus();
    }
    ctx.out() << "access-event failure policy: " << AccessFailureText(a.access_failure()) << '\n'
              << "served while the audit log was failing, since start: " << a.served_unaudited()
              << " (not yet written to the log: " << a.unaudited_pending() << ")\n";
    return absl::OkStatus();
  }
  request.mutable_audit_policy_set()->set_access_failure(
      access_failure == "serve-and-count" ? pb::SERVE_AND_COUNT : pb::FAIL_CLOSED);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::AuditPolicySetResponse& r = response.audit_policy_set();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(r));
    return absl::OkStatus();
  }
  ctx.out() << "access-event failure policy: " << AccessFailureText(r.access_failure()) << " (was "
            << AccessFailureText(r.previous()) << ")\n";
  return absl::OkStatus();
}

struct OfflineVerify {
  std::string public_key_file;
  std::string audit_directory;
  std::string anchors_file;  // "" = none
  std::optional<uint64_t> min_sequence;
};

absl::Status AuditVerifyOffline(CommandContext& ctx, const OfflineVerify& request) {
  const std::string& public_key_file = request.public_key_file;
  const std::string& audit_directory = request.audit_directory;
  std::ifstream in(public_key_file, std::ios::binary);
  if (!in) {
    return MakeError(ErrorCode::kNotFound, "cannot read the audit public key " + public_key_file);
  }
  std::stringstream pem;
  pem << in.rdbuf();
  kms::audit::VerifyOptions options;
  options.public_key_pem = pem.str();
  options.expected_min_sequence = request.min_sequence;
  if (!request.anchors_file.empty()) {
    COFFER_ASSIGN_OR_RETURN(options.anchors, kms::audit::ReadAnchorsFile(request.anchors_file));
    if (options.anchors.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "no anchor line in " + request.anchors_file +
                           " (expected lines with \"coffer-audit-anchor v1\")");
    }
  }
  absl::StatusOr<kms::audit::VerifyReport> report =
      kms::audit::VerifyAuditLog(audit_directory, options);
  if (!report.ok()) {
    return MakeError(ErrorCodeOf(report.status()), "cannot verify the audit log in " +
                                                       audit_directory + ": " +
                                                       std::string(report.status().message()));
  }
  if (!report->ok()) {
    absl::Status status = report->ToStatus();
    return MakeError(ErrorCodeOf(status),
                     "audit log in " + audit_directory +
                         " failed verification: " + std::string(status.message()));
  }
  if (ctx.json()) {
    nlohmann::json json = {{"verified", true},
                           {"directory", audit_directory},
                           {"entries", report->entries},
                           {"checkpoints", report->checkpoints_verified},
                           {"anchors", report->anchors_verified},
                           {"closed_cleanly", report->closed_cleanly},
                           {"key_db_generation", report->key_db_generation},
                           {"warnings", report->warnings}};
    json["last_sequence"] =
        report->last_sequence ? nlohmann::json(*report->last_sequence) : nlohmann::json(nullptr);
    json["uncovered_from"] =
        report->uncovered_from ? nlohmann::json(*report->uncovered_from) : nlohmann::json(nullptr);
    PrintJson(ctx, json);
    return absl::OkStatus();
  }
  ctx.out() << "audit log " << audit_directory << " verified offline: " << report->entries
            << " entries, " << report->checkpoints_verified << " signed checkpoints, last sequence "
            << (report->last_sequence ? std::to_string(*report->last_sequence) : "-");
  if (report->anchors_verified > 0) {
    ctx.out() << ", reaches and matches " << report->anchors_verified << " anchors";
  }
  ctx.out() << '\n';
  // cofferd refuses a key DB older than this (docs/audit.md, "Key DB generation").
  ctx.out() << "newest key DB generation recorded: "
            << (report->key_db_generation > 0 ? std::to_string(report->key_db_generation)
                                              : "none (no checkpoint of format 2)")
            << '\n';
  if (report->uncovered_from) {
    ctx.out() << "warning: entries from " << *report->uncovered_from
              << " on are not yet covered by a signed checkpoint\n";
  }
  for (const std::string& w : report->warnings) ctx.out() << "warning: " << w << '\n';
  return absl::OkStatus();
}

namespace {

struct AuditValues {
  uint32_t limit = 100;
  std::string since, until, dataset;
  uint32_t caller_uid = 0;
  bool offline = false;
  std::string public_key, audit_dir = "./var/audit";
  std::string anchors;
  uint64_t min_sequence = 0;
  std::string access_failure;
};

// --since and --until on `command`.
void AddPeriod(CLI::App* command, AuditValues& v, const std::string& since_help) {
  command->add_option("--since", v.since, since_help)->check(TimeValidator());
  command->add_option("--until", v.until, "Until: same forms as --since")->check(TimeValidator());
}

// The filter the options of a search, who-read or export give (`caller`: its --caller, if any).
AuditFilter FilterOf(const AuditValues& v, const CLI::Option* caller) {
  AuditFilter filter;
  const int64_t now = NowMicros();
  if (!v.since.empty()) filter.since_micros = *ParseTimePoint(v.since, now);
  if (!v.until.empty()) filter.until_micros = *ParseTimePoint(v.until, now);
  filter.dataset = v.dataset;
  if (caller != nullptr && caller->count() > 0) filter.caller_uid = v.caller_uid;
  filter.limit = v.limit;
  return filter;
}

void AddVerifyCommand(CLI::App* audit, CommandLine& line, AuditValues& v) {
  CLI::App* verify = AddCommand(
      audit, "verify",
      "Verify the hash chain, MACs and checkpoint signatures of the whole log (--offline: "
      "locally, without the daemon, with the checkpoint public key)",
      "keyctl audit verify --offline --public-key audit-public-key.pem --audit-dir "
      "/srv/coffer/audit");
  CLI::Option* offline =
      verify->add_flag("--offline", v.offline, "Verify the log directory here, without cofferd");
  CLI::Option* public_key =
      verify->add_option("--public-key", v.public_key, "Checkpoint public key (PEM), --offline");
  verify->add_option("--audit-dir", v.audit_dir, "Audit log directory (default ./var/audit)")
      ->needs(offline);
  CLI::Option* anchors = verify->add_option(
      "--anchors", v.anchors,
      "File of anchor lines kept off the machine (journalctl -t cofferd-audit -o cat): the log "
      "must reach and match each, --offline");
  CLI::Option* min_sequence = verify->add_option(
      "--min-sequence", v.min_sequence,
      "The log is known to have reached this sequence: refuse a log that ends before it, "
      "--offline");
  public_key->needs(offline);
  anchors->needs(offline);
  min_sequence->needs(offline);
  verify->callback([&v, &line, offline, public_key, anchors, min_sequence] {
    if (offline->count() == 0) {
      line.Choose([](CommandContext& ctx) { return AuditVerify(ctx); });
      return;
    }
    if (public_key->count() == 0) {
      throw CLI::ValidationError("audit verify", "--offline needs --public-key FILE");
    }
    OfflineVerify request{v.public_key, v.audit_dir, v.anchors, std::nullopt};
    if (anchors->count() == 0) request.anchors_file.clear();
    if (min_sequence->count() > 0) request.min_sequence = v.min_sequence;
    line.Choose([request](CommandContext& ctx) { return AuditVerifyOffline(ctx, request); });
  });
}

}  // namespace

void AddAuditCommands(CLI::App& app, CommandLine& line) {
  AuditValues& v = line.NewValues<AuditValues>();
  CLI::App* audit = AddCommandGroup(app, "audit", "Read and verify the audit log",
                                    "keyctl audit search --dataset crm/contacts --since 7d");
  CLI::App* show =
      AddCommand(audit, "show", "Show the newest entries", "keyctl audit show --limit 50");
  show->add_option("--limit", v.limit, "How many entries (default 100)")
      ->check(CLI::Range(uint32_t{1}, uint32_t{100000}));
  line.Runs(show, [&v](CommandContext& ctx) { return AuditShow(ctx, v.limit); });

  CLI::App* search = AddCommand(audit, "search", "Find entries, oldest first",
                                "keyctl audit search --dataset crm/contacts --since 2026-01-01 "
                                "--caller 1000");
  AddPeriod(search, v, "From: YYYY-MM-DD[THH:MM[:SS]] local, or e.g. 7d ago");
  search->add_option("--dataset", v.dataset, "Only entries of this dataset");
  CLI::Option* caller = search->add_option("--caller", v.caller_uid, "Only this caller's uid");
  search->add_option("--limit", v.limit, "At most this many entries (default 100)")
      ->check(CLI::Range(uint32_t{1}, uint32_t{100000}));
  search->callback([&v, &line, caller] {
    AuditFilter filter = FilterOf(v, caller);
    line.Choose([filter](CommandContext& ctx) { return AuditSearch(ctx, filter); });
  });

  CLI::App* who_read = AddCommand(
      audit, "who-read",
      "Breach scope: who read a dataset, per caller uid (records, attachments, re-identified "
      "pseudonyms, first and last read)",
      "keyctl audit who-read crm/contacts --since 2026-11-01 --until 2026-11-08");
  who_read->add_option("DATASET", v.dataset, "Dataset name")->required();
  AddPeriod(who_read, v, "From: same forms as audit search");
  who_read->callback([&v, &line] {
    AuditFilter filter = FilterOf(v, nullptr);
    line.Choose([filter](CommandContext& ctx) { return AuditWhoRead(ctx, filter); });
  });

  CLI::App* export_entries = AddCommand(
      audit, "export", "Every matching entry as one JSON object per line, oldest first (a SIEM)",
      "keyctl audit export --since 1d > audit.jsonl");
  AddPeriod(export_entries, v, "From: same forms as audit search");
  export_entries->add_option("--dataset", v.dataset, "Only entries of this dataset");
  CLI::Option* export_caller =
      export_entries->add_option("--caller", v.caller_uid, "Only this caller's uid");
  export_entries->callback([&v, &line, export_caller] {
    AuditFilter filter = FilterOf(v, export_caller);
    line.Choose([filter](CommandContext& ctx) { return AuditExport(ctx, filter); });
  });

  AddVerifyCommand(audit, line, v);

  CLI::App* policy = AddCommand(
      audit, "policy",
      "Show or set what data requests do when the audit log cannot take their entries: "
      "fail-closed (refused, the default) or serve-and-count (served, counted, written once the "
      "log recovers; needs a second admin)",
      "keyctl audit policy --access-failure serve-and-count --code 123456");
  policy
      ->add_option("--access-failure", v.access_failure,
                   "fail-closed or serve-and-count (without it: show the policy)")
      ->check(CLI::IsMember({"fail-closed", "serve-and-count"}));
  line.Runs(policy, [&v](CommandContext& ctx) { return AuditPolicy(ctx, v.access_failure); });
}

}  // namespace coffer::keyctl
