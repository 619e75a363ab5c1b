// SPDX-License-Identifier: Apache-2.0
// A private rabbitmq-server for tests and benchmarks: loopback only, free
// AMQP and distribution ports chosen at run time, a unique node name and its
// own data and log directories under a temporary directory. Nothing is
// shared with a system broker or with other test runs.
//
//   if (auto why = todd::test::RabbitmqBroker::unavailable())
//       GTEST_SKIP() << *why;
//   todd::test::RabbitmqBroker broker; // started, or throws with the log
//   ... broker.port() ... broker.rabbitmqctl({"list_queues", "name"}) ...
//
// Set TODD_REQUIRE_RABBITMQ=1 (CI does) to turn a missing rabbitmq-server
// into a failure instead of a skip: see TODD_SKIP_WITHOUT_RABBITMQ.
// TODD_RABBITMQ_BIN_DIR names the directory of rabbitmq-server and
// rabbitmqctl (default /usr/lib/rabbitmq/bin); an empty directory shows what
// a machine without RabbitMQ reports.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace todd::test {

/** Files of a throw-away PKI made with openssl (make_test_pki). */
struct TestPki {
    std::string dir;
    std::string ca_cert;     ///< the CA that signed server and client
    std::string server_cert; ///< CN=localhost, SAN localhost + 127.0.0.1
    std::string server_key;
    std::string client_cert; ///< CN=todd-test-client
    std::string client_key;
    std::string other_ca_cert; ///< an unrelated CA (for "wrong CA" tests)
};

/**
 * Make a CA, a server and a client certificate (RSA 2048, valid 2 days)
 * under dir with the openssl command. Throws std::runtime_error with
 * openssl's output when a step fails.
 */
TestPki make_test_pki(const std::string &dir);

/** A free TCP port on 127.0.0.1 at the time of the call: only for programs
 *  that cannot be given a socket or bind port 0 (rabbitmq-server); the
 *  caller must retry when the port is taken before it is used. */
int free_tcp_port();

/** Run a program (argv[0] looked up in PATH), capture stdout+stderr. */
struct RunResult {
    int exit_code = -1; ///< -1 when killed by a signal or timed out
    bool timed_out = false;
    std::string output;
};
RunResult
run_capture(const std::vector<std::string> &argv,
            std::chrono::milliseconds timeout = std::chrono::seconds(60),
            const std::vector<std::string> &extra_env = {});

class RabbitmqBroker {
  public:
    /** TLS listener configuration (files are copied into the broker dir). */
    struct Tls {
        std::string ca_cert, server_cert, server_key;
        /** Ask clients for a certificate and check it against ca_cert. */
        bool verify_peer = false;
        /** Refuse clients without a certificate (needs verify_peer). */
        bool fail_if_no_peer_cert = false;
    };

    struct Options {
        /** Start in the constructor. */
        bool start = true;
        /** Also listen for amqps on tls_port(). */
        std::optional<Tls> tls;
        /** Extra rabbitmq.conf lines (new-style "key = value"). */
        std::vector<std::string> extra_config;
        /** Prefix of the node name; a unique suffix is appended. */
        std::string name_prefix = "todd-test";
        /** How long start() waits for the node to answer. */
        std::chrono::seconds start_timeout{90};
    };

    /**
     * Why no broker can be started here (rabbitmq-server or rabbitmqctl
     * missing), or nullopt when it can.
     */
    static std::optional<std::string> unavailable();

    /** Prepare directories and ports; start unless opts.start is false.
     *  Throws std::runtime_error (with the broker's log tail) on failure. */
    RabbitmqBroker();
    explicit RabbitmqBroker(Options opts);
    /** Stops the node (if running) and removes its directory. */
    ~RabbitmqBroker();

    RabbitmqBroker(const RabbitmqBroker &) = delete;
    RabbitmqBroker &operator=(const RabbitmqBroker &) = delete;

    /** Start the node and wait until `rabbitmqctl status` answers. Same
     *  ports and directories every time. No-op when already running. */
    void start();
    /** Stop the node (rabbitmqctl stop, then SIGKILL after a grace time)
     *  and wait for its processes to exit. No-op when not running. */
    void stop();
    /** Kill the node abruptly (SIGKILL to its process group): a crash. */
    void kill();
    /** stop() then start(). */
    void restart();
    /** Stop/start the RabbitMQ application inside a running node: closes
     *  every client connection, drops non-durable queues, keeps ports. */
    void stop_app();
    void start_app();
    /** True while the node process runs. */
    bool running() const { return pid_ > 0; }

    /** rabbitmqctl -q -n <node> args...; returns its output. Throws
     *  std::runtime_error when it fails, unless exit_code is given. */
    std::string rabbitmqctl(const std::vector<std::string> &args,
                            int *exit_code = nullptr) const;

    /** Add a user with a password and full rights on vhost "/". */
    void add_user(const std::string &user, const std::string &password);

    std::string host() const { return "127.0.0.1"; }
    int port() const { return port_; }
    /** amqps port, 0 without TLS. */
    int tls_port() const { return tls_port_; }
    int dist_port() const { return dist_port_; }
    std::string node() const { return node_; }
    /** The private directory (mnesia, log, config). */
    std::string dir() const { return dir_; }
    /** The OS process id of the node's session leader, 0 when stopped. */
    pid_t pid() const { return pid_; }
    /** Last lines of the node's log and console output, for messages. */
    std::string log_tail(size_t max_bytes = 4000) const;

  private:
    std::vector<std::string> env() const;
    void pick_ports();
    void stop_epmd() noexcept;
    void write_config();
    bool wait_exit(std::chrono::milliseconds timeout);

    Options opts_;
    std::string dir_, node_;
    int port_ = 0, tls_port_ = 0, dist_port_ = 0;
    int epmd_port_ = 0; // a private Erlang port mapper, stopped with us
    pid_t pid_ = 0;
    bool as_root_ = false;
};

/**
 * One private broker for all the tests of a binary, started when the test
 * program starts and stopped when it ends; null when rabbitmq-server is not
 * installed (tests then call TODD_SKIP_WITHOUT_RABBITMQ()). Register it with
 * ::testing::AddGlobalTestEnvironment(new SharedRabbitmqBroker).
 */
class SharedRabbitmqBroker : public ::testing::Environment {
  public:
    void SetUp() override
    {
        if (!RabbitmqBroker::unavailable())
            broker_ = std::make_unique<RabbitmqBroker>();
    }
    void TearDown() override { broker_.reset(); }
    /** The broker, or nullptr when none could be started. */
    static RabbitmqBroker *get() { return broker_.get(); }

  private:
    static inline std::unique_ptr<RabbitmqBroker> broker_;
};

} // namespace todd::test

/**
 * In a gtest test or SetUp: skip with a clear message when rabbitmq-server
 * is not installed, or fail when TODD_REQUIRE_RABBITMQ is set (CI).
 */
#define TODD_SKIP_WITHOUT_RABBITMQ()                                           \
    do {                                                                       \
        if (auto todd_why_ = ::todd::test::RabbitmqBroker::unavailable()) {    \
            if (std::getenv("TODD_REQUIRE_RABBITMQ") != nullptr)               \
                FAIL() << *todd_why_ << " (TODD_REQUIRE_RABBITMQ is set)";     \
            GTEST_SKIP() << *todd_why_;                                        \
        }                                                                      \
    } while (0)
