// SPDX-License-Identifier: Apache-2.0
#include "nats_server.hpp"

#include "files.hpp"
#include "ports.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <netinet/in.h>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <unistd.h>

namespace todd::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The oldest nats-server this fixture was written against: /healthz with
// js-server-only, JetStream clustering as configured below.
constexpr int kMinMajor = 2, kMinMinor = 9;
// Fresh ports are picked again when one was taken before the server bound.
constexpr int kPortAttempts = 5;
constexpr auto kStopGrace = 10s;
constexpr auto kPollEvery = 25ms;
// nats-server 2.9 retries a route every second (no setting): a cluster is
// settled once its routes have been complete for longer than that.
constexpr auto kRouteSettle = 1500ms;

std::string tail_of(const std::string &s, size_t max_bytes)
{
    return s.size() > max_bytes ? s.substr(s.size() - max_bytes) : s;
}

std::string quoted(const std::string &s)
{
    std::string q = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\')
            q += '\\';
        q += c;
    }
    return q + "\"";
}

// A blocking socket to 127.0.0.1:port whose connect, reads and writes give
// up after `limit`; -1 when it cannot connect.
int connect_loopback(int port, std::chrono::milliseconds limit)
{
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(limit.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>(limit.count() % 1000 * 1000);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// Reads until the peer closes, `until` is found, or a read times out.
std::string read_all(int fd, const char *until = nullptr)
{
    std::string got;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got.append(buf, static_cast<size_t>(n));
        if (until != nullptr && got.find(until) != std::string::npos)
            break;
    }
    return got;
}

// The server's greeting on its client port: sent in clear even when TLS
// or auth are required, so it proves the client listener is up.
bool client_port_greets(int port)
{
    int fd = connect_loopback(port, 500ms);
    if (fd < 0)
        return false;
    std::string got = read_all(fd, "\r\n");
    ::close(fd);
    return got.compare(0, 5, "INFO ") == 0;
}

struct HttpReply {
    int status = 0; // 0: no answer
    std::string body;
};

// HTTP/1.0 GET on the monitoring port (it closes after the reply).
HttpReply http_get(int port, const std::string &path,
                   std::chrono::milliseconds limit)
{
    HttpReply r;
    int fd = connect_loopback(port, limit);
    if (fd < 0)
        return r;
    std::string req =
        "GET " + path +
        " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(req.size())) {
        ::close(fd);
        return r;
    }
    std::string got = read_all(fd);
    ::close(fd);
    if (got.compare(0, 5, "HTTP/") != 0)
        return r;
    auto sp = got.find(' ');
    r.status = std::atoi(got.c_str() + sp + 1);
    auto body = got.find("\r\n\r\n");
    if (body != std::string::npos)
        r.body = got.substr(body + 4);
    return r;
}

// The first "key": "string" value in a JSON text ("" when absent): enough
// for the flat fields of /jsz that the cluster waits on.
std::string json_string(const std::string &json, const std::string &key)
{
    std::smatch m;
    std::regex re("\"" + key + "\"\\s*:\\s*\"([^\"]*)\"");
    return std::regex_search(json, m, re) ? m[1].str() : "";
}

// PATH, then the sbin directories a non-root PATH may lack.
std::string find_binary()
{
    const char *env = std::getenv("TODD_NATS_SERVER");
    if (env != nullptr && *env != '\0')
        return env;
    std::string dirs = std::getenv("PATH") ? std::getenv("PATH") : "";
    dirs += ":/usr/sbin:/usr/local/sbin:/usr/local/bin:/usr/bin";
    std::istringstream in(dirs);
    for (std::string d; std::getline(in, d, ':');) {
        if (d.empty())
            continue;
        std::string p = d + "/nats-server";
        if (::access(p.c_str(), X_OK) == 0)
            return p;
    }
    return "";
}

// The setpriv that makes the server die with the test (PR_SET_PDEATHSIG,
// kept across exec), so a test killed before its destructors ran leaves no
// server behind; "" when missing (the server then outlives such a test).
std::string setpriv()
{
    for (const char *p : {"/usr/bin/setpriv", "/bin/setpriv"})
        if (::access(p, X_OK) == 0)
            return p;
    return "";
}

} // namespace

// A cluster node's identity, decided by NatsCluster.
struct NatsServer::Member {
    std::string name, cluster;
    int port, monitor_port, cluster_port;
    std::vector<int> routes;
};

std::string NatsServer::binary()
{
    static const std::string path = find_binary();
    return path;
}

std::optional<std::string> NatsServer::unavailable()
{
    static std::once_flag once;
    static std::optional<std::string> why;
    std::call_once(once, [] {
        std::string bin = binary();
        if (bin.empty() || ::access(bin.c_str(), X_OK) != 0) {
            why = "nats-server is not installed (" +
                  (bin.empty() ? std::string("not on PATH nor in /usr/sbin")
                               : bin + " is not executable") +
                  "): install the Debian package nats-server "
                  "(share/scripts/install-deps does)";
            return;
        }
        RunResult r = run_capture({bin, "--version"}, 10s);
        std::smatch m;
        static const std::regex re("v([0-9]+)\\.([0-9]+)\\.([0-9]+)");
        if (r.exit_code != 0 || !std::regex_search(r.output, m, re)) {
            why = bin + " --version did not name a version: " +
                  tail_of(r.output, 500);
            return;
        }
        int major = std::stoi(m[1]), minor = std::stoi(m[2]);
        if (major < kMinMajor || (major == kMinMajor && minor < kMinMinor))
            why = bin + " is " + m[0].str() + ", older than the v" +
                  std::to_string(kMinMajor) + "." + std::to_string(kMinMinor) +
                  " the NATS tests need";
    });
    return why;
}

NatsServer::NatsServer() : NatsServer(Options{}) {}

NatsServer::NatsServer(Options opts) : opts_(std::move(opts)), dir_("todd-nats")
{
    if (auto why = unavailable())
        throw std::runtime_error(*why);
    if (!opts_.user.empty() && !opts_.token.empty())
        throw std::invalid_argument("NatsServer: user and token together");
    pick_ports();
    write_config();
    if (opts_.start)
        start_picking();
}

NatsServer::NatsServer(Options opts, const Member &m)
    : opts_(std::move(opts)), dir_("todd-nats-" + m.name), name_(m.name),
      cluster_name_(m.cluster), port_(m.port), monitor_port_(m.monitor_port),
      cluster_port_(m.cluster_port), route_ports_(m.routes)
{
    if (auto why = unavailable())
        throw std::runtime_error(*why);
    write_config(); // NatsCluster starts the nodes
}

NatsServer::~NatsServer()
{
    try {
        stop();
    } catch (...) {
    }
    // dir_ (config, store, log, TLS copies) is removed after this.
}

void NatsServer::pick_ports()
{
    // Bound together (so they differ), released for the server to bind.
    DeadPort p = DeadPort::refusing(), m = DeadPort::refusing();
    port_ = p.port();
    monitor_port_ = m.port();
}

void NatsServer::write_config() const
{
    std::ostringstream c;
    c << "# Written by tests/common/nats_server.cpp (docs/nats-server.md).\n"
      << "server_name: " << quoted(name_) << "\n"
      << "listen: \"127.0.0.1:" << port_ << "\"\n"
      << "http: \"127.0.0.1:" << monitor_port_ << "\"\n"
      << "log_file: " << quoted(dir_ / "nats-server.log") << "\n"
      << "jetstream {\n  store_dir: " << quoted(dir_ / "store") << "\n}\n";
    if (opts_.tls) {
        const Tls &t = *opts_.tls;
        fs::copy_file(t.ca_cert, dir_ / "tls-ca.pem",
                      fs::copy_options::overwrite_existing);
        fs::copy_file(t.server_cert, dir_ / "tls-cert.pem",
                      fs::copy_options::overwrite_existing);
        fs::copy_file(t.server_key, dir_ / "tls-key.pem",
                      fs::copy_options::overwrite_existing);
        c << "tls {\n"
          << "  cert_file: " << quoted(dir_ / "tls-cert.pem") << "\n"
          << "  key_file: " << quoted(dir_ / "tls-key.pem") << "\n"
          << "  ca_file: " << quoted(dir_ / "tls-ca.pem") << "\n"
          << "  verify: " << (t.require_client_cert ? "true" : "false") << "\n"
          << "  timeout: 5\n}\n";
    }
    if (!opts_.user.empty())
        c << "authorization {\n  user: " << quoted(opts_.user)
          << "\n  password: " << quoted(opts_.password) << "\n}\n";
    else if (!opts_.token.empty())
        c << "authorization {\n  token: " << quoted(opts_.token) << "\n}\n";
    if (!cluster_name_.empty()) {
        c << "cluster {\n  name: " << quoted(cluster_name_)
          << "\n  listen: \"127.0.0.1:" << cluster_port_ << "\"\n  routes: [\n";
        for (int r : route_ports_)
            c << "    \"nats-route://127.0.0.1:" << r << "\"\n";
        c << "  ]\n}\n";
    }
    for (const auto &l : opts_.extra_config)
        c << l << "\n";
    write_file(dir_ / "nats-server.conf", c.str(), fs::perms(0600));
}

void NatsServer::launch()
{
    log_offset_ = read_file_if_exists(dir_ / "nats-server.log").size();
    std::vector<std::string> argv;
    if (std::string sp = setpriv(); !sp.empty())
        argv = {sp, "--pdeathsig", "KILL"};
    argv.insert(argv.end(), {binary(), "-c", dir_ / "nats-server.conf"});
    SpawnOptions so;
    // Until log_file is open (config errors) the server writes to stderr.
    so.stdout_path = dir_ / "nats-server.out";
    launched_ = Clock::now();
    proc_ = std::make_unique<Process>(argv, so);
}

void NatsServer::wait_ready(Clock::time_point deadline)
{
    // A cluster node's full /healthz also wants every stream replica on it
    // current, which never happens while its group lacks a quorum.
    const std::string health =
        cluster_name_.empty() ? "/healthz" : "/healthz?js-server-only=true";
    std::string last = "no answer";
    for (;;) {
        if (!proc_->poll().running()) {
            std::string msg = "nats-server " + name_ + " in " + dir() +
                              " exited during start-up (" +
                              proc_->poll().text() + "):\n" + log_tail();
            throw std::runtime_error(msg);
        }
        if (client_port_greets(port_)) {
            HttpReply h = http_get(monitor_port_, health, 1s);
            if (h.status == 200)
                break;
            last = h.status == 0 ? "no answer from the monitoring port"
                                 : std::to_string(h.status) + " " + h.body;
        }
        if (Clock::now() >= deadline) {
            proc_->stop(kStopGrace);
            throw std::runtime_error("nats-server " + name_ + " in " + dir() +
                                     " was not ready in time (" + health +
                                     ": " + last + "):\n" + log_tail());
        }
        std::this_thread::sleep_for(kPollEvery);
    }
    start_time_ = std::chrono::duration_cast<std::chrono::milliseconds>(
        Clock::now() - launched_);
}

void NatsServer::start()
{
    if (running())
        return;
    launch();
    wait_ready(Clock::now() + opts_.start_timeout);
}

bool NatsServer::port_taken() const
{
    std::string log = read_file_if_exists(dir_ / "nats-server.log");
    return log.find("address already in use", log_offset_) != std::string::npos;
}

void NatsServer::start_picking()
{
    for (int attempt = 1;; ++attempt) {
        try {
            start();
            return;
        } catch (const std::runtime_error &) {
            if (attempt == kPortAttempts || !port_taken())
                throw;
            pick_ports();
            write_config();
        }
    }
}

void NatsServer::stop()
{
    if (!running())
        return;
    proc_->stop(kStopGrace);
}

void NatsServer::kill()
{
    if (!running())
        return;
    proc_->kill_now();
}

void NatsServer::restart()
{
    stop();
    start();
}

bool NatsServer::running() const
{
    return proc_ != nullptr && proc_->poll().running();
}

pid_t NatsServer::pid() const
{
    return running() ? proc_->pid() : 0;
}

std::string NatsServer::url() const
{
    return "nats://" + host() + ":" + std::to_string(port_);
}

std::string NatsServer::tls_url() const
{
    return opts_.tls ? "tls://" + host() + ":" + std::to_string(port_) : "";
}

std::string NatsServer::monitor(const std::string &path) const
{
    HttpReply r = http_get(monitor_port_, path, 2s);
    if (r.status != 200)
        throw std::runtime_error(
            "GET " + path + " on nats-server " + name_ + "'s port " +
            std::to_string(monitor_port_) + ": " +
            (r.status == 0 ? "no answer" : std::to_string(r.status)) + " " +
            r.body);
    return r.body;
}

std::string NatsServer::log_tail(size_t max_bytes) const
{
    return "--- " + name_ + " stderr ---\n" +
           tail_of(read_file_if_exists(dir_ / "nats-server.out"), max_bytes) +
           "\n--- " + name_ + " nats-server.log ---\n" +
           tail_of(read_file_if_exists(dir_ / "nats-server.log"), max_bytes);
}

// --- NatsCluster ---

NatsCluster::NatsCluster() : NatsCluster(Options{}) {}

NatsCluster::NatsCluster(Options opts) : opts_(std::move(opts))
{
    if (auto why = NatsServer::unavailable())
        throw std::runtime_error(*why);
    make_nodes();
    if (!opts_.start)
        return;
    for (int attempt = 1;; ++attempt) {
        try {
            start();
            return;
        } catch (const std::runtime_error &) {
            bool taken = false;
            for (auto &n : nodes_)
                taken = taken || n->port_taken();
            if (attempt == kPortAttempts || !taken)
                throw;
            stop();
            make_nodes(); // new ports, new (empty) directories
        }
    }
}

NatsCluster::~NatsCluster()
{
    try {
        stop();
    } catch (...) {
    }
}

void NatsCluster::make_nodes()
{
    constexpr size_t kNodes = 3;
    // All nine ports bound at once, so that they differ.
    std::vector<DeadPort> held;
    for (size_t i = 0; i < 3 * kNodes; ++i)
        held.push_back(DeadPort::refusing());
    nodes_.clear();
    for (size_t i = 0; i < kNodes; ++i) {
        NatsServer::Member m;
        m.name = "n" + std::to_string(i + 1);
        m.cluster = opts_.name;
        m.port = held[3 * i].port();
        m.monitor_port = held[3 * i + 1].port();
        m.cluster_port = held[3 * i + 2].port();
        for (size_t j = 0; j < kNodes; ++j)
            if (j != i)
                m.routes.push_back(held[3 * j + 2].port());
        NatsServer::Options o;
        o.start = false;
        o.extra_config = opts_.extra_config;
        o.start_timeout = opts_.start_timeout;
        nodes_.push_back(
            std::unique_ptr<NatsServer>(new NatsServer(std::move(o), m)));
    }
}

void NatsCluster::start()
{
    auto t0 = Clock::now();
    auto deadline = t0 + opts_.start_timeout;
    // All at once: the first node is ready only when a meta leader is
    // elected, which needs two of the three.
    std::vector<NatsServer *> launched;
    for (auto &n : nodes_)
        if (!n->running()) {
            n->launch();
            launched.push_back(n.get());
        }
    try {
        for (NatsServer *n : launched)
            n->wait_ready(deadline);
    } catch (const std::runtime_error &e) {
        for (NatsServer *n : launched)
            n->kill();
        throw std::runtime_error(std::string(e.what()) +
                                 "\n--- the other nodes ---\n" + log_tail());
    }
    // Settled for kRouteSettle: route retries still pending from the
    // start (every 1 s) can break a route that both ends then drop as a
    // duplicate, and until it is back a reply across it is lost.
    std::optional<Clock::time_point> since;
    for (;;) {
        std::string why = unsettled(launched);
        auto now = Clock::now();
        if (!why.empty())
            since.reset();
        else if (!since)
            since = now;
        if (since && (launched.empty() || now - *since >= kRouteSettle))
            break;
        if (now >= deadline)
            throw std::runtime_error(
                "the NATS cluster did not settle in " +
                std::to_string(opts_.start_timeout.count()) + " s (" + why +
                "):\n" + log_tail());
        std::this_thread::sleep_for(kPollEvery);
    }
    start_time_ = std::chrono::duration_cast<std::chrono::milliseconds>(
        Clock::now() - t0);
}

std::string
NatsCluster::unsettled(const std::vector<NatsServer *> &launched) const
{
    // Every running node names the same meta leader...
    std::string leader;
    size_t others = 0;
    const NatsServer *ln = nullptr;
    for (const auto &n : nodes_) {
        if (!n->running())
            continue;
        HttpReply j = http_get(n->monitor_port(), "/jsz", 1s);
        std::string l = json_string(j.body, "leader");
        if (l.empty())
            return n->name() + " knows no meta leader";
        if (!leader.empty() && l != leader)
            return "meta leader " + leader + " or " + l;
        leader = l;
        if (n->name() == l)
            ln = n.get();
        else
            ++others;
    }
    if (ln == nullptr)
        return "meta leader " + leader + " is not running";
    // ...which lists each other running node as a current replica.
    std::string jsz = http_get(ln->monitor_port(), "/jsz", 1s).body;
    static const std::regex current("\"current\"\\s*:\\s*true");
    if (static_cast<size_t>(
            std::distance(std::sregex_iterator(jsz.begin(), jsz.end(), current),
                          std::sregex_iterator())) < others)
        return "meta leader " + leader + " does not see every node current";
    // A node that rejoined knows the meta leader before its stream and
    // consumer replicas have caught up: the full /healthz waits for those.
    for (const NatsServer *n : launched) {
        HttpReply h = http_get(n->monitor_port(), "/healthz", 1s);
        if (h.status != 200)
            return n->name() + " /healthz: " + std::to_string(h.status) + " " +
                   h.body;
    }
    // A full mesh of routes: a route is not relayed, so a missing one
    // loses the messages between its two ends.
    std::vector<std::pair<const NatsServer *, std::string>> ids;
    for (const auto &n : nodes_)
        if (n->running())
            ids.emplace_back(
                n.get(),
                json_string(http_get(n->monitor_port(), "/varz", 1s).body,
                            "server_id"));
    static const std::regex remote("\"remote_id\"\\s*:\\s*\"([^\"]*)\"");
    for (const auto &[n, id] : ids) {
        std::string routez = http_get(n->monitor_port(), "/routez", 1s).body;
        std::string peers;
        for (auto it =
                 std::sregex_iterator(routez.begin(), routez.end(), remote);
             it != std::sregex_iterator(); ++it)
            peers += (*it)[1].str() + " ";
        for (const auto &[m, mid] : ids)
            if (m != n &&
                (mid.empty() || peers.find(mid + " ") == std::string::npos))
                return "no route from " + n->name() + " to " + m->name();
    }
    return "";
}

void NatsCluster::stop()
{
    for (auto &n : nodes_)
        n->stop();
}

NatsServer &NatsCluster::node(size_t i)
{
    return *nodes_.at(i);
}

const NatsServer &NatsCluster::node(size_t i) const
{
    return *nodes_.at(i);
}

std::string NatsCluster::urls() const
{
    std::string s;
    for (const auto &n : nodes_)
        s += (s.empty() ? "" : ",") + n->url();
    return s;
}

std::string NatsCluster::meta_leader() const
{
    for (const auto &n : nodes_) {
        if (!n->running())
            continue;
        try {
            std::string l = json_string(n->monitor("/jsz"), "leader");
            if (!l.empty())
                return l;
        } catch (const std::runtime_error &) {
        }
    }
    return "";
}

std::string NatsCluster::log_tail(size_t max_bytes) const
{
    std::string s;
    for (const auto &n : nodes_)
        s += n->log_tail(max_bytes) + "\n";
    return s;
}

} // namespace todd::test
