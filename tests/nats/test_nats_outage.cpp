// SPDX-License-Identifier: Apache-2.0
// The NATS plugin when the server restarts mid-stream, is not there when
// the instances (and the real todd-server and todd-agent) start, or speaks
// TLS. Each test starts its own private nats-server (JetStream, file
// storage).
#include "../server/server_program.hpp"
#include "files.hpp"
#include "nats_test_util.hpp"
#include "stream_outage.hpp"
#include "test_thread.hpp"

#include <filesystem>
#include <iostream>

using namespace natstest;
using todd::core::CommsError;

namespace {

class Outage : public ::testing::Test {
  protected:
    void SetUp() override { TODD_SKIP_WITHOUT_NATS(); }
};

// 10,000 tasks in batches of 100, the server restarted (stopped cleanly,
// started again on the same port and store) in the middle. Every task
// whose publish returned OK must be delivered (stream_outage.hpp).
TEST_F(Outage, ServerRestartMidStreamLosesNothingAcknowledged)
{
    NatsServer server;
    const Options o = opts(server.url(), {{"publish_timeout_ms", "30000"}});
    auto r = natstest::run_stream_outage(o, [&](const StateLog &) {
        server.stop();
        server.start();
    });
    std::cout << r.summary << "\n";
    EXPECT_TRUE(r.ok) << r.failure << "\n" << server.log_tail();
}

// The same with SIGKILL: what the server acknowledged was written to its
// store (the page cache keeps it), so a crash loses none of it either.
TEST_F(Outage, ServerKilledMidStreamLosesNothingAcknowledged)
{
    NatsServer server;
    const Options o = opts(server.url(), {{"publish_timeout_ms", "30000"}});
    auto r = natstest::run_stream_outage(o, [&](const StateLog &) {
        server.kill();
        server.start();
    });
    std::cout << r.summary << "\n";
    EXPECT_TRUE(r.ok) << r.failure << "\n" << server.log_tail();
}

// No server yet when the instances start: a subscription and a publish
// wait, and all of it completes once the server comes.
TEST_F(Outage, ServerAbsentAtStartThenStarted)
{
    NatsServer::Options so;
    so.start = false; // its port is known, nothing listens there yet
    NatsServer server(so);
    const std::string q = unique("late");
    StateLog con_states, pub_states;
    auto con = make(opts(server.url()), false);
    auto pub =
        make(opts(server.url(), {{"publish_timeout_ms", "60000"}}), false);
    con_states.attach(*con);
    pub_states.attach(*pub);
    con->start(); // returns at once: the server is retried in the background
    pub->start();
    Inbox in;
    auto sub = con->subscribe(q, in.handler()); // bound once connected
    std::atomic<bool> sent{false};
    std::string send_error;
    todd::test::TestThread sender([&] {
        try {
            pub->publish(q, "hello late server");
            sent = true;
        } catch (const CommsError &e) {
            send_error = e.what();
        }
    });
    // Nothing answers: neither may claim to be connected, and the publish
    // is still waiting (it returns only with JetStream's ack).
    EXPECT_FALSE(con_states.wait_state(LinkState::connected, 0, 2s));
    EXPECT_FALSE(sent);
    EXPECT_TRUE(con_states.wait_state(LinkState::reconnecting, 0, 1s))
        << "an unreachable server is not reported\n"
        << con_states.text();
    server.start();
    EXPECT_TRUE(con_states.wait_state(LinkState::connected, 0, 30s))
        << con_states.text();
    EXPECT_TRUE(pub_states.wait_state(LinkState::connected, 0, 30s))
        << pub_states.text();
    sender.join();
    EXPECT_TRUE(sent) << send_error;
    ASSERT_TRUE(in.wait_for(1, 30s));
    EXPECT_EQ(in.all()[0].payload, "hello late server");
}

// The real programs started before the server: todd-server and todd-agent
// wait, and once the server runs the agent registers (the REST API lists
// it).
TEST_F(Outage, ProgramsStartedBeforeTheServerRegisterOnceItComes)
{
    using namespace todd::test::program;
    NatsServer::Options so;
    so.start = false;
    NatsServer nats(so);
    todd::test::TempDir dir("todd-nats-late");
    const std::string opt = dir / "server-opt";
    std::filesystem::create_directories(opt + "/assets/testlets");
    write_text(dir / "server.cfg", server_cfg(opt));
    const std::string servers = "servers=" + nats.url();
    Program server({TODD_SERVER_EXE, "--config", dir / "server.cfg", "--comms",
                    "nats", "--plugin-dir", NATS_PLUGIN_DIR, "--comms-opt",
                    servers, "--log-level", "debug"});
    auto started = wait_started(server);
    ASSERT_TRUE(started) << server.output();
    const std::string state = dir / "agent-state";
    Program agent({TODD_AGENT_EXE,
                   "--comms",
                   "nats",
                   "--plugin-dir",
                   NATS_PLUGIN_DIR,
                   "--comms-opt",
                   servers,
                   "--state-dir",
                   state,
                   "--opt-dir",
                   dir / "agent-opt",
                   "--ip-addr-override",
                   "127.0.0.1",
                   "--testlet-dir",
                   std::string(TODD_SOURCE_ROOT) + "/share/testlets",
                   "--factcollector-dir",
                   std::string(TODD_SOURCE_ROOT) + "/share/factcollectors",
                   "--advert-interval",
                   "1",
                   "--log-level",
                   "debug"});
    const std::string uuid = wait_agent_uuid(state);
    ASSERT_FALSE(uuid.empty()) << agent.output();
    ASSERT_TRUE(server.wait_output("nats: link reconnecting", 30s))
        << server.output();
    ASSERT_TRUE(agent.wait_output("nats: link reconnecting", 30s))
        << agent.output();
    EXPECT_EQ(http_get(started->api, "/v1/agent").body.find(uuid),
              std::string::npos);

    nats.start();
    Reply r;
    EXPECT_TRUE(todd::test::eventually(
        [&] {
            r = http_get(started->api, "/v1/agent");
            return r.body.find(uuid) != std::string::npos;
        },
        60s, 200ms))
        << "the agent never registered; /v1/agent: " << r.status << " "
        << r.body << "\n--- server ---\n"
        << server.output() << "\n--- agent ---\n"
        << agent.output();
    std::chrono::milliseconds took{};
    EXPECT_EQ(agent.terminate(10s, &took), "exit 0") << agent.output();
    EXPECT_LT(took, 5s);
    EXPECT_EQ(server.terminate(10s, &took), "exit 0") << server.output();
    EXPECT_LT(took, 5s);
}

// TLS with a CA the test made.
class Tls : public Outage {
  protected:
    void SetUp() override
    {
        Outage::SetUp();
        if (IsSkipped() || HasFailure())
            return;
        pki_ = todd::test::make_test_pki(dir_.path());
    }
    /** A publish and its delivery over an instance made with o. */
    void expect_round_trip(const Options &o)
    {
        StateLog states;
        auto t = make(o, false);
        states.attach(*t);
        t->start();
        ASSERT_TRUE(states.wait_state(LinkState::connected, 0, 20s))
            << states.text();
        const std::string q = unique("tls");
        Inbox in;
        auto sub = t->subscribe(q, in.handler());
        t->publish(q, "over TLS");
        ASSERT_TRUE(in.wait_for(1, 20s));
        EXPECT_EQ(in.all()[0].payload, "over TLS");
        EXPECT_EQ(states.count(LinkState::failed), 0u) << states.text();
    }
    /** An instance made with o reports FAILED with status st, and a
     *  publish fails within its publish_timeout_ms. */
    void expect_refused(Options o, int32_t st)
    {
        o["publish_timeout_ms"] = "1500";
        StateLog states;
        auto t = make(o, false);
        states.attach(*t);
        t->start();
        EXPECT_TRUE(states.wait_state(LinkState::failed, 0, 20s))
            << states.text();
        bool found = false;
        for (const auto &e : states.all())
            found = found || (e.state == LinkState::failed && e.status == st);
        EXPECT_TRUE(found) << "no FAILED with status " << st << "\n"
                           << states.text();
        EXPECT_THROW(t->publish(unique("tls"), "x"), CommsError);
        EXPECT_EQ(states.count(LinkState::connected), 0u) << states.text();
    }
    todd::test::TempDir dir_;
    todd::test::TestPki pki_;
};

TEST_F(Tls, VerifiedWorksWrongCaIsRefused)
{
    NatsServer::Options so;
    so.tls = NatsServer::Tls::from(pki_);
    NatsServer server(so);
    expect_round_trip(
        opts(server.url(), {{"tls", "true"}, {"tls_ca", pki_.ca_cert}}));
    expect_refused(
        opts(server.url(), {{"tls", "true"}, {"tls_ca", pki_.other_ca_cert}}),
        TODD_COMMS_E_PROTOCOL);
    // A plain client at a TLS-only server does not get in either.
    expect_refused(opts(server.url()), TODD_COMMS_E_PROTOCOL);
}

TEST_F(Tls, ClientCertificateWhenTheServerRequiresOne)
{
    NatsServer::Options so;
    so.tls = NatsServer::Tls::from(pki_);
    so.tls->require_client_cert = true;
    NatsServer server(so);
    expect_round_trip(opts(server.url(), {{"tls_ca", pki_.ca_cert},
                                          {"tls_cert", pki_.client_cert},
                                          {"tls_key", pki_.client_key}}));
    expect_refused(opts(server.url(), {{"tls_ca", pki_.ca_cert}}),
                   TODD_COMMS_E_PROTOCOL);
}

TEST_F(Outage, WrongPasswordIsFailedWithEAuth)
{
    NatsServer::Options so;
    so.user = "todd";
    so.password = "right";
    NatsServer server(so);
    StateLog states;
    auto t = make(opts(server.url(), {{"user", "todd"},
                                      {"password", "wrong"},
                                      {"publish_timeout_ms", "1000"}}),
                  false);
    states.attach(*t);
    t->start();
    ASSERT_TRUE(states.wait_state(LinkState::failed, 0, 20s)) << states.text();
    bool auth = false;
    for (const auto &e : states.all())
        auth = auth || e.status == TODD_COMMS_E_AUTH;
    EXPECT_TRUE(auth) << states.text();
    auto good =
        make(opts(server.url(), {{"user", "todd"}, {"password", "right"}}));
    Inbox in;
    const std::string q = unique("auth");
    auto sub = good->subscribe(q, in.handler());
    good->publish(q, "let in");
    EXPECT_TRUE(in.wait_for(1, 20s));
}

} // namespace
