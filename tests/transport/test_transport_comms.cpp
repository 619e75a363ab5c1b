// SPDX-License-Identifier: Apache-2.0
// ToDD's comms operations through the Comms facade, the way todd-server and
// todd-agent open a transport, over every plugin the build has: adverts,
// tasks (held until the agent listens), group tasks, responses, verdicts
// and a server restart.
#include "suite.hpp"

#include <future>

using namespace todd;
using namespace todd::core;
using namespace todd::test;
using namespace todd::test::transport;

namespace {

msg::Time now_ns()
{
    return std::chrono::time_point_cast<std::chrono::nanoseconds>(
        std::chrono::system_clock::now());
}

/** A task that names itself, to be found among others. */
msg::Task keyed(const std::string &key)
{
    return msg::KeyValueTask{key, "v"};
}

} // namespace

TEST_P(TransportSuite, AdvertGoesFromAgentToServer)
{
    auto agent = open_comms("agent");
    Inbox<msg::AgentAdvert> got;
    auto sub = server().listen_for_agent([&](const msg::AgentAdvert &a) {
        got.push(a);
        return Verdict::ack;
    });
    msg::AgentAdvert a;
    a.uuid = unique("agent");
    a.default_addr = "127.0.0.1";
    a.local_time = now_ns();
    a.facts = msg::Facts{{"Hostname", {"vm"}}};
    a.testlets = {{"http", "9bbb"}};
    agent->advertise_agent(a);
    ASSERT_TRUE(got.wait_has(a)) << "advert never arrived";
}

TEST_P(TransportSuite, TasksSentBeforeTheAgentListensArriveInOrder)
{
    auto agent = open_comms("agent");
    const std::string uuid = unique("agent");
    const std::vector<msg::Task> tasks = {
        msg::DownloadAssetTask{{"http://127.0.0.1:8090/testlets/http"}},
        msg::KeyValueTask{"k", "v"},
        msg::SetGroupTask{"red", true},
        msg::SetGroupTask{"blue", false},
        msg::InstallTestRunTask{{"t1", {"127.0.0.1"}, "ping", "-c 3"}},
        msg::ExecuteTestRunTask{"t1", 30},
        msg::DeleteTestDataTask{"t1"},
    };
    for (const auto &t : tasks)
        server().send_task(uuid, t);
    Inbox<msg::Task> got;
    auto sub = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        got.push(t);
        return Verdict::ack;
    });
    ASSERT_TRUE(got.wait_for(tasks.size()));
    EXPECT_EQ(got.all(), tasks);
}

TEST_P(TransportSuite, ResponsesGoFromAgentToServer)
{
    auto agent = open_comms("agent");
    const std::string a = unique("agent");
    const std::vector<msg::Response> rs = {
        msg::AgentStatusResponse{a, "t1", std::string(msg::status_ready)},
        msg::TestDataResponse{a, "t1", "{\"127.0.0.1\":{\"loss\":0}}"},
    };
    Inbox<msg::Response> got;
    auto sub = server().listen_for_responses([&](const msg::Response &r) {
        got.push(r);
        return Verdict::ack;
    });
    for (const auto &r : rs)
        agent->send_response(r);
    ASSERT_TRUE(got.wait_has(rs[0]));
    ASSERT_TRUE(got.wait_has(rs[1]));
}

TEST_P(TransportSuite, TasksGoAsTheirJsonBytesInTextPlain)
{
    auto raw = open("agent");
    const std::string q = unique("agent");
    DeliveryInbox got;
    auto sub = raw->subscribe(q, got.handler());
    server().send_task(q, msg::ExecuteTestRunTask{"t1", 30});
    ASSERT_TRUE(got.wait_for(1));
    EXPECT_EQ(got.all()[0].payload,
              "{\"type\":\"ExecuteTestRun\",\"test_uuid\":\"t1\","
              "\"time_limit\":30}");
    EXPECT_EQ(got.all()[0].content_type, "text/plain");
}

TEST_P(TransportSuite, GroupSubscriptionMovesWithSetGroup)
{
    auto agent = open_comms("agent");
    Comms *ap = agent.get();
    // Each task with the group the agent was in when it arrived.
    Inbox<std::pair<msg::Task, std::string>> got;
    auto arrived_in = [&](const msg::Task &t) {
        return got.wait_for([&](const auto &e) { return e.first == t; });
    };
    EXPECT_EQ(agent->group(), "");
    agent->watch_for_group([&](const msg::Task &t) {
        got.push({t, ap->group()});
        return Verdict::ack;
    });
    // No group yet: queue "null", as the Go agent.
    const msg::Task on_null = keyed(unique("null"));
    server().send_task(queue_no_group, on_null);
    ASSERT_TRUE(arrived_in(on_null));

    const std::string red = unique("red");
    agent->set_group(red);
    EXPECT_EQ(agent->group(), red);
    // Sent after the move: the old queue must hold it, not deliver it.
    const msg::Task left_behind = keyed(unique("left-behind"));
    server().send_task(queue_no_group, left_behind);
    const msg::Task on_red = keyed(unique("red"));
    server().send_task(red, on_red);
    auto r = arrived_in(on_red);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->second, red);

    agent->set_group(red); // same group: nothing moves
    agent->set_group("");  // back to "null": the held message arrives
    EXPECT_EQ(agent->group(), "");
    auto back = arrived_in(left_behind);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->second, "") << "delivered while the agent was in " << red
                                << ": the old queue was still subscribed";
    EXPECT_EQ(got.count([&](const auto &e) { return e.first == left_behind; }),
              1u);
}

TEST_P(TransportSuite, SetGroupBeforeWatchSubscribesTheRightQueue)
{
    auto agent = open_comms("agent");
    const std::string g = unique("early");
    agent->set_group(g);
    Inbox<msg::Task> got;
    agent->watch_for_group([&](const msg::Task &t) {
        got.push(t);
        return Verdict::ack;
    });
    const msg::Task t = msg::SetGroupTask{g, false};
    server().send_task(g, t);
    ASSERT_TRUE(got.wait_has(t));
}

TEST_P(TransportSuite, CommsRequeueAndHandlerExceptionsRedeliver)
{
    REQUIRE_CAPABILITY(TODD_COMMS_CAP_ACK);
    auto agent = open_comms("agent");
    const std::string uuid = unique("agent");
    std::atomic<int> calls{0};
    Inbox<msg::Task> acked;
    auto sub = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        const int n = ++calls;
        if (n == 1)
            return Verdict::requeue;
        if (n == 2)
            throw std::runtime_error("handler failed"); // counts as requeue
        acked.push(t);
        return Verdict::ack;
    });
    const msg::Task t = msg::ExecuteTestRunTask{"t", 5};
    server().send_task(uuid, t);
    ASSERT_TRUE(acked.wait_for(1));
    EXPECT_EQ(acked.all()[0], t);
    EXPECT_EQ(calls.load(), 3);
}

TEST_P(TransportSuite, CommsRejectDropsTheMessage)
{
    REQUIRE_CAPABILITY(TODD_COMMS_CAP_ACK);
    auto agent = open_comms("agent");
    const std::string uuid = unique("agent");
    const msg::Task poison = keyed("poison"), marker = keyed("marker");
    Inbox<msg::Task> got;
    auto sub = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        got.push(t);
        return t == poison ? Verdict::reject : Verdict::ack;
    });
    server().send_task(uuid, poison);
    server().send_task(uuid, msg::DeleteTestDataTask{"t"});
    ASSERT_TRUE(got.wait_for(2));
    // A rejected message is not redelivered: it does not come back before
    // a marker sent after it.
    server().send_task(uuid, marker);
    ASSERT_TRUE(got.wait_has(marker));
    EXPECT_EQ(got.count([&](const msg::Task &t) { return t == poison; }), 1u);
}

TEST_P(TransportSuite, StoppedCommsFailsSendsAtOnce)
{
    SendPolicy forever;
    forever.retry_for = std::chrono::hours(1); // a retry would hang the test
    auto agent = open_comms("agent", forever);
    agent->stop();
    try {
        agent->send_response(msg::AgentStatusResponse{"a", "t", "ready"});
        FAIL() << "a send after stop was accepted";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_STATE);
        EXPECT_NE(std::string(e.what()).find(
                      "send to queue \"agentresponses\" failed"),
                  std::string::npos)
            << e.what();
    }
    agent->stop(); // idempotent
}

// The server program restarts: a new instance in the old one's place (a
// stopped instance is never started again, ABI-2). The agent's instance
// carries on without the host doing anything: a response sent while the
// server is away arrives, and so do tasks sent after.
TEST_P(TransportSuite, AgentCarriesOnAcrossAServerRestart)
{
    auto agent = open_comms("agent");
    const std::string uuid = unique("agent");
    Inbox<msg::Task> tasks;
    auto lt = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        tasks.push(t);
        return Verdict::ack;
    });
    const msg::Task before = keyed("before"), after = keyed("after");
    server().send_task(uuid, before);
    ASSERT_TRUE(tasks.wait_has(before));

    drop_server();
    const msg::Response r = msg::AgentStatusResponse{uuid, "t1", "ready"};
    // The facade retries while the service is away.
    auto sent =
        std::async(std::launch::async, [&] { agent->send_response(r); });
    restart_server();
    Inbox<msg::Response> got;
    auto lr = server().listen_for_responses([&](const msg::Response &x) {
        got.push(x);
        return Verdict::ack;
    });
    ASSERT_EQ(sent.wait_for(default_wait), std::future_status::ready);
    EXPECT_NO_THROW(sent.get());
    EXPECT_TRUE(got.wait_has(r));
    server().send_task(uuid, after);
    EXPECT_TRUE(tasks.wait_has(after));
}
