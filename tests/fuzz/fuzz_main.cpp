// libFuzzer entry point of fuzz_<name>: built once per target with
// IPSEC_FUZZ_TARGET=<name> (tests/fuzz/CMakeLists.txt). A broken invariant
// aborts, so libFuzzer saves the input as a crash artifact.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "tests/fuzz/fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string broken = ipsec::fuzz::IPSEC_FUZZ_TARGET(ipsec::Bytes(data, size));
  if (!broken.empty()) {
    std::fprintf(stderr, "fuzz invariant broken: %s\n", broken.c_str());
    std::abort();
  }
  return 0;
}
