// SPDX-License-Identifier: Apache-2.0
// Every program exits within 5 s of SIGTERM (status 0, or todd-comms
// check's documented 143) whatever its transport is doing: the real
// todd-server, todd-agent and todd-comms binaries, on loopback, ZeroMQ and
// RabbitMQ, Kafka and NATS, with a broker that was never there (connects that
// hang, logins that hang, refused), a private broker stopped after the
// program connected, TLS refused, and ZeroMQ peers gone.
#include "program.hpp"

#include "rabbitmq_broker.hpp"
#ifdef TODD_SIGNALS_NATS
#include "nats_server.hpp"
#endif
#ifdef TODD_SIGNALS_KAFKA
#include "kafka_broker.hpp"
#endif

#include <fstream>
#include <memory>
#include <optional>

using namespace sigtest;
using todd::test::RabbitmqBroker;

namespace {

constexpr auto exit_bound = 5s;

std::string plugin_dir(const std::string &name)
{
    return std::string(PLUGINS_BUILD_DIR) + "/" + name;
}

using Opts = std::vector<std::string>; // KEY=VALUE for --comms-opt

std::vector<std::string> with_opts(std::vector<std::string> argv,
                                   const Opts &opts)
{
    for (const auto &o : opts) {
        argv.push_back("--comms-opt");
        argv.push_back(o);
    }
    return argv;
}

std::unique_ptr<Program> agent(const TempDir &dir, const std::string &comms,
                               const Opts &opts)
{
    return std::make_unique<Program>(with_opts(
        {TODD_AGENT_EXE, "--comms", comms, "--plugin-dir", plugin_dir(comms),
         "--state-dir", dir.path() + "/agent-state", "--opt-dir",
         dir.path() + "/agent-opt", "--ip-addr-override", "127.0.0.1",
         "--testlet-dir", std::string(TODD_SOURCE_ROOT) + "/share/testlets",
         "--factcollector-dir",
         std::string(TODD_SOURCE_ROOT) + "/share/factcollectors",
         "--advert-interval", "1", "--log-level", "debug"},
        opts));
}

std::unique_ptr<Program> server(const TempDir &dir, const std::string &comms,
                                const Opts &opts)
{
    std::string opt = dir.path() + "/server-opt";
    std::filesystem::create_directories(opt + "/assets/testlets");
    std::string cfg = dir.path() + "/server.cfg";
    std::ofstream(cfg) << "[API]\nHost = 127.0.0.1\nPort = 0\nStreamPort = 0\n"
                          "[Assets]\nPort = 0\n"
                          "[LocalResources]\nIPAddrOverride = 127.0.0.1\n"
                          "OptDir = "
                       << opt << "\n";
    return std::make_unique<Program>(
        with_opts({TODD_SERVER_EXE, "--config", cfg, "--comms", comms,
                   "--plugin-dir", plugin_dir(comms), "--log-level", "debug"},
                  opts));
}

/** SIGTERM now; the program must exit with `status` within 5 s. */
void expect_prompt_exit(Program &p, const std::string &status = "exit 0")
{
    std::chrono::milliseconds took{};
    std::string got = p.terminate(exit_bound + 5s, &took);
    EXPECT_EQ(got, status) << p.output();
    EXPECT_LT(took, exit_bound) << got << "\n" << p.output();
}

Opts rabbit_at(int port, Opts more = {})
{
    more.insert(more.begin(),
                {"host=127.0.0.1", "port=" + std::to_string(port)});
    return more;
}

// Programs and the situations of their transport ----------------------------

enum class Prog { agent, server };

std::unique_ptr<Program> run(Prog which, const TempDir &dir,
                             const std::string &comms, const Opts &opts)
{
    return which == Prog::agent ? agent(dir, comms, opts)
                                : server(dir, comms, opts);
}

const char *name(Prog p)
{
    return p == Prog::agent ? "agent" : "server";
}

class Signals : public ::testing::TestWithParam<Prog> {};

/** What the program prints once it has finished starting. */
const char *started_line(Prog p)
{
    return p == Prog::agent ? "SIGINT or SIGTERM stops"
                            : "Serving ToDD Server API";
}

/** Run `which` on `comms` with opts; once its output says `when`
 *  (bounded), SIGTERM must end it within 5 s. */
void sigterm_when(Prog which, const std::string &comms, const Opts &opts,
                  const std::string &when)
{
    TempDir dir;
    auto p = run(which, dir, comms, opts);
    ASSERT_TRUE(p->wait_output(when, 60s))
        << name(which) << " never said '" << when << "':\n"
        << p->output();
    expect_prompt_exit(*p);
}

// (a) A broker that was never there. SIGTERM while the transport is still
// in its first connect: start() of the program has not returned yet.
TEST_P(Signals, RabbitmqConnectHangs)
{
    DeadPort dead(/*full=*/true); // SYNs dropped: connect() hangs
    sigterm_when(GetParam(), "rabbitmq", rabbit_at(dead.port()),
                 "rabbitmq: connecting");
}

TEST_P(Signals, RabbitmqLoginHangs)
{
    DeadPort dead(/*full=*/false); // connects, then never a byte
    sigterm_when(GetParam(), "rabbitmq", rabbit_at(dead.port()),
                 "rabbitmq: connecting");
}

TEST_P(Signals, RabbitmqLoginHangsAfterStartReturned)
{
    DeadPort dead(false);
    sigterm_when(GetParam(), "rabbitmq",
                 rabbit_at(dead.port(), {"connect_timeout=600000"}),
                 started_line(GetParam()));
}

TEST_P(Signals, RabbitmqRefusedAndRetrying)
{
    DeadPort refusing = DeadPort::refusing(); // connects refused at once
    sigterm_when(GetParam(), "rabbitmq", rabbit_at(refusing.port()),
                 "rabbitmq: connecting");
}

// (c) TLS refused: a TLS client at a port that never answers the
// handshake, at a plain AMQP port, and with a CA that did not sign the
// broker.
TEST_P(Signals, RabbitmqTlsHandshakeHangs)
{
    DeadPort dead(false);
    sigterm_when(GetParam(), "rabbitmq",
                 rabbit_at(dead.port(), {"tls=true", "tls_verify_peer=false",
                                         "tls_verify_hostname=false"}),
                 "rabbitmq: connecting");
}

todd::test::RabbitmqBroker::Tls tls_of(const todd::test::TestPki &pki,
                                       const RabbitmqBroker *)
{
    return {pki.ca_cert, pki.server_cert, pki.server_key};
}

#ifdef TODD_SIGNALS_KAFKA
todd::test::KafkaBroker::Tls tls_of(const todd::test::TestPki &pki,
                                    const todd::test::KafkaBroker *)
{
    return todd::test::KafkaBroker::Tls::from(pki);
}

#endif
#ifdef TODD_SIGNALS_NATS
todd::test::NatsServer::Tls tls_of(const todd::test::TestPki &pki,
                                   const todd::test::NatsServer *)
{
    return todd::test::NatsServer::Tls::from(pki);
}
#endif

/** One private broker of type B with a TLS listener for the binary, made
 *  on first use from a test-made PKI; none when B cannot run here. */
template <class B> class TlsBroker {
  public:
    static TlsBroker &get()
    {
        static TlsBroker b;
        return b;
    }
    B *broker() { return broker_.get(); }
    const todd::test::TestPki &pki() const { return pki_; }

  private:
    TlsBroker()
    {
        if (B::unavailable())
            return;
        pki_ = todd::test::make_test_pki(dir_.path());
        typename B::Options o;
        o.tls = tls_of(pki_, static_cast<const B *>(nullptr));
        broker_ = std::make_unique<B>(o);
    }
    TempDir dir_;
    todd::test::TestPki pki_;
    std::unique_ptr<B> broker_;
};

TEST_P(Signals, RabbitmqTlsWrongCa)
{
    TODD_SKIP_WITHOUT_RABBITMQ();
    auto &tb = TlsBroker<RabbitmqBroker>::get();
    sigterm_when(GetParam(), "rabbitmq",
                 rabbit_at(tb.broker()->tls_port(),
                           {"tls=true", "tls_ca=" + tb.pki().other_ca_cert}),
                 "TLS verification of the broker failed");
}

TEST_P(Signals, RabbitmqTlsAtPlainPort)
{
    TODD_SKIP_WITHOUT_RABBITMQ();
    auto &tb = TlsBroker<RabbitmqBroker>::get();
    sigterm_when(GetParam(), "rabbitmq",
                 rabbit_at(tb.broker()->port(),
                           {"tls=true", "tls_ca=" + tb.pki().ca_cert}),
                 "retrying");
}

// (b) A private broker stopped after the program connected.
TEST_P(Signals, RabbitmqBrokerStoppedAfterConnect)
{
    TODD_SKIP_WITHOUT_RABBITMQ();
    RabbitmqBroker broker;
    TempDir dir;
    auto p = run(GetParam(), dir, "rabbitmq", rabbit_at(broker.port()));
    ASSERT_TRUE(p->wait_output("rabbitmq: connected")) << p->output();
    size_t mark = p->output_size();
    broker.stop();
    ASSERT_TRUE(p->wait_output("rabbitmq: reconnecting", 60s, mark))
        << p->output();
    expect_prompt_exit(*p);
}

#ifdef TODD_SIGNALS_KAFKA
// Kafka (built with the plugin only): nothing at the address, an address
// that accepts connections and never answers, a private broker stopped
// after the program connected, and TLS with a CA that did not sign the
// broker.
Opts kafka_at(int port, Opts more = {})
{
    more.insert(more.begin(),
                "bootstrap_servers=127.0.0.1:" + std::to_string(port));
    return more;
}

TEST_P(Signals, KafkaRefusedAndRetrying)
{
    DeadPort refusing = DeadPort::refusing();
    sigterm_when(GetParam(), "kafka", kafka_at(refusing.port()),
                 "not answering");
}

// SIGTERM in the first connect: start() of the program has not returned.
TEST_P(Signals, KafkaNeverAnswers)
{
    DeadPort dead(/*full=*/false); // connects, then never a byte
    sigterm_when(GetParam(), "kafka", kafka_at(dead.port()),
                 "kafka: link connecting");
}

// The connection setup is allowed ten minutes: SIGTERM must not wait for
// it once the program has finished starting.
TEST_P(Signals, KafkaNeverAnswersAfterStartReturned)
{
    DeadPort dead(false);
    sigterm_when(GetParam(), "kafka",
                 kafka_at(dead.port(), {"connect_timeout_ms=600000"}),
                 started_line(GetParam()));
}

TEST_P(Signals, KafkaTlsHandshakeHangs)
{
    DeadPort dead(false);
    sigterm_when(GetParam(), "kafka",
                 kafka_at(dead.port(), {"security_protocol=ssl",
                                        "ssl_verify_hostname=false"}),
                 "kafka: link connecting");
}

TEST_P(Signals, KafkaBrokerStoppedAfterConnect)
{
    TODD_SKIP_WITHOUT_KAFKA();
    todd::test::KafkaBroker broker;
    TempDir dir;
    auto p = run(GetParam(), dir, "kafka", kafka_at(broker.port()));
    ASSERT_TRUE(p->wait_output("kafka: link connected", 60s)) << p->output();
    size_t mark = p->output_size();
    broker.stop();
    ASSERT_TRUE(p->wait_output("kafka: link reconnecting", 60s, mark))
        << p->output();
    expect_prompt_exit(*p);
}

TEST_P(Signals, KafkaTlsWrongCa)
{
    TODD_SKIP_WITHOUT_KAFKA();
    auto &tb = TlsBroker<todd::test::KafkaBroker>::get();
    sigterm_when(
        GetParam(), "kafka",
        kafka_at(tb.broker()->tls_port(),
                 {"security_protocol=ssl", "ssl_ca=" + tb.pki().other_ca_cert}),
        "certificate verify failed");
}
#endif

#ifdef TODD_SIGNALS_NATS
// NATS (built with the plugin only): nothing at the address, an address
// that accepts connections and never answers (nats.c's first connection
// attempt blocks and cannot be interrupted: stop must not wait for it), a
// private server stopped after the program connected, and TLS with a CA
// that did not sign the server.
Opts nats_at(int port, Opts more = {})
{
    more.insert(more.begin(),
                "servers=nats://127.0.0.1:" + std::to_string(port));
    return more;
}

TEST_P(Signals, NatsRefusedAndRetrying)
{
    DeadPort refusing = DeadPort::refusing();
    sigterm_when(GetParam(), "nats", nats_at(refusing.port()),
                 "nats: link reconnecting");
}

TEST_P(Signals, NatsConnectHangs)
{
    DeadPort dead(/*full=*/true); // SYNs dropped: connect() hangs
    sigterm_when(GetParam(), "nats", nats_at(dead.port()),
                 "nats: link connecting");
}

TEST_P(Signals, NatsNeverAnswersAfterStartReturned)
{
    DeadPort dead(/*full=*/false); // connects, then never a byte
    sigterm_when(GetParam(), "nats",
                 nats_at(dead.port(), {"connect_timeout_ms=600000"}),
                 started_line(GetParam()));
}

TEST_P(Signals, NatsServerStoppedAfterConnect)
{
    TODD_SKIP_WITHOUT_NATS();
    todd::test::NatsServer server;
    TempDir dir;
    auto p = run(GetParam(), dir, "nats", nats_at(server.port()));
    ASSERT_TRUE(p->wait_output("nats: link connected", 60s)) << p->output();
    size_t mark = p->output_size();
    server.stop();
    ASSERT_TRUE(p->wait_output("nats: link reconnecting", 60s, mark))
        << p->output();
    expect_prompt_exit(*p);
}

TEST_P(Signals, NatsTlsWrongCa)
{
    TODD_SKIP_WITHOUT_NATS();
    auto &tb = TlsBroker<todd::test::NatsServer>::get();
    sigterm_when(GetParam(), "nats",
                 nats_at(tb.broker()->port(),
                         {"tls=true", "tls_ca=" + tb.pki().other_ca_cert}),
                 "nats: link failed");
}
#endif

// ZeroMQ: an agent whose server was never there or is gone; a server whose
// agents are gone.
TEST(SignalsZeromq, AgentServerNeverThere)
{
    TempDir dir;
    DeadPort dead(false);
    auto p = agent(dir, "zeromq",
                   {"endpoint=tcp://127.0.0.1:" + std::to_string(dead.port())});
    ASSERT_TRUE(p->wait_output("SIGINT or SIGTERM stops")) << p->output();
    expect_prompt_exit(*p);
}

std::string ipc_endpoint(const TempDir &dir)
{
    return "endpoint=ipc://" + dir.path() + "/zmq.sock";
}

TEST(SignalsZeromq, AgentServerGone)
{
    TempDir dir;
    auto s = server(dir, "zeromq", {ipc_endpoint(dir)});
    ASSERT_TRUE(s->wait_output("Serving ToDD Server API")) << s->output();
    auto a = agent(dir, "zeromq", {ipc_endpoint(dir)});
    ASSERT_TRUE(s->wait_output(" registered (")) << s->output();
    s->kill_now();
    expect_prompt_exit(*a);
}

TEST(SignalsZeromq, ServerAgentsGone)
{
    TempDir dir;
    auto s = server(dir, "zeromq", {ipc_endpoint(dir)});
    ASSERT_TRUE(s->wait_output("Serving ToDD Server API")) << s->output();
    auto a = agent(dir, "zeromq", {ipc_endpoint(dir)});
    ASSERT_TRUE(s->wait_output(" registered (")) << s->output();
    a->kill_now();
    expect_prompt_exit(*s);
}

// Loopback runs in one process: idle programs stop.
TEST(SignalsLoopback, AgentIdle)
{
    TempDir dir;
    auto p = agent(dir, "loopback", {});
    ASSERT_TRUE(p->wait_output("SIGINT or SIGTERM stops")) << p->output();
    expect_prompt_exit(*p);
}

TEST(SignalsLoopback, ServerIdle)
{
    TempDir dir;
    auto p = server(dir, "loopback", {});
    ASSERT_TRUE(p->wait_output("Serving ToDD Server API")) << p->output();
    expect_prompt_exit(*p);
}

// todd-comms check runs the transport in a forked test host: SIGTERM ends
// both, with the documented status 143.
TEST(SignalsCheck, CheckRabbitmqBrokerHangs)
{
    DeadPort dead(false);
    Program p({TODD_COMMS_EXE, "check", "rabbitmq", "--plugin-dir",
               plugin_dir("rabbitmq"), "--comms-opt", "host=127.0.0.1",
               "--comms-opt", "port=" + std::to_string(dead.port()),
               "--verbose"});
    ASSERT_TRUE(p.wait_output("[check] ABI-2")) << p.output();
    expect_prompt_exit(p, "exit 143");
}

INSTANTIATE_TEST_SUITE_P(Programs, Signals,
                         ::testing::Values(Prog::agent, Prog::server),
                         [](const auto &info) {
                             return std::string(name(info.param));
                         });

} // namespace
