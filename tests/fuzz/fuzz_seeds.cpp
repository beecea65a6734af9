// fuzz_seeds SOURCE_DIR OUT_DIR: splits the recorded fixtures into one seed
// file per message (or per record line) for each fuzz target, in
// OUT_DIR/<target>/seeds/. The fixture files are whole captures (datagram
// after datagram); a fuzzer learns faster from the single messages.
//   tests/fixtures/xfrm/*.bin   -> xfrm_message: each message, and each whole file
//   tests/fixtures/audit/*.bin  -> audit_datagram: each message; audit_text: each
//                                  MAC_IPSEC_EVENT record's text; audit_status:
//                                  each AUDIT_GET reply and NLMSG_ERROR
//   tests/fixtures/audit/*.txt  -> audit_text: each line; audit_datagram: each
//                                  line framed as a MAC_IPSEC_EVENT message
#include <linux/netlink.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "xfrm/audit_record.hpp"
#include "xfrm/kernel_audit.hpp"

namespace fs = std::filesystem;
using namespace ipsec;

namespace {

std::vector<std::uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<fs::path> files(const fs::path& dir, const char* ext) {
  std::vector<fs::path> v;
  for (const auto& de : fs::directory_iterator(dir))
    if (de.path().extension() == ext) v.push_back(de.path());
  std::sort(v.begin(), v.end());
  return v;
}

class Seeds {
 public:
  explicit Seeds(fs::path out) : out_(std::move(out)) {}
  void add(const char* target, const std::string& name, const void* data, std::size_t len) {
    const fs::path dir = out_ / target / "seeds";
    if (cleared_.insert(target).second) fs::remove_all(dir);  // what an earlier run left
    fs::create_directories(dir);
    std::ofstream(dir / name, std::ios::binary).write(static_cast<const char*>(data), static_cast<std::streamsize>(len));
    ++count_;
  }
  int count() const { return count_; }

 private:
  fs::path out_;
  std::set<std::string> cleared_;
  int count_{0};
};

// Walks a capture file; fn(index, message bytes including the header, message).
template <typename Fn>
bool each_message(const std::vector<std::uint8_t>& bytes, Fn fn) {
  int i = 0;
  auto walk = for_each_netlink_message(Bytes(bytes), [&](const NetlinkMessage& m) {
    const auto* start = m.payload.data() - NLMSG_HDRLEN;
    fn(i++, Bytes(start, m.payload.size() + NLMSG_HDRLEN), m);
    return true;
  });
  return walk.ok();
}

std::vector<std::uint8_t> frame_record(std::uint16_t type, const std::string& text) {
  std::vector<std::uint8_t> msg(NLMSG_HDRLEN + NLMSG_ALIGN(text.size()));
  nlmsghdr h{};
  h.nlmsg_len = static_cast<std::uint32_t>(NLMSG_HDRLEN + text.size());
  h.nlmsg_type = type;
  std::copy_n(reinterpret_cast<const std::uint8_t*>(&h), sizeof h, msg.begin());
  std::copy(text.begin(), text.end(), msg.begin() + NLMSG_HDRLEN);
  return msg;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: fuzz_seeds SOURCE_DIR OUT_DIR\n");
    return 2;
  }
  const fs::path fixtures = fs::path(argv[1]) / "tests" / "fixtures";
  Seeds seeds(argv[2]);
  bool ok = true;

  for (const auto& f : files(fixtures / "xfrm", ".bin")) {
    const auto bytes = read_file(f);
    const std::string stem = f.stem().string();
    seeds.add("xfrm_message", stem + ".bin", bytes.data(), bytes.size());
    ok &= each_message(bytes, [&](int i, Bytes msg, const NetlinkMessage&) {
      seeds.add("xfrm_message", stem + "-" + std::to_string(i) + ".bin", msg.data(), msg.size());
    });
  }

  for (const auto& f : files(fixtures / "audit", ".bin")) {
    const auto bytes = read_file(f);
    const std::string stem = f.stem().string();
    ok &= each_message(bytes, [&](int i, Bytes msg, const NetlinkMessage& m) {
      const std::string name = stem + "-" + std::to_string(i);
      if (m.type == kAuditGet || m.type == NLMSG_ERROR) {
        seeds.add("audit_status", name + ".bin", msg.data(), msg.size());
        return;
      }
      seeds.add("audit_datagram", name + ".bin", msg.data(), msg.size());
      if (m.type == kAuditMacIpsecEvent) {
        const auto text = audit_record_text(m.payload);
        seeds.add("audit_text", name + ".txt", text.data(), text.size());
      }
    });
  }

  for (const auto& f : files(fixtures / "audit", ".txt")) {
    std::ifstream in(f);
    std::string line;
    for (int i = 0; std::getline(in, line); ++i) {
      if (line.empty()) continue;
      const std::string name = f.stem().string() + "-" + std::to_string(i);
      seeds.add("audit_text", name + ".txt", line.data(), line.size());
      const auto msg = frame_record(kAuditMacIpsecEvent, line);
      seeds.add("audit_datagram", name + ".bin", msg.data(), msg.size());
    }
  }

  std::printf("%d seed files in %s\n", seeds.count(), argv[2]);
  if (!ok) std::fprintf(stderr, "a fixture file is not a sequence of netlink messages\n");
  return ok && seeds.count() > 0 ? 0 : 1;
}
