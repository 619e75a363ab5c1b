// SPDX-License-Identifier: Apache-2.0
// The Comms facade's own logic over the real loopback plugin (a "server" and
// an "agent", each with its own instance, one in-process broker between
// them) and a plugin whose service is down: handler rules, undecodable
// messages, the send retry policy. The comms operations every transport
// must carry are stated for all of them in tests/transport.
#include "inbox.hpp"
#include "log_capture.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/config.hpp>
#include <todd/core/log.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <unistd.h>

using namespace todd::core;
using namespace todd;
using namespace std::chrono_literals;
using todd::test::Inbox;
using todd::test::LogCapture;

namespace {

std::shared_ptr<const Plugin> plugin(const std::string &dir,
                                     const std::string &name)
{
    return PluginRegistry({dir}).load(name);
}

std::unique_ptr<Comms> make_comms(const Options &o = {}, SendPolicy p = {})
{
    auto c = std::make_unique<Comms>(
        Transport::create(plugin(LOOPBACK_DIR, "loopback"), o), p);
    c->start();
    return c;
}

/** A name no other test uses: the loopback broker is process-wide. */
std::string unique(const std::string &base)
{
    static std::atomic<int> n{0};
    return base + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

bool contains(std::string_view hay, std::string_view needle)
{
    return hay.find(needle) != std::string_view::npos;
}

} // namespace

TEST(Comms, ControlCallsFromInsideAHandlerAreRefused)
{
    auto server = make_comms();
    auto agent = make_comms();
    const std::string uuid = unique("agent");
    Inbox<std::string> errors;
    agent->watch_for_group([](const msg::Task &) { return Verdict::ack; });
    auto sub = agent->listen_for_tasks(uuid, [&](const msg::Task &) {
        for (auto call : std::vector<std::function<void()>>{
                 [&] { agent->set_group("x"); },
                 [&] { agent->watch_for_group({}); },
                 [&] { (void)agent->listen_for_responses({}); },
                 [&] { agent->stop(); }}) {
            try {
                call();
                errors.push("no error");
            } catch (const CommsError &e) {
                errors.push(e.status() == TODD_COMMS_E_STATE ? e.what()
                                                             : "wrong status");
            }
        }
        // Publishing from a handler is fine (the Go agent responds there).
        agent->send_response(msg::AgentStatusResponse{"a", "t", "ready"});
        return Verdict::ack;
    });
    server->send_task(uuid, msg::KeyValueTask{"k", "v"});
    ASSERT_TRUE(errors.wait_for(4));
    for (const auto &e : errors.all())
        EXPECT_TRUE(contains(e, "called from inside a message handler")) << e;
    EXPECT_EQ(agent->group(), "");
}

TEST(Comms, UndecodableMessageIsLoggedRejectedAndNotRedelivered)
{
    LogCapture logs;
    auto server = make_comms();
    auto agent = make_comms();
    const std::string uuid = unique("agent");
    server->send_raw(uuid, "hello");
    server->send_raw(uuid, "{\"type\":\"Bogus\"}");
    const msg::Task good = msg::KeyValueTask{"k", "v"};
    server->send_task(uuid, good);
    Inbox<msg::Task> got;
    auto sub = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        got.push(t);
        return Verdict::ack;
    });
    ASSERT_TRUE(got.wait_for(1));
    EXPECT_EQ(got.all(), std::vector<msg::Task>{good});
    const std::string prefix =
        "queue \"" + uuid + "\": rejecting an undecodable message";
    EXPECT_EQ(logs.count(prefix + " (5 bytes): task is not JSON"), 1u);
    EXPECT_EQ(logs.count(prefix + " (16 bytes): task: unknown type \"Bogus\""),
              1u);
    // Rejected means gone: a fresh listener finds only what comes next.
    sub.reset();
    const msg::Task next = msg::KeyValueTask{"k2", "v2"};
    server->send_task(uuid, next);
    Inbox<msg::Task> again;
    auto sub2 = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        again.push(t);
        return Verdict::ack;
    });
    ASSERT_TRUE(again.wait_for(1));
    EXPECT_EQ(again.all(), std::vector<msg::Task>{next});
    EXPECT_EQ(logs.count(prefix), 2u);
}

TEST(Comms, BoundedQueueFailsAtOnceNamingTheQueue)
{
    SendPolicy forever;
    forever.retry_for = std::chrono::hours(1); // a retry would hang the test
    auto server = make_comms({{"max_queue_length", "1"}}, forever);
    const std::string uuid = unique("agent");
    server->send_task(uuid, msg::KeyValueTask{"k", "1"});
    try {
        server->send_task(uuid, msg::KeyValueTask{"k", "2"});
        FAIL() << "the bound was not hit";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_FULL);
        EXPECT_TRUE(contains(e.what(), "send to queue \"" + uuid + "\" failed"))
            << e.what();
        EXPECT_TRUE(contains(e.what(), "max_queue_length")) << e.what();
    }
    auto drain = server->listen_for_tasks(
        uuid, [](const msg::Task &) { return Verdict::ack; });
}

TEST(Comms, UnavailableIsRetriedThenGivesUpClearly)
{
    SendPolicy p;
    p.retry_for = 200ms;
    p.initial_backoff = 5ms;
    p.max_backoff = 20ms;
    Comms c(Transport::create(plugin(FIXTURE_DIR, "unreachable"),
                              {{"endpoint", "nowhere"}}),
            p);
    c.start();
    try {
        c.send_task("agent-x", msg::KeyValueTask{"k", "v"});
        FAIL();
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_UNAVAILABLE);
        const std::string w = e.what();
        EXPECT_TRUE(contains(w, "send to queue \"agent-x\" gave up after "))
            << w;
        EXPECT_TRUE(contains(w, "(retry limit 200 ms)")) << w;
        EXPECT_TRUE(contains(w, "cannot reach the service for 'agent-x'")) << w;
        EXPECT_FALSE(contains(w, "after 1 attempt(s)"))
            << "never retried: " << w;
    }
}

TEST(Comms, CancelSendsEndsARetryingSendAtOnce)
{
    SendPolicy forever;
    forever.retry_for = std::chrono::hours(1);
    forever.max_backoff = std::chrono::hours(1);
    forever.initial_backoff = std::chrono::hours(1);
    Comms c(Transport::create(plugin(FIXTURE_DIR, "unreachable"),
                              {{"endpoint", "nowhere"}}),
            forever);
    c.start();
    LogCapture logs;
    // The sender is in its first back-off (an hour) once it has logged it.
    auto send = std::async(std::launch::async, [&] {
        c.send_task("agent-x", msg::KeyValueTask{"k", "v"});
    });
    ASSERT_TRUE(logs.wait_for("failed, retrying for up to"));
    c.cancel_sends();
    // Bounded wait so that a regression fails instead of hanging the suite.
    ASSERT_EQ(send.wait_for(std::chrono::seconds(10)),
              std::future_status::ready);
    try {
        send.get();
        FAIL() << "a cancelled send returned normally";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_STATE);
        EXPECT_TRUE(contains(e.what(), "cancelled")) << e.what();
    }
    // Later sends fail at once too.
    EXPECT_THROW(c.send_task("agent-x", msg::KeyValueTask{"k", "v"}),
                 CommsError);
}

TEST(Comms, UnavailableThatRecoversSucceeds)
{
    LogCapture logs;
    SendPolicy p;
    p.initial_backoff = 1ms;
    p.max_backoff = 4ms;
    Comms c(
        Transport::create(plugin(FIXTURE_DIR, "unreachable"),
                          {{"endpoint", "x"},
                           {"fail_publishes", "3"},
                           {"status", std::to_string(TODD_COMMS_E_TIMEOUT)}}),
        p);
    c.start();
    c.advertise_agent(msg::AgentAdvert{});
    EXPECT_EQ(logs.count("sent to queue \"agentadvert\" after 4 attempts"), 1u);
}

TEST(Comms, OtherFailuresAreNotRetried)
{
    SendPolicy forever;
    forever.retry_for = std::chrono::hours(1);
    Comms c(
        Transport::create(plugin(FIXTURE_DIR, "unreachable"),
                          {{"endpoint", "x"},
                           {"status", std::to_string(TODD_COMMS_E_PROTOCOL)}}),
        forever);
    c.start();
    try {
        c.send_response(msg::TestDataResponse{"a", "t", "{}"});
        FAIL();
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_PROTOCOL);
        EXPECT_TRUE(
            contains(e.what(), "send to queue \"agentresponses\" failed"));
    }
}

TEST(Comms, ArgumentsAreChecked)
{
    EXPECT_THROW(Comms(nullptr), CommsError);
    auto c = make_comms();
    EXPECT_THROW(c->send_task("", msg::KeyValueTask{}), CommsError);
    EXPECT_THROW((void)c->listen_for_tasks("", {}), CommsError);
}

TEST(Comms, OpenedFromOptionsLikeAProgram)
{
    const auto ini =
        parse_ini("[Comms]\nPlugin = loopback\nprefetch = 4\n", "agent.cfg");
    namespace po = boost::program_options;
    po::variables_map vm;
    CommsSelection sel = resolve_comms(vm, &ini);
    sel.plugin_dirs = {LOOPBACK_DIR};
    sel.role = "agent";
    Comms server(open_transport(sel)), agent(open_transport(sel));
    server.start();
    agent.start();
    Inbox<msg::Response> got;
    auto sub = server.listen_for_responses([&](const msg::Response &r) {
        got.push(r);
        return Verdict::ack;
    });
    const msg::Response r =
        msg::AgentStatusResponse{unique("a"), "t", "testing"};
    agent.send_response(r);
    ASSERT_TRUE(got.wait_has(r));
}
