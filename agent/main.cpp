// ipsec-auditd: the kernel's IPsec (XFRM/ESP) datapath as an audit trail.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "agent/daemon.hpp"
#include "agent/options.hpp"

namespace {

// The config file (if any) with the command line over it: at start and on
// every SIGHUP, so a reload sees exactly what a restart would.
ipsec::Result<ipsec::Options> load_options(int argc, char** argv, const std::optional<std::string>& config_path) {
  using namespace ipsec;
  Options base;
  if (config_path) {
    std::ifstream in(*config_path);
    if (!in) return make_error(Errc::io, "cannot read config " + *config_path);
    std::stringstream ss;
    ss << in.rdbuf();
    if (auto r = apply_config(ss.str(), base); !r)
      return make_error(Errc::malformed, *config_path + ": " + r.error().message);
  }
  auto opts = parse_command_line(argc, argv, base);
  if (!opts) return opts.error();
  return opts;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ipsec;
  // First pass only to find --config; the command line then overrides it.
  auto first = parse_command_line(argc, argv);
  if (!first) {
    std::fprintf(stderr, "ipsec-auditd: %s\n", first.error().message.c_str());
    return 2;
  }
  if (first->help) {
    std::fputs(usage().c_str(), stdout);
    return 0;
  }
  if (first->version) {
    std::printf("ipsec-auditd %s\n", IPSEC_AUDIT_VERSION);
    return 0;
  }
  const auto config_path = first->config_path;
  auto opts = load_options(argc, argv, config_path);
  if (!opts) {
    std::fprintf(stderr, "ipsec-auditd: %s\n", opts.error().message.c_str());
    return 2;
  }
  Daemon d(std::move(*opts), [argc, argv, config_path] { return load_options(argc, argv, config_path); });
  return d.run();
}
