// SPDX-License-Identifier: Apache-2.0
// What is particular to the zeromq plugin, through todd::core::Transport: a
// server-role instance (engine + its own client over inproc) that binds port
// 0 on 127.0.0.1 and agent-role instances over TCP, all in this process; a
// helper process for the killed-consumer case. What every transport must
// show is stated once for all of them in tests/transport.
#include "inbox.hpp"
#include "log_capture.hpp"
#include "process.hpp"
#include "temp_dir.hpp"

#include <todd/core/log.hpp>
#include <todd/core/transport.hpp>

#include <gtest/gtest.h>
#include <zmq.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace todd::core;
using namespace std::chrono_literals;
using todd::test::default_wait;
using todd::test::payload_is;
using todd::test::Process;
using todd::test::TempDir;
using Inbox = todd::test::DeliveryInbox;

namespace {

std::shared_ptr<const Plugin> zeromq()
{
    static auto p = PluginRegistry({ZEROMQ_DIR}).load("zeromq");
    return p;
}

/** A unique queue name per call, so tests never see each other's messages. */
std::string queue(const std::string &base)
{
    static std::atomic<int> n{0};
    return base + "-" + std::to_string(n++);
}

/** Records link states; waits for one to be reached. */
class States {
  public:
    void attach(Transport &t)
    {
        t.on_state([this](LinkState s, int32_t, const std::string &d) {
            std::lock_guard lock(m_);
            seen_.emplace_back(s, d);
            cv_.notify_all();
        });
    }
    /** Wait until state s was reported at least n times in total. */
    bool wait(LinkState s, size_t n = 1, std::chrono::milliseconds lim = 20s)
    {
        std::unique_lock lock(m_);
        return cv_.wait_for(lock, lim, [&] { return count_locked(s) >= n; });
    }
    /** How often s was reported so far. */
    size_t count(LinkState s)
    {
        std::lock_guard lock(m_);
        return count_locked(s);
    }
    /** A server's endpoint as bound (port 0 resolved), from the detail of
     *  its connected state; "" before it is connected. */
    std::string bound_endpoint()
    {
        std::lock_guard lock(m_);
        const std::string prefix = "engine on ";
        for (auto &[s, d] : seen_)
            if (s == LinkState::connected && d.rfind(prefix, 0) == 0)
                return d.substr(prefix.size());
        return {};
    }

  private:
    size_t count_locked(LinkState s)
    {
        size_t n = 0;
        for (auto &e : seen_)
            n += e.first == s;
        return n;
    }
    std::mutex m_;
    std::condition_variable cv_;
    std::vector<std::pair<LinkState, std::string>> seen_;
};

/** Start a server-role instance and return the endpoint it bound: with
 *  port 0 the kernel's choice, never picked and released by the test. */
std::string start_server(Transport &srv, States &states)
{
    states.attach(srv);
    srv.start();
    std::string ep = states.bound_endpoint();
    if (ep.empty() || ep.ends_with(":0"))
        throw std::runtime_error("the server did not report its endpoint");
    return ep;
}

const std::string any_port = "tcp://127.0.0.1:0";

class ZeroMq : public ::testing::Test {
  protected:
    void SetUp() override
    {
        endpoint_ = any_port;
        server_ = server();
        endpoint_ = start_server(*server_, server_states_);
    }

    Options opts(const std::string &role, Options extra = {}) const
    {
        Options o{{"role", role},
                  {"endpoint", endpoint_},
                  {"heartbeat_ms", "100"},
                  {"heartbeat_timeout_ms", "1000"}};
        for (auto &kv : extra)
            o[kv.first] = kv.second;
        return o;
    }
    std::unique_ptr<Transport> server(Options extra = {}) const
    {
        return Transport::create(zeromq(), opts("server", extra));
    }
    std::unique_ptr<Transport> agent(Options extra = {}, bool start = true)
    {
        auto t = Transport::create(zeromq(), opts("agent", extra));
        if (start)
            t->start();
        return t;
    }

    std::string endpoint_;
    States server_states_; // outlives the server, which reports to it
    std::unique_ptr<Transport> server_;
};

TEST(ZeroMqPlugin, Metadata)
{
    const PluginInfo &i = zeromq()->info();
    EXPECT_EQ(i.name, "zeromq");
    EXPECT_EQ(i.abi_major, 1u);
    EXPECT_EQ(i.capabilities, TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL |
                                  TODD_COMMS_CAP_CONFIRMS |
                                  TODD_COMMS_CAP_REMOTE | TODD_COMMS_CAP_BATCH);
    std::map<std::string, std::string> defaults;
    for (auto &k : i.keys)
        defaults[k.name] = k.default_value.value_or("");
    EXPECT_EQ(defaults["role"], "agent");
    // Works on one machine with no configuration at all.
    EXPECT_EQ(defaults["endpoint"], "tcp://127.0.0.1:47570");
    EXPECT_TRUE(defaults.count("max_held"));
    EXPECT_TRUE(defaults.count("publish_timeout_ms"));
}

TEST(ZeroMqPlugin, ConfigurationRefusedNamingTheKey)
{
    auto expect_config = [](const Options &o, const std::string &needle) {
        try {
            Transport::create(zeromq(), o);
            FAIL() << "accepted";
        } catch (const CommsError &e) {
            EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG);
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
                << e.what();
        }
    };
    expect_config({{"role", "broker"}}, "role");
    expect_config({{"endpoint", "localhost:1"}}, "endpoint");
    expect_config({{"endpoint", "tcp://*:5555"}}, "wildcard");
    expect_config({{"publish_timeout_ms", "0"}}, "publish_timeout_ms");
    expect_config({{"max_held", "lots"}}, "max_held");
    expect_config({{"heartbeat_ms", "500"}, {"heartbeat_timeout_ms", "100"}},
                  "heartbeat_timeout_ms");
}

/** A handler that blocks until opened. */
class Gate {
  public:
    DeliveryHandler handler()
    {
        return [this](const Delivery &) {
            std::unique_lock lock(m_);
            inside_ = true;
            cv_.notify_all();
            // Bounded: a test that fails before open() must not hang here.
            cv_.wait_for(lock, default_wait, [&] { return open_; });
            return Verdict::ack;
        };
    }
    bool wait_inside()
    {
        std::unique_lock lock(m_);
        return cv_.wait_for(lock, 20s, [&] { return inside_; });
    }
    void open()
    {
        std::lock_guard lock(m_);
        open_ = true;
        cv_.notify_all();
    }
    ~Gate() { open(); }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    bool inside_ = false, open_ = false;
};

// The server's deliveries run on its engine thread when they can: one that
// blocks must not stall the engine for the agents or the server's own
// publishing.
TEST_F(ZeroMq, ServerDeliverBlockedEngineCarriesOn)
{
    auto a = agent();
    const std::string q = queue("srv-blocked"), other = queue("srv-other"),
                      to_agent = queue("srv-to-agent");
    Gate gate;
    auto s1 = server_->subscribe(q, gate.handler());
    Inbox srv_in, agent_in;
    auto s2 = server_->subscribe(other, srv_in.handler());
    auto s3 = a->subscribe(to_agent, agent_in.handler());
    a->publish(q, "block");
    ASSERT_TRUE(gate.wait_inside());
    a->publish(other, "agent to server");
    server_->publish(to_agent, "server to agent");
    a->publish(to_agent, "agent to agent");
    EXPECT_TRUE(srv_in.wait_for(1, 5s));
    EXPECT_TRUE(agent_in.wait_for(2, 5s));
    gate.open();
}

// Deliveries for two subscriptions: the first one's handler blocks on the
// reading thread; the second is delivered meanwhile by its worker, whether
// the two arrive in one read batch (handed over at once) or one after the
// other (handed over by the stand-in).
TEST_F(ZeroMq, BlockedHandlerHoldsUpOnlyItsOwnSubscription)
{
    auto a = agent();
    const std::string q1 = queue("held-up"), q2 = queue("not-held-up");
    Gate gate;
    Inbox in;
    auto s1 = a->subscribe(q1, gate.handler());
    auto s2 = a->subscribe(q2, in.handler());
    a->publish(queue("held-up-sync"), "sync"); // both SUBs are in
    // One batch from the engine: both deliveries travel together.
    for (auto st : server_->publish_batch({{q1, "block"}, {q2, "free"}}))
        ASSERT_EQ(st, TODD_COMMS_OK);
    ASSERT_TRUE(gate.wait_inside());
    EXPECT_TRUE(in.wait_for(1, 5s));
    gate.open();
}

// A deliver blocked for longer than the heartbeat timeout: the stand-in
// keeps the link alive, so the engine neither drops the agent nor hands its
// unacknowledged message to another consumer.
TEST_F(ZeroMq, DeliverBlockedPastHeartbeatTimeoutKeepsTheLink)
{
    States states; // outlives t, which reports to it until stopped
    auto t = agent();
    states.attach(*t);
    const std::string q = queue("long-block");
    Gate gate;
    auto s = t->subscribe(q, gate.handler());
    t->publish(q, "long");
    ASSERT_TRUE(gate.wait_inside());
    auto other = agent();
    Inbox in;
    auto o = other->subscribe(q, in.handler());
    // The scenario: blocked for longer than heartbeat_timeout_ms (1000).
    std::this_thread::sleep_for(1500ms);
    // Not ASSERT: the gate must open whatever happens, or the subscription
    // would wait for the blocked handler forever.
    EXPECT_NO_THROW(
        t->publish(queue("long-block-side"), "published while blocked"));
    gate.open();
    // t's subscription ends (quiescent, "long" settled): other is then the
    // only consumer, and a marker published behind t's acknowledgement
    // reaches it after anything the engine had handed it instead.
    s.reset();
    t->publish(q, "marker");
    EXPECT_TRUE(in.none_until(payload_is("long"), payload_is("marker")))
        << "the blocked message was requeued";
    EXPECT_EQ(states.count(LinkState::reconnecting), 0u);
}

TEST(ZeroMqBound, FullNamesTheDestinationAndBatchFillsStatuses)
{
    States srv_states;
    auto srv = Transport::create(
        zeromq(),
        {{"role", "server"}, {"endpoint", any_port}, {"max_held", "2"}});
    const std::string ep = start_server(*srv, srv_states);
    auto a = Transport::create(zeromq(), {{"role", "agent"}, {"endpoint", ep}});
    a->start();
    const std::string q = queue("full");
    auto st = a->publish_batch({{q, "a"}, {q, "b"}, {q, "c"}});
    ASSERT_EQ(st.size(), 3u);
    EXPECT_EQ(st[0], TODD_COMMS_OK);
    EXPECT_EQ(st[1], TODD_COMMS_OK);
    EXPECT_EQ(st[2], TODD_COMMS_E_FULL);
    try {
        a->publish(q, "d");
        FAIL() << "no error";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_FULL);
        EXPECT_NE(std::string(e.what()).find("'" + q + "'"), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("max_held=2"), std::string::npos)
            << e.what();
    }
    // Another destination is not affected; a consumer drains the full one.
    a->publish(queue("other"), "fine");
    Inbox in;
    auto s = a->subscribe(q, in.handler());
    ASSERT_TRUE(in.wait_for(2));
    a->publish(q, "room again");
    ASSERT_TRUE(in.wait_for(3));
}

TEST(ZeroMqLifecycle, SecondServerOnTheSameEndpointIsRefused)
{
    States s1_states;
    auto s1 = Transport::create(zeromq(),
                                {{"role", "server"}, {"endpoint", any_port}});
    const std::string ep = start_server(*s1, s1_states);
    auto s2 =
        Transport::create(zeromq(), {{"role", "server"}, {"endpoint", ep}});
    try {
        s2->start();
        FAIL() << "second bind accepted";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_UNAVAILABLE);
        EXPECT_NE(std::string(e.what()).find(ep), std::string::npos)
            << e.what();
    }
}

TEST(ZeroMqLifecycle, NoServerPublishTimesOutWithAClearError)
{
    // An ipc endpoint in a private directory: certainly nobody there, and
    // free for the server that comes later (no TCP port held in between).
    TempDir dir;
    const std::string ep = "ipc://" + dir / "engine.sock";
    States states; // outlives the transport, which reports STOPPED to it
    auto a = Transport::create(
        zeromq(),
        {{"role", "agent"}, {"endpoint", ep}, {"publish_timeout_ms", "300"}});
    states.attach(*a);
    a->start();
    try {
        a->publish("nobody-home", "x");
        FAIL() << "published with no server";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_UNAVAILABLE);
        EXPECT_NE(std::string(e.what()).find(ep), std::string::npos)
            << e.what();
    }
    EXPECT_TRUE(states.wait(LinkState::failed));
    // The server comes up later: the agent connects by itself.
    auto srv =
        Transport::create(zeromq(), {{"role", "server"}, {"endpoint", ep}});
    srv->start();
    EXPECT_TRUE(states.wait(LinkState::connected));
    Inbox in;
    auto s = srv->subscribe("late", in.handler());
    a->publish("late", "made it");
    ASSERT_TRUE(in.wait_for(1));
}

TEST_F(ZeroMq, AgentCarriesOnAfterServerRestart)
{
    States states;
    auto a = agent({}, false);
    states.attach(*a);
    const std::string q = queue("restart");
    Inbox in;
    auto s = a->subscribe(q, in.handler());
    a->start();
    ASSERT_TRUE(states.wait(LinkState::connected));
    server_->publish(q, "before");
    ASSERT_TRUE(in.wait_for(1));

    server_.reset(); // stops the engine: held messages are lost
    ASSERT_TRUE(states.wait(LinkState::reconnecting));
    // A publish while the server is away waits for it (publish_timeout).
    // A future, not a thread: whatever it throws fails the test, and a
    // failing start below cannot end the binary with a joinable thread.
    auto away =
        std::async(std::launch::async, [&] { a->publish(q, "while away"); });
    server_ = server();
    server_->start();
    ASSERT_EQ(away.wait_for(default_wait), std::future_status::ready);
    EXPECT_NO_THROW(away.get());
    ASSERT_TRUE(states.wait(LinkState::connected, 2));
    // The subscription carries on without the host doing anything.
    server_->publish(q, "after");
    ASSERT_TRUE(in.wait_for(3));
    std::set<std::string> got;
    for (auto &r : in.all())
        got.insert(r.payload);
    EXPECT_EQ(got, (std::set<std::string>{"before", "while away", "after"}));
}

TEST_F(ZeroMq, KilledConsumersUnackedMessagesGoToAnother)
{
    const std::string q = queue("killed");
    Process helper({ZEROMQ_HELPER, ZEROMQ_DIR, endpoint_, q});
    // A bounded wait: it also ends if the helper exits before.
    ASSERT_TRUE(helper.wait_output("ready\n", 20s)) << helper.output();
    server_->publish(q, "m0");
    server_->publish(q, "m1");
    server_->publish(q, "m2");
    // It holds m0 in its handler; m1 and m2 are prefetched behind it.
    ASSERT_TRUE(helper.wait_output("got m0\n", 20s)) << helper.output();
    helper.kill_now();
    Inbox in;
    auto s = server_->subscribe(q, in.handler());
    ASSERT_TRUE(in.wait_for(3));
    auto all = in.all();
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[0].payload, "m0");
    EXPECT_TRUE(all[0].redelivered);
    std::set<std::string> got;
    for (auto &r : all)
        got.insert(r.payload);
    EXPECT_EQ(got, (std::set<std::string>{"m0", "m1", "m2"}));
}

// Acks of deliveries made on an agent's I/O thread wait briefly for a
// message to travel with; with none coming they still reach the engine,
// so a consumer killed afterwards does not get its settled message
// redelivered.
TEST_F(ZeroMq, HeldAcksOfAnIdleAgentReachTheEngine)
{
    const std::string q = queue("acked");
    Process helper({ZEROMQ_HELPER, ZEROMQ_DIR, endpoint_, q, "ack"});
    ASSERT_TRUE(helper.wait_output("ready\n", 20s)) << helper.output();
    server_->publish(q, "m0");
    ASSERT_TRUE(helper.wait_output("got m0\n", 20s)) << helper.output();
    std::this_thread::sleep_for(200ms); // the agent says nothing more
    todd::test::LogCapture logs;
    const auto level = todd::log::level();
    todd::log::set_level(todd::log::Level::debug); // "peer ... left"
    helper.kill_now();
    // The engine notices the dead agent (within heartbeat_timeout_ms) and
    // requeues what it had not acknowledged then, before anything after.
    const bool left = logs.wait_for(" left (");
    todd::log::set_level(level);
    ASSERT_TRUE(left) << "the engine never noticed the killed agent";
    Inbox in;
    auto s = server_->subscribe(q, in.handler());
    server_->publish(q, "m1");
    EXPECT_TRUE(in.none_until(payload_is("m0"), payload_is("m1")))
        << "the acknowledged m0 was redelivered";
}

TEST_F(ZeroMq, MalformedCommandsAreDroppedNotFatal)
{
    // A raw DEALER (not the plugin) sends garbage to the engine.
    void *ctx = zmq_ctx_new();
    void *d = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    ASSERT_EQ(zmq_connect(d, endpoint_.c_str()), 0);
    auto send = [&](std::vector<std::string> frames) {
        for (size_t i = 0; i < frames.size(); ++i)
            zmq_send(d, frames[i].data(), frames[i].size(),
                     i + 1 < frames.size() ? ZMQ_SNDMORE : 0);
    };
    send({"HELLO"});                             // no session
    send({"HELLO", std::string(8, '\x01')});     // a real peer from now on
    send({"PUB", "short", "q", "t", "p"});       // header too short
    send({"PUB"});                               // no frames at all
    send({"SUB", std::string(12, '\0'), ""});    // empty destination
    send({"ACK", std::string(10, '\xff')});      // not n x 9 bytes
    send({"UNSUB", "x"});                        // wrong size
    send({"NOPE", "x", "y"});                    // unknown command
    send(std::vector<std::string>(20, "frame")); // too many frames
    send({""});                                  // empty command
    // The engine still serves real instances.
    auto a = agent();
    const std::string q = queue("after-garbage");
    Inbox in;
    auto s = server_->subscribe(q, in.handler());
    a->publish(q, "still alive");
    ASSERT_TRUE(in.wait_for(1));
    // Read what the engine answered (WELCOME, WHO...) before closing.
    char buf[64];
    while (zmq_recv(d, buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_close(d);
    zmq_ctx_term(ctx);
}

// Unlike loopback's, a zeromq instance refuses to publish before start
// (there is no link to the engine yet).
TEST_F(ZeroMq, PublishBeforeStartIsRefused)
{
    auto t = agent({}, false);
    try {
        t->publish("q", "before start");
        FAIL() << "publish before start accepted";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_STATE);
    }
}

} // namespace
