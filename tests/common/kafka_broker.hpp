// SPDX-License-Identifier: Apache-2.0
// A private Apache Kafka 4.x broker for tests and benchmarks: one KRaft node
// (broker and controller in one JVM) on 127.0.0.1, its ports picked free at
// run time, its data, cluster id and logs in a temporary directory that is
// removed afterwards. Nothing is shared with another broker or test run.
//
//   if (auto why = todd::test::KafkaBroker::unavailable())
//       GTEST_SKIP() << *why;
//   todd::test::KafkaBroker broker; // started, or throws with the log
//   ... broker.bootstrap() ... broker.restart() ...
//
// The broker is share/scripts/kafka-broker's (`run` mode: the one source of
// its configuration, see docs/kafka-broker.md), started as a child of the
// test: the JVM runs from the Maven jars that `kafka-broker classpath`
// caches. The script's path is compiled in from meson (the source tree's
// share/scripts/kafka-broker); TODD_KAFKA_BROKER_SCRIPT overrides it.
// Set TODD_REQUIRE_KAFKA=1 (CI does) to turn a missing broker (no java, no
// jars) into a failure instead of a skip: see TODD_SKIP_WITHOUT_KAFKA.
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

class KafkaBroker {
  public:
    /** An SSL listener on tls_port() with these PEM files (copied into the
     *  broker's directory; the key unencrypted, PKCS#1 or PKCS#8). */
    struct Tls {
        std::string ca_cert, server_cert, server_key;
        /** Refuse clients without a certificate signed by ca_cert. */
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
        /** Also listen for SSL clients on tls_port(). */
        std::optional<Tls> tls;
        /** Extra server.properties lines, "key=value" (they win). */
        std::vector<std::string> extra_config;
        /** How long start() waits for the broker to answer. */
        std::chrono::seconds start_timeout{90};
    };

    /**
     * Why no broker can be started here (the script, java 17+ or Maven
     * missing, the jars not resolvable), or nullopt when it can. The first
     * call resolves the jars with `kafka-broker classpath` (bounded, 300 s;
     * no network once cached); the answer is kept for the process.
     */
    static std::optional<std::string> unavailable();
    /** The path of share/scripts/kafka-broker used. */
    static std::string script();

    /** Make the directory; start unless opts.start is false. Throws
     *  std::runtime_error (with the broker's log tail) on failure. With
     *  start false the ports are picked here, so that bootstrap() is known
     *  before start() (they are not held: start() fails if one was taken
     *  meanwhile); else the first start() picks them, and picks again when
     *  one was taken. */
    KafkaBroker();
    explicit KafkaBroker(Options opts);
    /** Stops the broker (if running) and removes its directory. */
    ~KafkaBroker();

    KafkaBroker(const KafkaBroker &) = delete;
    KafkaBroker &operator=(const KafkaBroker &) = delete;

    /** Start the broker and wait until it answers a metadata request. The
     *  first start formats the storage (a fresh cluster id) and picks the
     *  ports; later ones keep the ports and the data. No-op when running.
     *  Throws std::runtime_error with the log's errors and tail. */
    void start();
    /** Stop it cleanly (SIGTERM; SIGKILL after 30 s) and wait for the
     *  exit. No-op when not running. */
    void stop();
    /** SIGKILL the broker's JVM: a crash (unflushed data stays in the page
     *  cache, so what it acknowledged survives). No-op when not running. */
    void kill();
    /** stop() then start(): same ports, same data. */
    void restart();
    /** True while the broker runs (a crash is noticed at once). */
    bool running() const;

    std::string host() const { return "127.0.0.1"; }
    /** The PLAINTEXT listener's port. */
    int port() const { return port_; }
    /** The SSL listener's port, 0 without TLS. */
    int tls_port() const { return tls_port_; }
    /** The KRaft controller's port. */
    int controller_port() const { return controller_port_; }
    /** "127.0.0.1:<port()>", for bootstrap.servers. */
    std::string bootstrap() const;
    /** "127.0.0.1:<tls_port()>", empty without TLS. */
    std::string tls_bootstrap() const;
    /** The private directory (server.properties, data/, broker.log). */
    std::string dir() const { return dir_.path(); }
    /** The broker JVM's process id, 0 when stopped. */
    pid_t pid() const { return running() ? pid_ : 0; }
    /** How long the last start() took until the broker answered. */
    std::chrono::milliseconds last_start_time() const { return start_time_; }
    /** The script's messages and the last bytes of the broker's log. */
    std::string log_tail(size_t max_bytes = 4000) const;

  private:
    std::vector<std::string> run_argv() const;
    void read_ports();

    Options opts_;
    TempDir dir_;
    std::unique_ptr<Process> run_; // kafka-broker run: the JVM's parent
    int port_ = 0, tls_port_ = 0, controller_port_ = 0;
    pid_t pid_ = 0;
    std::chrono::milliseconds start_time_{0};
};

/**
 * One private broker for all the tests of a binary, started when the test
 * program starts and stopped when it ends; null when no broker can run here
 * (tests then call TODD_SKIP_WITHOUT_KAFKA()). Register it with
 * ::testing::AddGlobalTestEnvironment(new SharedKafkaBroker).
 */
class SharedKafkaBroker : public ::testing::Environment {
  public:
    void SetUp() override
    {
        if (KafkaBroker::unavailable())
            return;
        try {
            broker_ = std::make_unique<KafkaBroker>();
        } catch (const std::exception &e) {
            error_ = e.what(); // an exception here would end the program
        }
    }
    void TearDown() override { broker_.reset(); }
    /** The broker, or nullptr when none could be started. */
    static KafkaBroker *get() { return broker_.get(); }
    /** Why the broker did not start although it could have ("" else). */
    static const std::string &error() { return error_; }

  private:
    static inline std::unique_ptr<KafkaBroker> broker_;
    static inline std::string error_;
};

/** True when TODD_REQUIRE_KAFKA is set to anything but "" or "0". */
inline bool kafka_required()
{
    const char *v = std::getenv("TODD_REQUIRE_KAFKA");
    return v != nullptr && *v != '\0' && std::string(v) != "0";
}

} // namespace todd::test

/**
 * In a gtest test or SetUp: skip with a clear message when no Kafka broker
 * can run here, or fail when TODD_REQUIRE_KAFKA is set (CI).
 */
#define TODD_SKIP_WITHOUT_KAFKA()                                              \
    do {                                                                       \
        if (auto todd_why_ = ::todd::test::KafkaBroker::unavailable()) {       \
            if (::todd::test::kafka_required())                                \
                FAIL() << *todd_why_ << " (TODD_REQUIRE_KAFKA is set)";        \
            GTEST_SKIP() << *todd_why_;                                        \
        }                                                                      \
    } while (0)
