// SPDX-License-Identifier: Apache-2.0
// The Comms facade's message size bounds over real plugins (loopback, and
// zeromq when built): a 50 MiB advert, task and response are rejected
// before decoding with one log line each and counted, the receiver keeps
// running and the next normal message is processed. Also the config keys.
#include "inbox.hpp"
#include "log_capture.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/config.hpp>
#include <todd/core/log.hpp>

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>

using namespace todd;
using namespace todd::core;
using namespace std::chrono_literals;

namespace {

using Inbox = todd::test::Inbox<std::string>;
using todd::test::LogCapture;

std::unique_ptr<Comms> open(const std::string &ini_text, const std::string &dir,
                            const std::string &role)
{
    const auto ini = parse_ini(ini_text, role + ".cfg");
    boost::program_options::variables_map vm;
    CommsSelection sel = resolve_comms(vm, &ini);
    sel.plugin_dirs = {dir};
    sel.role = role;
    return std::make_unique<Comms>(open_transport(sel), SendPolicy{},
                                   sel.limits);
}

const std::string agent_queue = "agent-1";

/** server listens for adverts and responses, agent for its tasks; each
 *  side sends the other a 50 MiB message of every kind, then a normal one. */
void fifty_megabytes_refused(Comms &server, Comms &agent)
{
    LogCapture logs;
    Inbox adverts, tasks, responses;
    auto s1 = server.listen_for_agent([&](const msg::AgentAdvert &a) {
        adverts.push(a.uuid);
        return Verdict::ack;
    });
    auto s2 = server.listen_for_responses([&](const msg::Response &r) {
        responses.push(std::get<msg::AgentStatusResponse>(r).test_uuid);
        return Verdict::ack;
    });
    auto s3 = agent.listen_for_tasks(agent_queue, [&](const msg::Task &t) {
        tasks.push(std::get<msg::KeyValueTask>(t).key);
        return Verdict::ack;
    });

    // Real, decodable messages: only their size is wrong.
    const std::string fill(50u << 20, 'x');
    msg::AgentAdvert big_advert;
    big_advert.uuid = "big";
    big_advert.default_addr = fill;
    agent.send_raw(queue_agentadvert, msg::encode(big_advert));
    agent.send_raw(
        queue_agentresponses,
        msg::encode(msg::Response{msg::AgentStatusResponse{"a", "big", fill}}));
    server.send_raw(agent_queue,
                    msg::encode(msg::Task{msg::KeyValueTask{"big", fill}}));

    // The next normal ones are processed.
    msg::AgentAdvert ok;
    ok.uuid = "ok";
    // Adverts may be sent before the subscription reaches the server
    // (they expire): send until one arrives.
    for (int i = 0; i < 200 && !adverts.wait_has("ok", 100ms); ++i)
        agent.advertise_agent(ok);
    agent.send_response(msg::AgentStatusResponse{"a", "ok", "ready"});
    server.send_task(agent_queue, msg::KeyValueTask{"ok", "v"});
    EXPECT_TRUE(adverts.wait_has("ok"));
    EXPECT_TRUE(responses.wait_has("ok"));
    EXPECT_TRUE(tasks.wait_has("ok"));

    for (auto *in : {&adverts, &responses, &tasks})
        for (const auto &s : in->all())
            EXPECT_EQ(s, "ok");
    EXPECT_EQ(server.oversized_rejected(), 2u);
    EXPECT_EQ(agent.oversized_rejected(), 1u);
    const std::string size = std::to_string(msg::encode(big_advert).size());
    EXPECT_EQ(logs.count("queue \"agentadvert\": rejecting a message of " +
                         size +
                         " bytes: over the bound of 1048576 bytes "
                         "(max_message_bytes)"),
              1u);
    EXPECT_EQ(logs.count("queue \"agentresponses\": rejecting a message of"),
              1u);
    EXPECT_EQ(
        logs.count("over the bound of 4194304 bytes (max_response_bytes)"), 1u);
    EXPECT_EQ(logs.count("queue \"agent-1\": rejecting a message of"), 1u);
}

TEST(CommsLimits, FiftyMegabytesRefusedOverLoopback)
{
    const std::string ini = "[Comms]\nPlugin = loopback\n";
    auto server = open(ini, LOOPBACK_DIR, "server");
    auto agent = open(ini, LOOPBACK_DIR, "agent");
    server->start();
    agent->start();
    fifty_megabytes_refused(*server, *agent);
}

#ifdef ZEROMQ_DIR
/** A started zeromq server and agent on a private ipc endpoint. */
struct ZmqPair {
    explicit ZmqPair(const std::string &keys)
    {
        char tmpl[] = "/tmp/todd-limits-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr)
            throw std::runtime_error("mkdtemp failed");
        dir = tmpl;
        const std::string ini = "[Comms]\nPlugin = zeromq\nendpoint = ipc://" +
                                dir + "/zmq.sock\n" + keys;
        server = open(ini, ZEROMQ_DIR, "server");
        server->start();
        agent = open(ini, ZEROMQ_DIR, "agent");
        agent->start();
    }
    ~ZmqPair()
    {
        agent.reset();
        server.reset();
        std::filesystem::remove_all(dir);
    }
    std::string dir;
    std::unique_ptr<Comms> server, agent;
};
#endif

TEST(CommsLimits, FiftyMegabytesRefusedOverZeroMq)
{
#ifndef ZEROMQ_DIR
    GTEST_SKIP() << "the zeromq plugin is not built";
#else
    // Frames above 50 MiB: here the facade's bound is tested.
    ZmqPair z("heartbeat_ms = 100\nmax_frame_bytes = 67108864\n");
    fifty_megabytes_refused(*z.server, *z.agent);
#endif
}

TEST(CommsLimits, ZeroMqRefusesToSendOverItsFrameBound)
{
#ifndef ZEROMQ_DIR
    GTEST_SKIP() << "the zeromq plugin is not built";
#else
    ZmqPair z("max_frame_bytes = 4096\n");
    // The receiver would drop the link: both sides refuse it at once.
    for (Comms *c : {z.server.get(), z.agent.get()}) {
        try {
            c->send_raw(agent_queue, std::string(5000, 'x'));
            ADD_FAILURE() << "a payload over max_frame_bytes was sent";
        } catch (const CommsError &e) {
            EXPECT_EQ(e.status(), TODD_COMMS_E_FULL);
            EXPECT_NE(std::string(e.what()).find(
                          "payload of 5000 bytes is over max_frame_bytes "
                          "(4096)"),
                      std::string::npos)
                << e.what();
        }
    }
    Inbox tasks;
    auto sub = z.agent->listen_for_tasks(agent_queue, [&](const msg::Task &t) {
        tasks.push(std::get<msg::KeyValueTask>(t).key);
        return Verdict::ack;
    });
    z.server->send_task(agent_queue, msg::KeyValueTask{"ok", "v"});
    EXPECT_TRUE(tasks.wait_has("ok"));
#endif
}

TEST(CommsLimits, BoundsComeFromCommsKeysAndAreNotPluginOptions)
{
    const auto ini = parse_ini("[Comms]\nPlugin = loopback\n"
                               "max_message_bytes = 2048\n"
                               "max_response_bytes = 8192\nprefetch = 3\n",
                               "x.cfg");
    boost::program_options::variables_map vm;
    CommsSelection sel = resolve_comms(vm, &ini);
    EXPECT_EQ(sel.limits.max_message_bytes, 2048u);
    EXPECT_EQ(sel.limits.max_response_bytes, 8192u);
    EXPECT_EQ(sel.options.count("max_message_bytes"), 0u);
    EXPECT_EQ(sel.options.at("prefetch"), "3");
    sel.plugin_dirs = {LOOPBACK_DIR};
    EXPECT_NO_THROW(open_transport(sel)); // the plugin never sees them

    // A small configured bound is enforced.
    Comms rx(open_transport(sel), SendPolicy{}, sel.limits);
    Comms tx(open_transport(sel));
    rx.start();
    tx.start();
    Inbox tasks;
    auto sub = rx.listen_for_tasks(agent_queue, [&](const msg::Task &t) {
        tasks.push(std::get<msg::KeyValueTask>(t).key);
        return Verdict::ack;
    });
    tx.send_task(agent_queue, msg::KeyValueTask{"big", std::string(3000, 'x')});
    tx.send_task(agent_queue, msg::KeyValueTask{"ok", "v"});
    EXPECT_TRUE(tasks.wait_has("ok"));
    EXPECT_EQ(tasks.all(), std::vector<std::string>{"ok"});
    EXPECT_EQ(rx.oversized_rejected(), 1u);

    for (const char *bad : {"0", "-1", "1k", "", "99999999999999999999999"}) {
        const auto b =
            parse_ini(std::string("[Comms]\nmax_message_bytes = ") + bad + "\n",
                      "bad.cfg");
        EXPECT_THROW(resolve_comms(vm, &b), ConfigError) << bad;
    }
}

} // namespace
