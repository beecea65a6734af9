#include "agent/netfilter_source.hpp"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <netlink/cache.h>
#include <netlink/route/link.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <cerrno>
#include <cstring>
#include <optional>

#include "agent/log.hpp"
#include "audit/normalize.hpp"
#include "xfrm/netns.hpp"
#include "xfrm/nflog_message.hpp"

namespace ipsec {

namespace {
constexpr int kBatch = 256;
constexpr std::size_t kBufferSize = 1 << 16;
constexpr std::chrono::milliseconds kRequestTimeout{1000};

// One netfilter request (NLM_F_ACK) with an nfgenmsg header.
struct Request {
  std::vector<std::uint8_t> buf = std::vector<std::uint8_t>(512);
  nlmsghdr* nlh;
  Request(std::uint16_t type, std::uint8_t family, std::uint16_t res_id, std::uint32_t seq) {
    nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = seq;
    auto* g = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    g->nfgen_family = family;
    g->version = NFNETLINK_V0;
    g->res_id = htons(res_id);
  }
  Bytes bytes() const { return Bytes(buf.data(), nlh->nlmsg_len); }
};

// Asks nf_tables for the agent's table: Unit when it is there, an error with
// ENOENT when nf_tables answers that it is not, any other error when nf_tables
// does not answer (not in the kernel: EOPNOTSUPP).
Result<Unit> get_table(NetlinkSocket& s, std::uint32_t seq) {
  Request r((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NFPROTO_INET, 0, seq);
  mnl_attr_put_strz(r.nlh, NFTA_TABLE_NAME, std::string(kNftTable).c_str());
  return s.transact(r.bytes(), seq, [](const NetlinkMessage&) {}, ReplyKind::ack, kRequestTimeout);
}

}  // namespace

struct NetfilterSource::Instance {
  NetnsFound ns;
  bool own{false};
  std::optional<UniqueFd> netns_fd;  // for setns; none for the agent's own
  bool dead{false};                  // the namespace could not be opened
  std::optional<NetlinkSocket> nflog;
  std::optional<boost::asio::posix::stream_descriptor> nflog_desc;
  std::optional<NetlinkSocket> nft;  // GETTABLE probes
  bool nft_ok{false};
  bool nft_reported{false};  // 5485 written for the current failure
  std::string applied;       // the table text in the kernel, "" when none
  nl_cache_mngr* mngr{nullptr};
  nl_cache* links{nullptr};
  std::optional<boost::asio::posix::stream_descriptor> links_desc;
  std::vector<std::uint8_t> buf = std::vector<std::uint8_t>(kBufferSize);
  std::uint32_t seq{1};

  explicit Instance(NetnsFound n) : ns(std::move(n)), own(ns.spec.empty()) {}
  ~Instance() {
    if (nflog_desc) nflog_desc->release();  // the NetlinkSocket owns the fd
    if (links_desc) links_desc->release();  // the cache manager owns it
    if (mngr) nl_cache_mngr_free(mngr);
  }
  // Enters the namespace for one call (nothing for the agent's own).
  Result<std::optional<ScopedNetns>> enter() const {
    if (own) return std::optional<ScopedNetns>();
    auto s = ScopedNetns::enter_fd(netns_fd->get());
    if (!s) return s.error();
    return std::optional<ScopedNetns>(std::move(*s));
  }
  std::string interface(std::uint32_t ifindex) const {
    if (!links) return {};
    rtnl_link* l = rtnl_link_get(links, static_cast<int>(ifindex));
    if (!l) return {};
    std::string name = rtnl_link_get_name(l) ? rtnl_link_get_name(l) : "";
    rtnl_link_put(l);
    return name;
  }
};

NetfilterSource::NetfilterSource(boost::asio::io_context& io, Config cfg, SpdProvider spds, EventSink sink)
    : io_(io),
      cfg_(cfg),
      spds_(std::move(spds)),
      sink_(std::move(sink)),
      debounce_(io),
      check_timer_(io),
      fragment_timer_(io) {}

NetfilterSource::~NetfilterSource() = default;

bool NetfilterSource::alive(const Instance* in) const {
  for (const auto& x : instances_)
    if (x.get() == in) return true;
  return false;
}

void NetfilterSource::failure(EventKind k, const Instance& in, std::string message, std::string reason) {
  log(LogLevel::warning, message);
  Event e;
  e.kind = k;
  e.source = Source::agent;
  e.time = std::chrono::system_clock::now();
  e.netns = in.ns.label;
  e.message = std::move(message);
  e.detail = {{"reason", std::move(reason)}};
  sink_(e);
}

void NetfilterSource::start() {
  if (!cfg_.enable) return;
  sync();
  arm_check();
  arm_fragments();
}

void NetfilterSource::spd_changed() {
  if (!cfg_.enable || stopped_) return;
  debounce_.expires_after(cfg_.debounce);
  debounce_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) sync();
  });
}

NetfilterSource::Instance* NetfilterSource::open_instance(const Spd& s) {
  auto owned = std::make_unique<Instance>(s.ns);
  Instance& in = *owned;
  instances_.push_back(std::move(owned));
  if (!in.own) {
    auto h = open_netns(in.ns.spec);
    if (!h || !(h->id == in.ns.id)) {
      in.dead = true;
      failure(EventKind::interface_list_failed, in,
              "cannot list the interfaces of netns " + in.ns.label + ": the namespace is gone",
              h ? "the namespace was replaced" : h.error().message);
      return &in;
    }
    in.netns_fd.emplace(std::move(h->fd));
  }
  auto scope = in.enter();
  if (!scope) {
    in.dead = true;
    failure(EventKind::interface_list_failed, in, "cannot enter netns " + in.ns.label + ": " + scope.error().message,
            scope.error().message);
    return &in;
  }
  // Interfaces: a cache manager of links and addresses.
  int rc = nl_cache_mngr_alloc(nullptr, NETLINK_ROUTE, 0, &in.mngr);
  if (rc >= 0) rc = nl_cache_mngr_add(in.mngr, "route/link", nullptr, nullptr, &in.links);
  nl_cache* addrs = nullptr;
  if (rc >= 0) rc = nl_cache_mngr_add(in.mngr, "route/addr", nullptr, nullptr, &addrs);
  if (rc < 0) {
    failure(EventKind::interface_list_failed, in,
            "cannot list the interfaces of netns " + in.ns.label + ": " + nl_geterror(rc), nl_geterror(rc));
    if (in.mngr) nl_cache_mngr_free(in.mngr);
    in.mngr = nullptr;
    in.links = nullptr;
  } else {
    in.links_desc.emplace(io_, nl_cache_mngr_get_fd(in.mngr));
    arm_links(in);
  }
  // nf_tables, asked by a socket of our own before libnftables is used.
  auto nft = NetlinkSocket::open(NETLINK_NETFILTER);
  std::string why;
  if (nft) {
    auto got = get_table(*nft, in.seq++);
    if (got || got.error().sys_errno == ENOENT) {
      in.nft.emplace(std::move(*nft));
      in.nft_ok = true;
    } else {
      why = "nf_tables does not answer: " + got.error().message;
    }
  } else {
    why = "no NETLINK_NETFILTER socket: " + nft.error().message;
  }
  // NFLOG: bind the group in copy-packet mode.
  auto nl = NetlinkSocket::open(NETLINK_NETFILTER);
  std::string nflog_why;
  if (nl) {
    (void)nl->set_receive_buffer(cfg_.receive_buffer_bytes);
    Request r(kNflogMsgConfig, AF_UNSPEC, cfg_.group, in.seq++);
    nfulnl_msg_config_cmd cmd{NFULNL_CFG_CMD_BIND};
    mnl_attr_put(r.nlh, NFULA_CFG_CMD, sizeof cmd, &cmd);
    nfulnl_msg_config_mode mode{};
    mode.copy_range = htonl(cfg_.copy_range);
    mode.copy_mode = NFULNL_COPY_PACKET;
    mnl_attr_put(r.nlh, NFULA_CFG_MODE, sizeof mode, &mode);
    mnl_attr_put_u32(r.nlh, NFULA_CFG_TIMEOUT, htonl(10));  // 1/100 s: batches leave within 100 ms
    mnl_attr_put_u32(r.nlh, NFULA_CFG_QTHRESH, htonl(64));
    mnl_attr_put_u32(r.nlh, NFULA_CFG_NLBUFSIZ, htonl(65536));
    auto got = nl->transact(r.bytes(), r.nlh->nlmsg_seq, [](const NetlinkMessage&) {}, ReplyKind::ack, kRequestTimeout);
    if (got) {
      in.nflog.emplace(std::move(*nl));
      in.nflog_desc.emplace(io_, in.nflog->fd());
      arm_read(in);
    } else {
      nflog_why = "cannot bind NFLOG group " + std::to_string(cfg_.group) + ": " + got.error().message +
                  (got.error().sys_errno == EBUSY ? " (another program listens on it: set nflog.group)" : "");
    }
  } else {
    nflog_why = "no NETLINK_NETFILTER socket for NFLOG: " + nl.error().message;
  }
  if (auto r = scope->has_value() ? (*scope)->restore() : Result<Unit>(Unit{}); !r)
    log(LogLevel::error, "cannot return from netns " + in.ns.label + ": " + r.error().message);
  if (!in.nft_ok) {
    in.nft_reported = true;
    failure(EventKind::filter_refresh_failed, in,
            "no cleartext (4963) or fragment detail in netns " + in.ns.label + ": " + why +
                "; auditing goes on without it (the xfrm_stat counters still count)",
            why);
  }
  if (!nflog_why.empty())
    failure(EventKind::filter_refresh_failed, in,
            "no cleartext (4963) or fragment detail in netns " + in.ns.label + ": " + nflog_why, nflog_why);
  return &in;
}

void NetfilterSource::drop_instance(std::size_t i, const std::string& why) {
  Instance& in = *instances_[i];
  if (!in.dead)
    failure(EventKind::interface_list_failed, in, "interfaces of netns " + in.ns.label + " can no longer be listed: " + why,
            why);
  instances_.erase(instances_.begin() + static_cast<std::ptrdiff_t>(i));
}

void NetfilterSource::sync() {
  if (stopped_) return;
  const auto spds = spds_();
  for (std::size_t i = instances_.size(); i-- > 0;) {
    bool found = false;
    for (const auto& s : spds) found = found || s.ns.id == instances_[i]->ns.id;
    if (!found) drop_instance(i, "the namespace is no longer there (deleted under the agent)");
  }
  for (const auto& s : spds) {
    Instance* in = nullptr;
    for (auto& x : instances_)
      if (x->ns.id == s.ns.id) in = x.get();
    if (!in) in = open_instance(s);
    if (!in->dead && in->nft_ok) apply(*in, *s.table, false);
  }
}

void NetfilterSource::apply(Instance& in, const XfrmTable& table, bool again) {
  std::vector<const XfrmPolicy*> pols;
  for (const auto& kv : table.policy_map()) pols.push_back(&kv.second);
  NftRulesetConfig rc;
  rc.group = cfg_.group;
  rc.snaplen = cfg_.copy_range;
  const std::string text = nft_table(pols, rc);
  if (text == in.applied && !again) return;
  auto scope = in.enter();
  std::string err;
  int rc_nft = -1;
  if (scope) {
    nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (ctx) {
      nft_ctx_buffer_output(ctx);
      nft_ctx_buffer_error(ctx);
      rc_nft = nft_run_cmd_from_buffer(ctx, nft_replace_transaction(text).c_str());
      if (const char* e = nft_ctx_get_error_buffer(ctx)) err = e;
      nft_ctx_free(ctx);
    } else {
      err = "nft_ctx_new failed";
    }
    if (scope->has_value()) (void)(*scope)->restore();
  } else {
    err = scope.error().message;
  }
  while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
  for (auto& c : err)
    if (c == '\n') c = ' ';
  if (rc_nft != 0) {
    in.applied.clear();
    if (!in.nft_reported) {
      in.nft_reported = true;
      failure(EventKind::filter_refresh_failed, in,
              "cannot " + std::string(again ? "re-apply" : "apply") + " the nftables table inet " +
                  std::string(kNftTable) + " in netns " + in.ns.label + ": " + printable(err, 400),
              printable(err, 400));
    }
    return;
  }
  in.nft_reported = false;
  in.applied = text;
  ++stats_.applies;
  if (again) ++stats_.reapplies;
  log(LogLevel::info, std::string(again ? "re-applied" : "applied") + " nftables table inet " + std::string(kNftTable) +
                          " in netns " + in.ns.label);
}

void NetfilterSource::check() {
  if (stopped_) return;
  const auto spds = spds_();
  for (auto& up : instances_) {
    Instance& in = *up;
    if (in.dead || !in.nft_ok || !in.nft) continue;
    const XfrmTable* table = nullptr;
    for (const auto& s : spds)
      if (s.ns.id == in.ns.id) table = s.table;
    if (!table) continue;
    if (in.applied.empty()) {  // the last apply failed: try again
      apply(in, *table, true);
      continue;
    }
    auto got = get_table(*in.nft, in.seq++);
    if (got) continue;
    if (got.error().sys_errno == ENOENT) {
      log(LogLevel::warning, "the nftables table inet " + std::string(kNftTable) + " in netns " + in.ns.label +
                                 " went away (nft flush ruleset?): applying it again");
      apply(in, *table, true);
    } else {
      log(LogLevel::warning, "nftables check in netns " + in.ns.label + " failed: " + got.error().message);
    }
  }
}

void NetfilterSource::arm_check() {
  check_timer_.expires_after(cfg_.check_interval);
  check_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    check();
    arm_check();
  });
}

void NetfilterSource::arm_fragments() {
  fragment_timer_.expires_after(cfg_.fragment_interval);
  fragment_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    flush_fragments();
    arm_fragments();
  });
}

void NetfilterSource::flush_fragments() {
  for (auto& e : fragments_.flush(std::chrono::system_clock::now())) sink_(e);
}

void NetfilterSource::arm_links(Instance& in) {
  in.links_desc->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                            [this, ip = &in](const boost::system::error_code& ec) {
                              if (ec || stopped_ || !alive(ip)) return;
                              const int rc = nl_cache_mngr_data_ready(ip->mngr);
                              if (rc < 0) {
                                failure(EventKind::interface_list_failed, *ip,
                                        "following the interfaces of netns " + ip->ns.label +
                                            " failed: " + nl_geterror(rc),
                                        nl_geterror(rc));
                                return;
                              }
                              arm_links(*ip);
                            });
}

void NetfilterSource::arm_read(Instance& in) {
  in.nflog_desc->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                            [this, ip = &in](const boost::system::error_code& ec) {
                              if (ec || stopped_ || !alive(ip)) return;
                              drain(*ip);
                              if (alive(ip) && !stopped_) arm_read(*ip);
                            });
}

void NetfilterSource::drain(Instance& in) {
  std::uint64_t overruns = 0;
  for (int i = 0; i < kBatch; ++i) {
    const auto r = in.nflog->receive(in.buf);
    if (r.status == NetlinkSocket::RecvStatus::again) break;
    if (r.status == NetlinkSocket::RecvStatus::overrun) {
      ++overruns;
      continue;
    }
    if (r.status != NetlinkSocket::RecvStatus::ok) {
      ++stats_.parse_errors;
      if (r.status == NetlinkSocket::RecvStatus::error) break;
      continue;
    }
    auto walk = for_each_netlink_message(Bytes(in.buf.data(), r.size), [&](const NetlinkMessage& m) {
      if (m.type != kNflogMsgPacket) return true;  // NLMSG_DONE ends a batch
      ++stats_.packets;
      auto p = parse_nflog_packet(m);
      if (!p) {
        ++stats_.parse_errors;
        log(LogLevel::warning, "unparsable NFLOG message dropped: " + p.error().message);
        return true;
      }
      on_packet(in, *p);
      return true;
    });
    if (!walk) ++stats_.parse_errors;
  }
  if (overruns > 0) {
    stats_.overruns += overruns;
    Event e = make_events_lost(Source::nflog, overruns, "netlink_overrun", true,
                               "the NFLOG socket of netns " + in.ns.label +
                                   " overran (ENOBUFS): logged packets were lost, at least " +
                                   std::to_string(overruns) + "; the xfrm_stat counters still count them");
    e.netns = in.ns.label;
    sink_(e);
  }
}

void NetfilterSource::on_packet(Instance& in, const NflogPacket& p) {
  const NftLogTag tag = parse_log_prefix(p.prefix);
  const std::string ifname = p.indev ? in.interface(*p.indev) : std::string();
  const auto now = std::chrono::system_clock::now();
  if (tag.kind == NftLogTag::Kind::fragment) {
    if (p.ip) fragments_.add(in.ns.label, *p.ip, ifname, now);
    return;
  }
  if (tag.kind != NftLogTag::Kind::cleartext) return;  // someone else's rule on our group
  std::shared_ptr<const XfrmPolicy> policy;
  for (const auto& s : spds_())
    if (s.ns.id == in.ns.id)
      if (const XfrmPolicy* pol = s.table->find_policy(PolicyKey{tag.index, tag.dir}))
        policy = std::make_shared<const XfrmPolicy>(*pol);
  sink_(cleartext_event(p, tag, std::move(policy), in.ns.label, ifname, now));
}

void NetfilterSource::stop() {
  if (stopped_) return;
  // Read what is queued first: those packets were logged before the stop.
  for (auto& in : instances_)
    if (in->nflog) drain(*in);
  stopped_ = true;
  debounce_.cancel();
  check_timer_.cancel();
  fragment_timer_.cancel();
  flush_fragments();
  for (auto& up : instances_) {
    Instance& in = *up;
    if (in.applied.empty()) continue;
    auto scope = in.enter();
    if (!scope) continue;
    if (nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT)) {
      nft_ctx_buffer_output(ctx);
      nft_ctx_buffer_error(ctx);
      if (nft_run_cmd_from_buffer(ctx, nft_delete_transaction().c_str()) != 0)
        log(LogLevel::warning, "cannot delete the nftables table in netns " + in.ns.label);
      nft_ctx_free(ctx);
    }
    if (scope->has_value()) (void)(*scope)->restore();
    in.applied.clear();
  }
  instances_.clear();
}

nlohmann::json NetfilterSource::status() const {
  nlohmann::json ns = nlohmann::json::array();
  for (const auto& in : instances_)
    ns.push_back({{"netns", in->ns.label}, {"nftables", in->nft_ok}, {"table", !in->applied.empty()},
                  {"nflog", in->nflog.has_value()}, {"interfaces", in->links != nullptr}});
  return {{"enabled", cfg_.enable}, {"group", cfg_.group}, {"netns", std::move(ns)}};
}

}  // namespace ipsec
