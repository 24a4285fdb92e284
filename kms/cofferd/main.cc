// cofferd: coffer's key-management and storage daemon. See `cofferd --help` and docs/daemon.md.
// The program is CofferdMain (kms/cofferd/cofferd_main.h); the shipped binary runs it on the
// system's clock, with no way to choose another.

#include "crypto/base/clock.h"
#include "kms/cofferd/cofferd_main.h"

int main(int argc, char** argv) {
  return coffer::cofferd::CofferdMain(argc, argv, coffer::SystemClock());
}
