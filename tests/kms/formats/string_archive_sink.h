// An export-v1 archive written into memory, for the tests, the fuzz targets and the seed
// generator that read back what they just wrote.

#ifndef COFFER_TESTS_KMS_FORMATS_STRING_ARCHIVE_SINK_H_
#define COFFER_TESTS_KMS_FORMATS_STRING_ARCHIVE_SINK_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "kms/formats/export_archive.h"

namespace coffer::kms::dataset_export {

class StringSink final : public ArchiveSink {
 public:
  absl::Status Write(std::string_view bytes) override {
    out.append(bytes);
    return absl::OkStatus();
  }
  std::string out;
};

}  // namespace coffer::kms::dataset_export

#endif  // COFFER_TESTS_KMS_FORMATS_STRING_ARCHIVE_SINK_H_
