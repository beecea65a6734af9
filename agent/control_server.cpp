#include "agent/control_server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

namespace ipsec {

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;

namespace {

std::string read_small_file(const std::string& path, std::size_t max) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return {};
  std::string s(max, '\0');
  std::size_t got = 0;
  while (got < max) {
    const ssize_t n = ::read(fd, s.data() + got, max - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  s.resize(got);
  return s;
}

Result<gid_t> resolve_group(const std::string& g) {
  gid_t num = 0;
  auto [p, ec] = std::from_chars(g.data(), g.data() + g.size(), num);
  if (ec == std::errc{} && p == g.data() + g.size()) return num;
  std::vector<char> buf(16384);
  struct group gr {};
  struct group* res = nullptr;
  const int rc = ::getgrnam_r(g.c_str(), &gr, buf.data(), buf.size(), &res);
  if (rc != 0 || res == nullptr)
    return make_error(Errc::io, "control group '" + printable(g) + "' does not exist" +
                                    (rc != 0 ? std::string(" (") + std::strerror(rc) + ")" : ""));
  return res->gr_gid;
}

std::string parent_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return path.substr(0, slash);
}

// mkdir -p with mode 0755 for what it creates.
Result<Unit> make_parents(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return make_error(Errc::io, dir + " is not a directory");
    return Unit{};
  }
  if (auto up = make_parents(parent_of(dir)); !up) return up;
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return make_error(Errc::io, "cannot create " + dir + ": " + std::strerror(errno), errno);
  ::chmod(dir.c_str(), 0755);  // whatever the umask took away
  return Unit{};
}

// Whether something listens on the socket at `path` (an agent still running).
bool socket_answers(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), std::min(path.size(), sizeof sa.sun_path - 1));
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
  const int e = errno;
  ::close(fd);
  return rc == 0 || e == EAGAIN;  // EAGAIN: its backlog is full, but it is there
}

}  // namespace

std::vector<gid_t> parse_proc_status_groups(std::string_view text) {
  std::vector<gid_t> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    auto line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.substr(0, 7) != "Groups:") continue;
    line.remove_prefix(7);
    while (!line.empty()) {
      while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
      std::size_t n = 0;
      while (n < line.size() && line[n] >= '0' && line[n] <= '9') ++n;
      if (n == 0) break;
      gid_t g = 0;
      if (std::from_chars(line.data(), line.data() + n, g).ec == std::errc{}) out.push_back(g);
      line.remove_prefix(n);
    }
    break;
  }
  return out;
}

nlohmann::json ControlPeer::json() const {
  return {{"uid", uid}, {"gid", gid}, {"pid", pid}, {"comm", comm}};
}

// One client connection. Owned by the handlers waiting on it (shared_ptr);
// the server only knows it by pointer, to count it and to close it on stop.
class ControlServer::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(ControlServer* server, stream::socket sock)
      : server_(server), sock_(std::move(sock)), timer_(server->io_) {}
  ~Session() {
    if (server_) server_->forget(this);
  }
  void detach() {
    server_ = nullptr;
    close();
  }
  void start() {
    arm_timer(server_->cfg_.idle_timeout);
    read();
  }
  void close() {
    closed_ = true;
    boost::system::error_code ec;
    timer_.cancel();
    sock_.close(ec);
  }

 private:
  void arm_timer(std::chrono::milliseconds d) {
    timer_.expires_after(d);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->closed_) return;
      if (self->timer_.expiry() > std::chrono::steady_clock::now()) return;  // re-armed meanwhile
      if (self->server_) ++self->server_->stats_.timeouts;
      self->close();
    });
  }

  void read() {
    if (closed_) return;
    sock_.async_read_some(asio::buffer(chunk_), [self = shared_from_this()](const boost::system::error_code& ec,
                                                                            std::size_t n) {
      if (ec || self->closed_ || !self->server_) {
        self->close();
        return;
      }
      const bool was_empty = self->pending_.empty();
      self->pending_.append(self->chunk_.data(), n);
      // The first byte of a request starts its clock.
      if (was_empty) self->arm_timer(self->server_->cfg_.request_timeout);
      self->process();
    });
  }

  // Answers the first complete line, if any; reads on when there is none.
  void process() {
    if (closed_ || !server_) return;
    const auto nl = pending_.find('\n');
    if (nl == std::string::npos) {
      if (pending_.size() > kMaxControlRequestBytes) {
        respond(control_error(ControlErrorCode::too_large,
                              "request longer than " + std::to_string(kMaxControlRequestBytes) + " bytes"),
                true);
        return;
      }
      read();
      return;
    }
    const std::string line = pending_.substr(0, nl);
    pending_.erase(0, nl + 1);
    auto& st = server_->stats_;
    ++st.requests;
    nlohmann::json id;
    auto req = parse_control_request(line, &id);
    if (!req) {
      ++st.errors;
      respond(control_error(control_error_for(req.error()), req.error().message, id),
              control_error_is_fatal(req.error()));
      return;
    }
    std::string out;
    try {
      const ControlPeer peer = server_->peer_of(sock_.native_handle());
      const ControlReply r = server_->handler_(*req, peer);
      if (r.ok) {
        out = control_ok(r.result, req->id);
      } else {
        ++st.errors;
        out = control_error(r.code, r.message, req->id);
      }
    } catch (const std::exception& e) {
      ++st.errors;
      out = control_error(ControlErrorCode::internal, std::string("internal error: ") + e.what(), req->id);
    }
    respond(std::move(out), false);
  }

  void respond(std::string text, bool close_after) {
    out_ = std::move(text);
    // The answer must be read within the request time too.
    arm_timer(server_->cfg_.request_timeout);
    asio::async_write(sock_, asio::buffer(out_),
                      [self = shared_from_this(), close_after](const boost::system::error_code& ec, std::size_t) {
                        if (ec || close_after || self->closed_ || !self->server_) {
                          if (!ec && close_after) {
                            boost::system::error_code ig;
                            self->sock_.shutdown(stream::socket::shutdown_both, ig);
                          }
                          self->close();
                          return;
                        }
                        self->arm_timer(self->pending_.empty() ? self->server_->cfg_.idle_timeout
                                                               : self->server_->cfg_.request_timeout);
                        self->process();
                      });
  }

  ControlServer* server_;
  stream::socket sock_;
  asio::steady_timer timer_;
  std::array<char, 16384> chunk_{};
  std::string pending_, out_;
  bool closed_{false};
};

ControlServer::ControlServer(asio::io_context& io, Config cfg, Handler handler)
    : io_(io), cfg_(std::move(cfg)), handler_(std::move(handler)), acceptor_(io), retry_(io) {}

ControlServer::~ControlServer() { stop(); }

ControlPeer ControlServer::peer_of(int fd) const {
  ControlPeer p;
  ucred cr{};
  socklen_t len = sizeof cr;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
    p.uid = p.gid = static_cast<std::uint32_t>(-1);
    return p;  // may_change false
  }
  p.uid = cr.uid;
  p.gid = cr.gid;
  p.pid = cr.pid;
  if (p.pid > 0) {
    p.comm = read_small_file("/proc/" + std::to_string(p.pid) + "/comm", 64);
    if (!p.comm.empty() && p.comm.back() == '\n') p.comm.pop_back();
  }
  bool member = false;
  if (gid_) {
    member = p.gid == *gid_;
    if (!member) {
      std::vector<gid_t> groups(64);
      socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
      int rc = ::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
      if (rc != 0 && errno == ERANGE) {
        groups.resize(glen / sizeof(gid_t) + 1);
        glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
        rc = ::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
      }
      if (rc == 0) {
        groups.resize(glen / sizeof(gid_t));
      } else if (p.pid > 0) {  // an old kernel: the process's own view
        groups = parse_proc_status_groups(read_small_file("/proc/" + std::to_string(p.pid) + "/status", 16384));
      } else {
        groups.clear();
      }
      member = std::find(groups.begin(), groups.end(), *gid_) != groups.end();
    }
  }
  p.may_change = p.uid == 0 || member;
  return p;
}

Result<Unit> ControlServer::start() {
  const auto& path = cfg_.path;
  auto fail = [&](std::string why, int e = 0) { return make_error(Errc::io, path + ": " + std::move(why), e); };
  if (path.empty() || path.front() != '/') return fail("the control socket path must be absolute");
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) return fail("path too long for a Unix socket");
  if (!cfg_.group.empty()) {
    auto g = resolve_group(cfg_.group);
    if (!g) return fail(g.error().message);
    gid_ = *g;
  }
  if (auto d = make_parents(parent_of(path)); !d) return fail(d.error().message, d.error().sys_errno);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return fail("a directory is in the way of the control socket (not removed)");
    if (!S_ISSOCK(st.st_mode)) return fail("a file that is not a socket is in the way (not removed)");
    if (socket_answers(path)) return fail("another process answers on this socket (another agent running?)");
    if (::unlink(path.c_str()) != 0) return fail(std::string("cannot remove the stale socket: ") + std::strerror(errno), errno);
  }
  boost::system::error_code ec;
  acceptor_.open(stream(), ec);
  if (ec) return fail("socket: " + ec.message(), ec.value());
  // Born 0660: no moment in which others could connect.
  const mode_t old = ::umask(0117);
  acceptor_.bind(stream::endpoint(path), ec);
  ::umask(old);
  if (ec) {
    acceptor_.close(ec);
    return fail("bind: " + ec.message(), ec.value());
  }
  auto undo = [&](std::string why, int e) {
    boost::system::error_code ig;
    acceptor_.close(ig);
    ::unlink(path.c_str());
    return fail(std::move(why), e);
  };
  if (::chmod(path.c_str(), 0660) != 0) return undo(std::string("chmod 0660: ") + std::strerror(errno), errno);
  if (gid_ && ::chown(path.c_str(), static_cast<uid_t>(-1), *gid_) != 0)
    return undo("chgrp " + cfg_.group + ": " + std::strerror(errno), errno);
  if (::stat(path.c_str(), &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  acceptor_.listen(64, ec);
  if (ec) return undo("listen: " + ec.message(), ec.value());
  running_ = true;
  accept();
  return Unit{};
}

void ControlServer::accept() {
  if (!running_) return;
  acceptor_.async_accept([this](const boost::system::error_code& ec, stream::socket sock) {
    if (!running_) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      // Out of descriptors or memory: try again shortly, never spin.
      retry_.expires_after(std::chrono::milliseconds(100));
      retry_.async_wait([this](const boost::system::error_code& e) {
        if (!e) accept();
      });
      return;
    }
    if (sessions_.size() >= cfg_.max_clients) {
      ++stats_.refused_busy;
      boost::system::error_code ig;
      sock.close(ig);
    } else {
      ++stats_.accepted;
      auto s = std::make_shared<Session>(this, std::move(sock));
      sessions_.insert(s.get());
      s->start();
    }
    accept();
  });
}

void ControlServer::stop() {
  if (!running_) return;
  running_ = false;
  boost::system::error_code ec;
  acceptor_.close(ec);
  retry_.cancel();
  const auto sessions = sessions_;
  sessions_.clear();
  for (Session* s : sessions) s->detach();
  // Only our own socket: not one a newer agent has put there since.
  struct stat st {};
  if (::lstat(cfg_.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev_ && st.st_ino == ino_)
    ::unlink(cfg_.path.c_str());
}

}  // namespace ipsec
