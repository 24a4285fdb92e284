#include "hsm/hsm_client.h"

#include <utility>

#include "crypto/base/status.h"

namespace coffer::hsm {

absl::StatusOr<std::unique_ptr<HsmClient>> HsmClient::Open(const HsmOptions& options) {
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<Token> token, Token::Load(options));
  std::unique_ptr<HsmClient> client(new HsmClient(std::move(token)));
  // The roles exist before the one enumeration, so each receives its share of it.
  COFFER_RETURN_IF_ERROR(
      client->token_->Connect({&client->wrapping_keys_, &client->signer_,
                               &client->row_authenticator_, &client->totp_secrets_}));
  return client;
}

HsmClient::HsmClient(std::unique_ptr<Token> token)
    : token_(std::move(token)),
      wrapping_keys_(*token_),
      signer_(*token_),
      row_authenticator_(*token_),
      totp_secrets_(*token_) {}

HsmClient::~HsmClient() { (void)token_->Close(); }

}  // namespace coffer::hsm
