#include "kms/keys/store_graph.h"

#include <utility>

#include "crypto/base/status.h"

namespace coffer::kms {

absl::StatusOr<std::unique_ptr<StoreGraph>> StoreGraph::Open(StoreGraphOptions options) {
  if (options.data_db == nullptr || options.keys.clock == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "a store graph needs a data DB and a clock");
  }
  if (options.keys.data_counter != nullptr) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a store graph counts protected data with its own counter");
  }
  const Clock* clock = options.keys.clock;
  std::unique_ptr<StoreGraph> graph(new StoreGraph(options.data_db));
  graph->counter_ = std::make_unique<StoreDataCounter>(options.data_db);
  options.keys.data_counter = graph->counter_.get();
  COFFER_ASSIGN_OR_RETURN(graph->key_manager_, KeyManager::Open(std::move(options.keys)));
  graph->counter_->set_key_provider(graph->key_manager_.get());
  KeyManager* keys = graph->key_manager_.get();
  graph->policies_ = std::make_unique<KeyManagerPolicySource>(keys);
  KeyManagerPolicySource* policies = graph->policies_.get();
  graph->quota_ = std::make_unique<storage::QuotaMeter>(options.data_db, policies, clock);
  graph->records_ = std::make_unique<storage::RecordStore>(options.data_db, keys, policies, clock);
  graph->records_->set_quota_meter(graph->quota_.get());
  graph->attachments_ =
      std::make_unique<storage::AttachmentStore>(options.data_db, keys, policies, clock);
  graph->attachments_->set_quota_meter(graph->quota_.get());
  graph->bin_ = std::make_unique<storage::RecycleBin>(options.data_db, keys, policies, clock,
                                                      options.purge_journal);
  return graph;
}

StoreGraph::~StoreGraph() {
  bin_.reset();
  attachments_.reset();
  records_.reset();
  quota_.reset();
  policies_.reset();
  key_manager_.reset();
  counter_.reset();
}

}  // namespace coffer::kms
