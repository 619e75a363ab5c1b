// SPDX-License-Identifier: Apache-2.0
// The Kafka plugin when the broker restarts mid-stream, is not there when
// the instances (and the real todd-server and todd-agent) start, or speaks
// TLS. Each test starts its own private broker.
#include "../server/server_program.hpp"
#include "files.hpp"
#include "kafka_test_util.hpp"
#include "test_thread.hpp"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <thread>
#include <vector>

using namespace kafkatest;
using todd::core::CommsError;
using Clock = std::chrono::steady_clock;

namespace {

class Outage : public ::testing::Test {
  protected:
    void SetUp() override { TODD_SKIP_WITHOUT_KAFKA(); }
};

// How often the subscriber commits what it acknowledged (the plugin's
// commit_interval_ms): after the broker went away it may deliver again
// what it delivered since its last commit, no more. Set here so that the
// bound below is reasoned from it.
constexpr auto commit_interval = 200ms;
// The producer's pace: a batch of 100 every 100 ms, so that the stream is
// still flowing at both ends when the broker goes, and a commit interval
// holds few tasks next to those committed before.
constexpr auto batch_every = 100ms;
// kafkatest::opts's session_timeout_ms.
constexpr auto session_timeout = 6s;

// 10,000 tasks in batches of 100, the broker restarted (stopped cleanly,
// started again on the same ports and data) once 3,000 were acknowledged
// and 2,000 delivered. A failed publish is sent again, as the Comms facade
// does. Every task whose publish returned OK must be delivered; duplicates
// are what at-least-once allows, within a bound.
TEST_F(Outage, BrokerRestartMidStreamLosesNothingAcknowledged)
{
    KafkaBroker broker;
    const int total = 10000, batch = 100;
    const std::string q = unique("stream");
    const Options o =
        opts(broker.bootstrap(),
             {{"commit_interval_ms", std::to_string(commit_interval.count())},
              {"publish_timeout_ms", "30000"}});
    StateLog con_states, pub_states; // outlive the instances
    auto con = make(o, false);
    con_states.attach(*con);
    con->start();

    std::mutex m;
    std::condition_variable cv;
    std::set<int> seen;
    std::map<int, Clock::time_point> first_delivery;
    std::vector<Clock::time_point> delivered_at; // every delivery
    std::vector<int> duplicated;
    Clock::time_point rewound_at; // the first duplicate's delivery
    auto sub = con->subscribe(q, [&](const todd::core::Delivery &d) {
        int id = std::stoi(std::string(d.payload.substr(5)));
        std::lock_guard g(m);
        const auto now = Clock::now();
        delivered_at.push_back(now);
        if (seen.insert(id).second)
            first_delivery[id] = now;
        else if (duplicated.emplace_back(id), duplicated.size() == 1)
            rewound_at = now;
        cv.notify_all();
        return Verdict::ack;
    });
    auto pub = make(o, false);
    pub_states.attach(*pub);
    pub->start();
    // The subscriber has joined its group and reads: a first task comes
    // through before the stream starts.
    pub->publish(q, "task--1");
    {
        std::unique_lock lk(m);
        ASSERT_TRUE(cv.wait_for(lk, 60s, [&] { return seen.count(-1); }))
            << con_states.text() << broker.log_tail();
    }

    std::set<int> confirmed;
    std::atomic<int> progress{0}, failed_sends{0}, failed_batches{0};
    todd::test::TestThread producer([&] {
        const auto begin = Clock::now(), deadline = begin + 300s;
        for (int first = 0; first < total; first += batch) {
            // Paced on the clock: after an outage it catches up at once.
            std::this_thread::sleep_until(begin + first / batch * batch_every);
            std::vector<int> ids;
            for (int i = first; i < std::min(total, first + batch); ++i)
                ids.push_back(i);
            while (!ids.empty() && Clock::now() < deadline) {
                std::vector<int> ok;
                ids = todd::test::publish_tasks(*pub, q, ids, &ok);
                failed_batches += ids.empty() ? 0 : 1;
                failed_sends += static_cast<int>(ids.size());
                std::lock_guard g(m);
                confirmed.insert(ok.begin(), ok.end());
            }
            progress = first + batch;
        }
    });
    const auto delivered = [&] {
        std::lock_guard g(m);
        return delivered_at.size();
    };
    ASSERT_TRUE(todd::test::eventually(
        [&] { return progress >= 3000 && delivered() >= 2000; }, 120s))
        << "the stream did not get to 3000 tasks sent and 2000 delivered: "
        << progress << " sent, " << delivered() << " delivered";
    const size_t con_mark = con_states.size(), pub_mark = pub_states.size();
    const auto stop_begun = Clock::now();
    broker.stop(); // then start: a restart with the same ports and data
    const auto stopped = Clock::now();
    const size_t delivered_when_stopped = delivered();
    broker.start();
    const auto started = Clock::now();
    auto reconnected =
        con_states.wait_state(LinkState::connected, con_mark, 120s);
    const auto back = Clock::now();
    producer.join();
    ASSERT_TRUE(reconnected) << "no reconnection after the broker returned\n"
                             << con_states.text();
    EXPECT_TRUE(pub_states.wait_state(LinkState::connected, pub_mark, 1s))
        << "the publisher never said it was connected again\n"
        << pub_states.text();

    std::unique_lock lk(m);
    cv.wait_for(lk, 120s, [&] {
        return std::includes(seen.begin(), seen.end(), confirmed.begin(),
                             confirmed.end());
    });
    std::vector<int> missing;
    std::set_difference(confirmed.begin(), confirmed.end(), seen.begin(),
                        seen.end(), std::back_inserter(missing));
    // The deliveries whose offsets may not have been committed: from one
    // commit interval (plus one for the commit's round trip) before the
    // stop began, until the subscriber went back to its committed offset
    // (its first duplicate) or, without one, as long after the broker
    // answered again. What it delivers once back at that offset is all
    // delivered again later only if it is rewound again.
    const bool rewound = !duplicated.empty();
    const auto from = stop_begun - 2 * commit_interval,
               to = rewound ? rewound_at : started + 2 * commit_interval;
    const auto in_window = [&](Clock::time_point t) {
        return t >= from && t < to;
    };
    const long uncommitted =
        std::count_if(delivered_at.begin(), delivered_at.end(), in_window);
    const long outside =
        std::count_if(duplicated.begin(), duplicated.end(),
                      [&](int id) { return !in_window(first_delivery[id]); });
    const auto ms = [](auto d) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    };
    std::cout << "acknowledged " << confirmed.size() << ", delivered "
              << seen.size() << " distinct in " << delivered_at.size()
              << " deliveries, duplicates " << duplicated.size()
              << " (first delivered outside the uncommitted window: " << outside
              << "), failed sends retried " << failed_sends << " in "
              << failed_batches << " batch(es); stop took "
              << ms(stopped - stop_begun) << " ms (" << delivered_when_stopped
              << " delivered by then), start " << ms(started - stopped)
              << " ms, the subscriber connected " << ms(back - started)
              << " ms later"
              << (rewound ? ", rewound to its committed offset " +
                                std::to_string(ms(rewound_at - back)) +
                                " ms after that"
                          : std::string())
              << "; " << uncommitted
              << " deliveries in the uncommitted window\n";
    EXPECT_EQ(confirmed.size(), static_cast<size_t>(total));
    EXPECT_TRUE(missing.empty())
        << missing.size() << " acknowledged tasks lost, first "
        << (missing.empty() ? -1 : missing[0]);
    // At-least-once: a duplicate is a delivery whose offset was not
    // committed before the broker went away (at most those delivered in
    // the window), or a task the producer sent again after its publish
    // failed although the broker had written it (at most those sent
    // again). More means offsets committed long before were lost or
    // ignored.
    EXPECT_LE(static_cast<long>(duplicated.size()), uncommitted + failed_sends)
        << "more duplicates than uncommitted deliveries and resent tasks";
    // A subscriber the broker forgot during the outage learns it at its
    // next heartbeat (every session_timeout_ms / 3) or commit, and rejoins
    // then: the window is not left open for long.
    if (rewound) {
        EXPECT_LT(rewound_at - back, session_timeout + 5s)
            << "the subscriber went back to its committed offset late";
    }
}

// No broker yet when the instances start: a subscription and a publish
// wait, and all of it completes once the broker comes.
TEST_F(Outage, BrokerAbsentAtStartThenStarted)
{
    KafkaBroker::Options bo;
    bo.start = false; // its ports are known, nothing listens there yet
    KafkaBroker broker(bo);
    const std::string q = unique("late");
    StateLog con_states, pub_states;
    auto con = make(opts(broker.bootstrap()), false);
    auto pub = make(
        opts(broker.bootstrap(), {{"publish_timeout_ms", "120000"}}), false);
    con_states.attach(*con);
    pub_states.attach(*pub);
    con->start(); // returns at once: the cluster is retried in the background
    pub->start();
    Inbox in;
    auto sub = con->subscribe(q, in.handler()); // pending until connected
    std::atomic<bool> sent{false};
    std::string send_error;
    todd::test::TestThread sender([&] {
        try {
            pub->publish(q, "hello late broker");
            sent = true;
        } catch (const CommsError &e) {
            send_error = e.what();
        }
    });
    // Nothing answers: neither instance may claim to be connected, and the
    // publish is still waiting (it returns only with an acknowledgement).
    EXPECT_FALSE(con_states.wait_state(LinkState::connected, 0, 2s));
    EXPECT_FALSE(sent);
    broker.start();
    EXPECT_TRUE(con_states.wait_state(LinkState::connected, 0, 60s))
        << con_states.text();
    EXPECT_TRUE(pub_states.wait_state(LinkState::connected, 0, 60s))
        << pub_states.text();
    sender.join();
    EXPECT_TRUE(sent) << send_error;
    ASSERT_TRUE(in.wait_for(1, 60s));
    EXPECT_EQ(in.all()[0].payload, "hello late broker");
}

// The real programs started before the broker: todd-server and todd-agent
// wait, and once the broker runs the agent registers (the server's REST
// API lists it).
TEST_F(Outage, ProgramsStartedBeforeTheBrokerRegisterOnceItComes)
{
    using namespace todd::test::program;
    KafkaBroker::Options bo;
    bo.start = false;
    KafkaBroker broker(bo);
    todd::test::TempDir dir("todd-kafka-late");
    const std::string opt = dir / "server-opt";
    std::filesystem::create_directories(opt + "/assets/testlets");
    write_text(dir / "server.cfg", server_cfg(opt));
    const std::string bootstrap = "bootstrap_servers=" + broker.bootstrap();
    Program server({TODD_SERVER_EXE, "--config", dir / "server.cfg", "--comms",
                    "kafka", "--plugin-dir", KAFKA_PLUGIN_DIR, "--comms-opt",
                    bootstrap, "--log-level", "debug"});
    auto started = wait_started(server);
    ASSERT_TRUE(started) << server.output();
    const std::string state = dir / "agent-state";
    Program agent({TODD_AGENT_EXE,
                   "--comms",
                   "kafka",
                   "--plugin-dir",
                   KAFKA_PLUGIN_DIR,
                   "--comms-opt",
                   bootstrap,
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
    // Both wait on the cluster and say so.
    ASSERT_TRUE(server.wait_output("not answering", 30s)) << server.output();
    ASSERT_TRUE(agent.wait_output("not answering", 30s)) << agent.output();
    EXPECT_EQ(http_get(started->api, "/v1/agent").body.find(uuid),
              std::string::npos);

    broker.start();
    Reply r;
    EXPECT_TRUE(todd::test::eventually(
        [&] {
            r = http_get(started->api, "/v1/agent");
            return r.body.find(uuid) != std::string::npos;
        },
        90s, 200ms))
        << "the agent never registered; /v1/agent: " << r.status << " "
        << r.body << "\n--- server ---\n"
        << server.output() << "\n--- agent ---\n"
        << agent.output();
    std::chrono::milliseconds took{};
    EXPECT_EQ(agent.terminate(10s, &took), "exit 0") << agent.output();
    EXPECT_EQ(server.terminate(10s, &took), "exit 0") << server.output();
}

// TLS with a CA the test made: the broker's SSL listener.
class Tls : public Outage {
  protected:
    void SetUp() override
    {
        Outage::SetUp();
        if (IsSkipped() || HasFailure())
            return;
        pki_ = todd::test::make_test_pki(dir_.path());
    }
    /** Options for the SSL listener of b, trusting ca. */
    Options tls_opts(const KafkaBroker &b, const std::string &ca,
                     Options extra = {})
    {
        extra.insert({"security_protocol", "ssl"});
        extra.insert({"ssl_ca", ca});
        return opts(b.tls_bootstrap(), extra);
    }
    /** A publish and its delivery over an instance made with o, which
     *  never reports a failure on the way. */
    void round_trip(const Options &o)
    {
        StateLog states;
        auto t = make(o, false);
        states.attach(*t);
        t->start();
        std::string q = unique("tls");
        Inbox in;
        auto sub = t->subscribe(q, in.handler());
        t->publish(q, "over tls");
        ASSERT_TRUE(in.wait_for(1, 60s));
        EXPECT_EQ(in.all()[0].payload, "over tls");
        EXPECT_EQ(t->state(), LinkState::connected);
        const auto all = states.all();
        EXPECT_TRUE(std::none_of(
            all.begin(), all.end(),
            [](const auto &e) { return e.state == LinkState::failed; }))
            << "a working TLS link reported a failure:\n"
            << states.text();
    }
    /** An instance made with o never connects: it fails, or at least
     *  does not claim to be connected within `bound` (a good link
     *  connects within 2 s here); a log line names the TLS failure
     *  (`says`); a publish fails with a status, within its timeout. */
    void refused(const Options &o, const std::string &says,
                 std::chrono::milliseconds bound = 8s)
    {
        LogCapture log;
        StateLog states;
        Options bad = o;
        bad["publish_timeout_ms"] = "2000";
        auto t = make(bad, false);
        states.attach(*t);
        t->start();
        auto first = states.wait(
            [](const StateLog::Entry &e) {
                return e.state == LinkState::failed ||
                       e.state == LinkState::connected;
            },
            0, bound);
        if (first) {
            EXPECT_EQ(first->state, LinkState::failed) << states.text();
        }
        EXPECT_TRUE(log.wait_for(says, 10s))
            << "no log line says '" << says << "':\n"
            << log.text();
        const auto t0 = Clock::now();
        try {
            t->publish(unique("tls-bad"), "x");
            ADD_FAILURE() << "a publish succeeded over a refused connection";
        } catch (const CommsError &e) {
            EXPECT_NE(e.status(), TODD_COMMS_OK);
            std::cout << "publish refused (status " << e.status()
                      << "): " << e.what() << "\n";
        }
        // publish_timeout_ms and the plugin's own slack, not a hang.
        EXPECT_LT(Clock::now() - t0, 10s);
        EXPECT_NE(t->state(), LinkState::connected);
        std::cout << "states:\n" << states.text();
    }

    todd::test::TempDir dir_{"todd-kafka-pki"};
    todd::test::TestPki pki_;
};

TEST_F(Tls, VerifiedWorksWrongCaIsRefused)
{
    KafkaBroker::Options bo;
    bo.tls = KafkaBroker::Tls::from(pki_);
    KafkaBroker broker(bo);
    round_trip(tls_opts(broker, pki_.ca_cert));
    // A CA that did not sign the broker's certificate.
    refused(tls_opts(broker, pki_.other_ca_cert), "certificate verify failed");
}

TEST_F(Tls, ClientCertificateWhenTheBrokerRequiresOne)
{
    KafkaBroker::Options bo;
    bo.tls = KafkaBroker::Tls::from(pki_);
    bo.tls->require_client_cert = true;
    KafkaBroker broker(bo);
    round_trip(tls_opts(
        broker, pki_.ca_cert,
        {{"ssl_cert", pki_.client_cert}, {"ssl_key", pki_.client_key}}));
    // Without one the broker ends the handshake.
    refused(tls_opts(broker, pki_.ca_cert), "bad certificate");
}

} // namespace
