// coffer-client-example: the smallest useful program against cofferd's data socket, written to
// be copied into a CRM backend. It stores a record and reads it back, uploads an attachment in
// chunks and downloads it again, then pseudonymizes an e-mail address and re-identifies it
// masked, printing what it did.
//
//   coffer-client-example [DATA_SOCKET] [DATASET]
//
// DATA_SOCKET defaults to $COFFER_DATA_SOCKET (scripts/start prints the path); DATASET to
// $COFFER_DATASET, then "crm". The calling user needs a grant on the dataset in cofferd's
// configuration (read, write, pseudonymize and reidentify), and the dataset must exist (an admin
// creates it on the admin socket).
//
// Build: link against the `coffer_client` CMake target and include "kms/client/client.h".

#include <cstdlib>
#include <iostream>
#include <string>

#include "crypto/base/status.h"
#include "kms/client/client.h"

namespace {

// Prints a failed step with its stable code (docs/errors.md) and the daemon's message, which
// says what to fix (e.g. "NOT_GRANTED": ask an admin for a grant on the dataset).
int Fail(const char* step, const absl::Status& status) {
  coffer::ErrorCode code = coffer::ErrorCodeOf(status);
  std::cerr << step << " failed: " << coffer::ErrorCodeName(code) << " (" << static_cast<int>(code)
            << "): " << status.message() << "\n";
  return 1;
}

const char* FromEnv(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path = argc > 1 ? argv[1] : FromEnv("COFFER_DATA_SOCKET", "");
  std::string dataset = argc > 2 ? argv[2] : FromEnv("COFFER_DATASET", "crm");
  if (socket_path.empty()) {
    std::cerr << "usage: " << argv[0] << " DATA_SOCKET [DATASET]\n"
              << "  or set COFFER_DATA_SOCKET (scripts/start prints the data socket's path)\n";
    return 2;
  }

  // One Client per process is enough: it is thread-safe and reuses its connections.
  coffer::client::ClientOptions options;
  options.request_timeout = std::chrono::seconds(10);
  auto client = coffer::client::Client::Connect(socket_path, options);
  if (!client.ok()) return Fail("connect", client.status());
  std::cout << "connected to " << socket_path << ", dataset " << dataset << "\n";

  // Records: ids and values are arbitrary bytes (ids up to 1 KiB).
  const std::string id = "customer/42";
  const std::string value = R"({"name":"Ada Lovelace","tier":"gold"})";
  if (absl::Status s = (*client)->PutRecord(dataset, id, value); !s.ok()) {
    return Fail("PutRecord", s);
  }
  auto got = (*client)->GetRecord(dataset, id);
  if (!got.ok()) return Fail("GetRecord", got.status());
  std::cout << "record " << id << " -> " << *got << "\n";

  // A missing record is an error with a stable code, not an empty value.
  auto missing = (*client)->GetRecord(dataset, "customer/does-not-exist");
  if (coffer::ErrorCodeOf(missing.status()) == coffer::ErrorCode::kRecordNotFound) {
    std::cout << "missing record -> RECORD_NOT_FOUND, as expected\n";
  } else if (!missing.ok()) {
    return Fail("GetRecord (missing id)", missing.status());
  }

  // Attachments stream: Append as often as you like (the library sends 1 MiB chunk frames);
  // nothing is visible until Commit. A writer destroyed without Commit aborts the upload.
  const std::string name = "customer/42/contract.txt";
  std::string contents;
  for (int line = 0; line < 50'000; ++line) {
    contents += "line " + std::to_string(line) + " of the signed contract\n";
  }
  auto writer = (*client)->BeginAttachment(dataset, name, "text/plain");
  if (!writer.ok()) return Fail("BeginAttachment", writer.status());
  for (size_t at = 0; at < contents.size(); at += 300'000) {
    if (absl::Status s = (*writer)->Append(std::string_view(contents).substr(at, 300'000));
        !s.ok()) {
      return Fail("AttachmentWriter::Append", s);
    }
  }
  auto stored = (*writer)->Commit();
  if (!stored.ok()) return Fail("AttachmentWriter::Commit", stored.status());
  std::cout << "attachment " << name << " stored: " << stored->size << " bytes, "
            << stored->content_type << "\n";

  // Download: the reader streams the daemon's frames; Read fills a buffer of your size (use
  // ReadAll for small attachments). offset/length select a range.
  auto reader = (*client)->OpenAttachment(dataset, name);
  if (!reader.ok()) return Fail("OpenAttachment", reader.status());
  std::string downloaded;
  char buffer[64 * 1024];
  for (;;) {
    auto n = (*reader)->Read(buffer, sizeof(buffer));
    if (!n.ok()) return Fail("AttachmentReader::Read", n.status());
    if (*n == 0) break;
    downloaded.append(buffer, *n);
  }
  std::cout << "attachment downloaded: " << downloaded.size() << " bytes, "
            << (downloaded == contents ? "identical to what was uploaded" : "DIFFERENT") << "\n";
  if (downloaded != contents) return 1;

  // Pseudonyms: a stable token stands for an identifier in analytics and joins; turning it back
  // needs the REIDENTIFY grant and is audited.
  auto pseudonyms = (*client)->Pseudonymize(dataset, {"ada@example.com"});
  if (!pseudonyms.ok()) return Fail("Pseudonymize", pseudonyms.status());
  std::cout << "pseudonym of the e-mail address: " << pseudonyms->tokens[0] << "\n";
  auto shown = (*client)->Reidentify(dataset, pseudonyms->tokens, coffer::v1::MASK_EMAIL);
  if (!shown.ok()) return Fail("Reidentify", shown.status());
  std::cout << "re-identified for display: " << (*shown)[0] << "\n";
  return 0;
}
