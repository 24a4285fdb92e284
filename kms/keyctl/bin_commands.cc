#include "kms/keyctl/bin_commands.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "kms/audit/audit_format.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

namespace {

bool IsPrintableUtf8(const std::string& bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    size_t extra = 0;
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
    } else if ((c & 0xe0) == 0xc0 && c >= 0xc2) {
      extra = 1;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
    } else if ((c & 0xf8) == 0xf0 && c <= 0xf4) {
      extra = 3;
    } else {
      return false;
    }
    if (i + extra >= bytes.size() && extra > 0) return false;
    for (size_t k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(bytes[i + k]) & 0xc0) != 0x80) return false;
    }
    i += extra + 1;
  }
  return !bytes.empty();
}

std::string ShowId(const std::string& id) {
  return IsPrintableUtf8(id) ? id : "hex:" + kms::audit::ToHex(id);
}

absl::StatusOr<std::string> FromHex(const std::string& hex) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string text = hex.substr(0, 4) == "hex:" ? hex.substr(4) : hex;
  if (text.size() % 2 != 0) {
    return MakeError(ErrorCode::kInvalidArgument, "--hex id '" + hex + "' has an odd length");
  }
  std::string bytes;
  for (size_t i = 0; i < text.size(); i += 2) {
    int hi = digit(text[i]), lo = digit(text[i + 1]);
    if (hi < 0 || lo < 0) {
      return MakeError(ErrorCode::kInvalidArgument, "--hex id '" + hex + "' is not hex");
    }
    bytes.push_back(static_cast<char>(hi * 16 + lo));
  }
  return bytes;
}

}  // namespace

absl::Status BinPurge(CommandContext& ctx, const std::string& dataset,
                      const std::optional<std::string>& record_id,
                      const std::optional<std::string>& attachment_name,
                      const std::string& damaged_ref) {
  pb::Request request;
  auto* r = request.mutable_purge();
  r->set_dataset(dataset);
  if (record_id) r->set_record_id(*record_id);
  if (attachment_name) r->set_attachment_name(*attachment_name);
  if (!damaged_ref.empty()) r->set_damaged_ref(damaged_ref);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.purge()));
  } else {
    ctx.out() << "purged from " << dataset << ": " << response.purge().records() << " record(s), "
              << response.purge().attachments() << " attachment(s)\n";
  }
  return absl::OkStatus();
}

absl::Status BinList(CommandContext& ctx, const std::string& dataset, uint32_t limit) {
  std::vector<pb::BinItem> items;
  std::string token;
  bool more = false;
  while (items.size() < limit) {
    pb::Request request;
    auto* r = request.mutable_bin_list();
    r->set_dataset(dataset);
    r->set_page_token(token);
    r->set_max_items(std::min<uint32_t>(limit - static_cast<uint32_t>(items.size()), 10'000));
    COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
    for (const pb::BinItem& item : response.bin_list().items()) {
      if (items.size() < limit) items.push_back(item);
    }
    token = response.bin_list().next_page_token();
    if (token.empty() || response.bin_list().items_size() == 0) break;
  }
  more = !token.empty();
  if (ctx.json()) {
    nlohmann::json array = nlohmann::json::array();
    for (const pb::BinItem& item : items) {
      nlohmann::json j = ProtoToJson(item);
      j["id_text"] = ShowId(item.id());
      array.push_back(std::move(j));
    }
    PrintJson(ctx, {{"dataset", dataset}, {"items", std::move(array)}, {"more", more}});
    return absl::OkStatus();
  }
  const int64_t now = NowMicros();
  Table table({"KIND", "ID", "DELETED", "PURGE AFTER"});
  for (const pb::BinItem& item : items) {
    table.AddRow(
        {item.kind() == pb::BinItem::RECORD ? "record" : "attachment", ShowId(item.id()),
         FormatTimeWithAge(item.deleted_micros(), now),
         item.purge_after_micros() == 0 ? "held" : FormatLocalTime(item.purge_after_micros())});
  }
  table.Print(ctx.out());
  if (more) ctx.out() << "(more items: raise --limit)\n";
  return absl::OkStatus();
}

absl::Status BinRestore(CommandContext& ctx, const std::string& dataset,
                        const std::optional<std::string>& record_id,
                        const std::optional<std::string>& attachment_name, bool hex) {
  pb::Request request;
  std::string id = record_id ? *record_id : *attachment_name;
  if (hex) {
    COFFER_ASSIGN_OR_RETURN(id, FromHex(id));
  }
  if (record_id) {
    request.mutable_record_restore()->set_dataset(dataset);
    request.mutable_record_restore()->set_id(id);
  } else {
    request.mutable_attachment_restore()->set_dataset(dataset);
    request.mutable_attachment_restore()->set_name(id);
  }
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const char* kind = record_id ? "record" : "attachment";
  if (ctx.json()) {
    PrintJson(ctx, {{"restored", {{"dataset", dataset}, {"kind", kind}, {"id", ShowId(id)}}}});
  } else {
    ctx.out() << "restored " << kind << " " << ShowId(id) << " in " << dataset << '\n';
  }
  return absl::OkStatus();
}

void AddBinCommands(CLI::App& app, CommandLine& line) {
  struct Values {
    std::string dataset;
    ItemFlags purge_item, restore_item;
    std::string damaged_ref;
    uint32_t limit = 100;
    bool hex = false;
  };
  Values& v = line.NewValues<Values>();
  CLI::App* bin = AddCommandGroup(app, "bin", "Purge from a dataset's recycle bin",
                                  "keyctl bin purge crm/contacts");

  CLI::App* purge =
      AddCommand(bin, "purge", "Purge one record or attachment physically, or empty the whole bin",
                 "keyctl bin purge crm/contacts --record customer-42");
  purge->add_option("DATASET", v.dataset, "Dataset name")->required();
  v.purge_item.Add(purge, "Record id to purge", "Attachment name to purge");
  purge
      ->add_option("--damaged", v.damaged_ref,
                   "The reference of a damaged item to purge (dmg-..., as record listings, "
                   "jobs, scrub, export and EVENT_DAMAGED_ITEM report it)")
      ->excludes("--record")
      ->excludes("--attachment");
  line.Runs(purge, [&v](CommandContext& ctx) {
    return BinPurge(ctx, v.dataset, v.purge_item.record_id(), v.purge_item.attachment_name(),
                    v.damaged_ref);
  });

  CLI::App* list =
      AddCommand(bin, "list", "List a dataset's recycle bin (ids not printable: hex:...)",
                 "keyctl bin list crm/contacts --limit 50");
  list->add_option("DATASET", v.dataset, "Dataset name")->required();
  list->add_option("--limit", v.limit, "At most this many items (default 100)")
      ->check(CLI::Range(uint32_t{1}, uint32_t{1000000}));
  line.Runs(list, [&v](CommandContext& ctx) { return BinList(ctx, v.dataset, v.limit); });

  CLI::App* restore =
      AddCommand(bin, "restore", "Restore one record or attachment from the recycle bin",
                 "keyctl bin restore crm/contacts --record customer-42");
  restore->add_option("DATASET", v.dataset, "Dataset name")->required();
  v.restore_item.Add(restore, "Record id", "Attachment name");
  restore->add_flag("--hex", v.hex, "The id is hex (as bin list prints it, hex: prefix optional)");
  restore->callback([&v, &line] {
    v.restore_item.Require("bin restore");
    line.Choose([&v](CommandContext& ctx) {
      return BinRestore(ctx, v.dataset, v.restore_item.record_id(),
                        v.restore_item.attachment_name(), v.hex);
    });
  });
}

}  // namespace coffer::keyctl
