// SPDX-License-Identifier: Apache-2.0
// Private nats-server processes (2.9+, JetStream on) for tests and
// benchmarks: one server (NatsServer) or a three-node JetStream cluster
// (NatsCluster) on 127.0.0.1, their ports picked free at run time, their
// config, JetStream store and log in a temporary directory that is removed
// afterwards. Nothing is shared with another server or test run.
//
//   if (auto why = todd::test::NatsServer::unavailable())
//       GTEST_SKIP() << *why;
//   todd::test::NatsServer server; // started, or throws with the log
//   ... server.url() ... server.restart() ...
//
// The binary is nats-server from PATH (or /usr/sbin, where Debian puts it);
// TODD_NATS_SERVER names another one. Set TODD_REQUIRE_NATS=1 (CI does) to
// turn a missing server into a failure instead of a skip: see
// TODD_SKIP_WITHOUT_NATS. See docs/nats-server.md.
#pragma once

#include "process.hpp"
#include "rabbitmq_broker.hpp" // TestPki, make_test_pki, run_capture
#include "temp_dir.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace todd::test {

class NatsCluster;

class NatsServer {
  public:
    /** TLS on the client port (PEM files, copied into dir()). NATS has one
     *  client listener: with TLS it requires TLS, so tls_port() is port()
     *  and a plain client is refused. */
    struct Tls {
        std::string ca_cert, server_cert, server_key;
        /** `verify: true`: refuse clients without a certificate signed by
         *  ca_cert. */
        bool require_client_cert = false;
        /** The CA and server files of a make_test_pki() PKI. */
        static Tls from(const TestPki &pki)
        {
            return Tls{pki.ca_cert, pki.server_cert, pki.server_key, false};
        }
    };

    struct Options {
        /** Start in the constructor. */
        bool start = true;
        /** TLS required on the client port. */
        std::optional<Tls> tls;
        /** With user non-empty: clients must give this user and password. */
        std::string user, password;
        /** With token non-empty: clients must give this token (not together
         *  with user). */
        std::string token;
        /** Extra nats-server.conf lines, written last: a repeated key wins
         *  over ours. */
        std::vector<std::string> extra_config;
        /** How long start() waits for the server to be ready. */
        std::chrono::seconds start_timeout{30};
    };

    /**
     * Why no server can be started here (nats-server missing, or older than
     * 2.9), or nullopt when it can. Runs `nats-server --version` once per
     * process (bounded, 10 s).
     */
    static std::optional<std::string> unavailable();
    /** The nats-server binary used (TODD_NATS_SERVER, PATH, /usr/sbin);
     *  "" when none is found. */
    static std::string binary();

    /** Make the directory and pick the ports; start unless opts.start is
     *  false. The ports are not held until start(): when the constructor
     *  starts the server and a port was taken meanwhile, it picks new ones
     *  (5 attempts); a later start() fails instead. Throws
     *  std::runtime_error (with the log tail) on failure. */
    NatsServer();
    explicit NatsServer(Options opts);
    /** Stops the server (if running) and removes its directory. */
    ~NatsServer();

    NatsServer(const NatsServer &) = delete;
    NatsServer &operator=(const NatsServer &) = delete;

    /** Start the server and wait until it is ready: its client port sends
     *  INFO and the monitoring port's /healthz answers 200 (for a cluster
     *  node: /healthz?js-server-only=true, i.e. a meta leader is known and
     *  this node is current with it). Same ports and store every time.
     *  No-op when running. Throws std::runtime_error with the log tail. */
    void start();
    /** Stop it cleanly (SIGTERM; SIGKILL after 10 s) and wait for the exit.
     *  No-op when not running. */
    void stop();
    /** SIGKILL the server: a crash. What JetStream acknowledged is in the
     *  page cache and survives. No-op when not running. */
    void kill();
    /** stop() then start(): same ports, same JetStream store. */
    void restart();
    /** True while the server process runs (a crash is noticed at once). */
    bool running() const;

    std::string host() const { return "127.0.0.1"; }
    /** The client port (TLS-only when Options::tls is set). */
    int port() const { return port_; }
    /** port() with TLS, 0 without. */
    int tls_port() const { return opts_.tls ? port_ : 0; }
    /** The HTTP monitoring port (/healthz, /varz, /jsz...). */
    int monitor_port() const { return monitor_port_; }
    /** The route port of a cluster node, 0 for a lone server. */
    int cluster_port() const { return cluster_port_; }
    /** The server_name (n1..n3 in a NatsCluster). */
    const std::string &name() const { return name_; }
    /** "nats://127.0.0.1:<port()>". */
    std::string url() const;
    /** "tls://127.0.0.1:<port()>", "" without TLS. */
    std::string tls_url() const;
    /** The private directory (nats-server.conf, store/, nats-server.log). */
    std::string dir() const { return dir_.path(); }
    /** The server's process id, 0 when stopped. */
    pid_t pid() const;
    /** How long the last start() took until the server was ready. */
    std::chrono::milliseconds last_start_time() const { return start_time_; }
    /** The body of GET <path> on the monitoring port ("/jsz", ...); throws
     *  std::runtime_error when it does not answer 200 within 2 s. */
    std::string monitor(const std::string &path) const;
    /** Its stderr and the last bytes of its log (all starts). */
    std::string log_tail(size_t max_bytes = 4000) const;

  private:
    friend class NatsCluster;
    struct Member; // a cluster node's name, cluster and route ports

    NatsServer(Options opts, const Member &m);
    void pick_ports();
    void write_config() const;
    void launch();
    void wait_ready(std::chrono::steady_clock::time_point deadline);
    // True when the last launch failed on a port another process held.
    bool port_taken() const;
    void start_picking(); // the constructor's start, re-picking taken ports

    Options opts_;
    TempDir dir_;
    std::unique_ptr<Process> proc_;
    std::string name_ = "todd-nats", cluster_name_;
    int port_ = 0, monitor_port_ = 0, cluster_port_ = 0;
    std::vector<int> route_ports_;
    size_t log_offset_ = 0; // where this start's log begins
    std::chrono::steady_clock::time_point launched_;
    std::chrono::milliseconds start_time_{0};
};

/**
 * Three JetStream nodes on loopback in one cluster: server_name n1..n3,
 * each with its own client, route and monitoring port and store, each
 * routing to the other two. start() returns once a meta leader is elected,
 * every running node is current with it and the routes are complete, so an
 * R3 stream can be created right away.
 */
class NatsCluster {
  public:
    struct Options {
        /** Start in the constructor. */
        bool start = true;
        /** The cluster's name (cluster { name }). */
        std::string name = "todd";
        /** Extra config lines for every node (written last). */
        std::vector<std::string> extra_config;
        /** How long start() waits for nodes and the meta leader. */
        std::chrono::seconds start_timeout{60};
    };

    /** Pick all ports (held together, so distinct, then released) and
     *  write the configs; start unless opts.start is false (then taken
     *  ports are picked again, 5 attempts). Throws std::runtime_error. */
    NatsCluster();
    explicit NatsCluster(Options opts);
    /** Stops every node and removes their directories. */
    ~NatsCluster();

    NatsCluster(const NatsCluster &) = delete;
    NatsCluster &operator=(const NatsCluster &) = delete;

    /** Launch every stopped node at once (a lone node cannot elect a meta
     *  leader) and wait until each is ready, all agree on one meta leader
     *  that sees every other running node current, the launched nodes'
     *  full /healthz is ok (their stream replicas caught up) and the routes
     *  form a full mesh, for 1.5 s on end (route retries of the start are
     *  over by then). About 2 s for a fresh cluster here. No-op (but the
     *  check) when all run. Throws std::runtime_error with the log tails. */
    void start();
    /** stop() every node. */
    void stop();
    /** The number of nodes (3). */
    size_t size() const { return nodes_.size(); }
    /** Node i (0..2; server_name "n<i+1>"): kill()/stop()/start()/restart()
     *  it alone. Its start() waits only until it knows the meta leader: use
     *  NatsCluster::start() to also wait for the leader to see it current.
     *  Throws std::out_of_range. */
    NatsServer &node(size_t i);
    const NatsServer &node(size_t i) const;
    /** "nats://127.0.0.1:P1,nats://127.0.0.1:P2,nats://127.0.0.1:P3". */
    std::string urls() const;
    /** The meta leader's server_name as a running node reports it, or ""
     *  when none knows one. */
    std::string meta_leader() const;
    /** How long the last start() took. */
    std::chrono::milliseconds last_start_time() const { return start_time_; }
    /** Every node's log tail. */
    std::string log_tail(size_t max_bytes = 3000) const;

  private:
    void make_nodes();
    // Why the cluster is not ready yet, "" when it is: a meta leader that
    // all agree on and that sees everyone current, `launched` healthy, and
    // a full mesh of routes.
    std::string unsettled(const std::vector<NatsServer *> &launched) const;

    Options opts_;
    std::vector<std::unique_ptr<NatsServer>> nodes_;
    std::chrono::milliseconds start_time_{0};
};

/**
 * One private server for all the tests of a binary, started when the test
 * program starts and stopped when it ends; null when no server can run here
 * (tests then call TODD_SKIP_WITHOUT_NATS()). Register it with
 * ::testing::AddGlobalTestEnvironment(new SharedNatsServer).
 */
class SharedNatsServer : public ::testing::Environment {
  public:
    void SetUp() override
    {
        if (NatsServer::unavailable())
            return;
        try {
            server_ = std::make_unique<NatsServer>();
        } catch (const std::exception &e) {
            error_ = e.what(); // an exception here would end the program
        }
    }
    void TearDown() override { server_.reset(); }
    /** The server, or nullptr when none could be started. */
    static NatsServer *get() { return server_.get(); }
    /** Why the server did not start although it could have ("" else). */
    static const std::string &error() { return error_; }

  private:
    static inline std::unique_ptr<NatsServer> server_;
    static inline std::string error_;
};

/** True when TODD_REQUIRE_NATS is set to anything but "" or "0". */
inline bool nats_required()
{
    const char *v = std::getenv("TODD_REQUIRE_NATS");
    return v != nullptr && *v != '\0' && std::string(v) != "0";
}

} // namespace todd::test

/**
 * In a gtest test or SetUp: skip with a clear message when no nats-server
 * can run here, or fail when TODD_REQUIRE_NATS is set (CI).
 */
#define TODD_SKIP_WITHOUT_NATS()                                               \
    do {                                                                       \
        if (auto todd_why_ = ::todd::test::NatsServer::unavailable()) {        \
            if (::todd::test::nats_required())                                 \
                FAIL() << *todd_why_ << " (TODD_REQUIRE_NATS is set)";         \
            GTEST_SKIP() << *todd_why_;                                        \
        }                                                                      \
    } while (0)
