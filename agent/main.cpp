// ipsec-auditd: the kernel's IPsec datapath as an audit trail.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "agent/daemon.hpp"
#include "agent/options.hpp"

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
  Options base;
  if (first->config_path) {
    std::ifstream in(*first->config_path);
    if (!in) {
      std::fprintf(stderr, "ipsec-auditd: cannot read config %s\n", first->config_path->c_str());
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    if (auto r = apply_config(ss.str(), base); !r) {
      std::fprintf(stderr, "ipsec-auditd: %s: %s\n", first->config_path->c_str(), r.error().message.c_str());
      return 2;
    }
  }
  auto opts = parse_command_line(argc, argv, base);
  if (!opts) {
    std::fprintf(stderr, "ipsec-auditd: %s\n", opts.error().message.c_str());
    return 2;
  }
  Daemon d(std::move(*opts));
  return d.run();
}
