// SPDX-License-Identifier: Apache-2.0
// The zeromq plugin through todd::core::Transport: a server-role instance
// (engine + its own client over inproc) and agent-role instances over TCP on
// a free loopback port, all in this process; a helper process for the
// killed-consumer case.
#include <todd/core/log.hpp>
#include <todd/core/transport.hpp>

#include <gtest/gtest.h>
#include <zmq.h>

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace todd::core;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<const Plugin> zeromq()
{
    static auto p = PluginRegistry({ZEROMQ_DIR}).load("zeromq");
    return p;
}

/** A TCP port free right now on 127.0.0.1 (the kernel picks it). */
int free_port()
{
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0)
        throw std::runtime_error("bind to a free port failed");
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

/** A unique queue name per call, so tests never see each other's messages. */
std::string queue(const std::string &base)
{
    static std::atomic<int> n{0};
    return base + "-" + std::to_string(n++);
}

struct Received {
    std::string destination, payload, content_type;
    bool redelivered;
};

/** Collects deliveries; waits on conditions with a generous bound. */
class Inbox {
  public:
    Verdict operator()(const Delivery &d)
    {
        std::lock_guard lock(m_);
        got_.push_back({std::string(d.destination), std::string(d.payload),
                        std::string(d.content_type), d.redelivered});
        cv_.notify_all();
        return Verdict::ack;
    }
    bool wait_for(size_t n, std::chrono::milliseconds limit = 20s)
    {
        std::unique_lock lock(m_);
        return cv_.wait_for(lock, limit, [&] { return got_.size() >= n; });
    }
    std::vector<Received> all()
    {
        std::lock_guard lock(m_);
        return got_;
    }
    size_t size()
    {
        std::lock_guard lock(m_);
        return got_.size();
    }
    DeliveryHandler handler()
    {
        return [this](const Delivery &d) { return (*this)(d); };
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    std::vector<Received> got_;
};

/** Records link states; waits for one to be reached. */
class States {
  public:
    void attach(Transport &t)
    {
        t.on_state([this](LinkState s, int32_t, const std::string &) {
            std::lock_guard lock(m_);
            seen_.push_back(s);
            cv_.notify_all();
        });
    }
    /** Wait until state s was reported at least n times in total. */
    bool wait(LinkState s, size_t n = 1, std::chrono::milliseconds lim = 20s)
    {
        std::unique_lock lock(m_);
        return cv_.wait_for(lock, lim, [&] {
            return size_t(std::count(seen_.begin(), seen_.end(), s)) >= n;
        });
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    std::vector<LinkState> seen_;
};

class ZeroMq : public ::testing::Test {
  protected:
    void SetUp() override
    {
        endpoint_ = "tcp://127.0.0.1:" + std::to_string(free_port());
        server_ = server();
        server_->start();
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
    expect_config({{"no_such_key", "1"}}, "no_such_key");
}

TEST_F(ZeroMq, RoundTripsOnSeveralDestinationsBothWays)
{
    auto a = agent();
    const std::string q1 = queue("rt-1"), q2 = queue("rt-2"),
                      q3 = queue("rt-3");
    Inbox i1, i2, i3;
    auto s1 = server_->subscribe(q1, i1.handler()); // agent -> server
    auto s2 = a->subscribe(q2, i2.handler());       // server -> agent
    auto s3 = a->subscribe(q3, i3.handler());       // agent -> agent
    const std::string binary("\0\x01\xff\x7f zero\0tail", 15);
    a->publish(q1, binary, {0ms, "application/octet-stream"});
    a->publish(q1, "", {0ms, "application/json"});
    server_->publish(q2, "to the agent");
    a->publish(q3, "to myself");
    ASSERT_TRUE(i1.wait_for(2));
    ASSERT_TRUE(i2.wait_for(1));
    ASSERT_TRUE(i3.wait_for(1));
    auto r1 = i1.all();
    EXPECT_EQ(r1[0].payload, binary);
    EXPECT_EQ(r1[0].destination, q1);
    EXPECT_EQ(r1[0].content_type, "application/octet-stream");
    EXPECT_FALSE(r1[0].redelivered);
    EXPECT_EQ(r1[1].payload, "");
    EXPECT_EQ(r1[1].content_type, "application/json");
    EXPECT_EQ(i2.all()[0].payload, "to the agent");
    EXPECT_EQ(i2.all()[0].content_type, "text/plain");
    EXPECT_EQ(i3.all()[0].payload, "to myself");
    EXPECT_EQ(i3.all()[0].destination, q3);
}

TEST_F(ZeroMq, HeldUntilAConsumerArrives)
{
    const std::string q = queue("held");
    auto sender = agent();
    sender->publish(q, "one");
    sender->publish(q, "two");
    sender.reset(); // held by the server's engine, not by the sender
    auto receiver = agent();
    Inbox in;
    auto s = receiver->subscribe(q, in.handler());
    ASSERT_TRUE(in.wait_for(2));
    EXPECT_EQ(in.all()[0].payload, "one");
    EXPECT_EQ(in.all()[1].payload, "two");
    EXPECT_FALSE(in.all()[0].redelivered);
}

TEST_F(ZeroMq, CompetingConsumersEachMessageOnce)
{
    auto a1 = agent(), a2 = agent();
    const std::string q = queue("compete");
    Inbox i1, i2, i3;
    auto s1 = a1->subscribe(q, i1.handler(), 10);
    auto s2 = a2->subscribe(q, i2.handler(), 10);
    auto s3 = server_->subscribe(q, i3.handler(), 10);
    // Subscribing is asynchronous; a confirmed publish from the same
    // instance comes after its SUB on the link, so all three consume
    // before the batch goes out.
    for (auto *t : {a1.get(), a2.get()})
        t->publish(queue("compete-sync"), "sync");
    const int n = 300;
    std::vector<std::pair<std::string, std::string>> batch;
    for (int k = 0; k < n; ++k)
        batch.emplace_back(q, std::to_string(k));
    for (auto st : a1->publish_batch(batch))
        ASSERT_EQ(st, TODD_COMMS_OK);
    for (int spin = 0; spin < 2000; ++spin) {
        if (i1.size() + i2.size() + i3.size() >= size_t(n))
            break;
        std::this_thread::sleep_for(10ms);
    }
    std::multiset<std::string> seen;
    for (auto *in : {&i1, &i2, &i3})
        for (auto &r : in->all())
            seen.insert(r.payload);
    ASSERT_EQ(seen.size(), size_t(n));
    for (int k = 0; k < n; ++k)
        EXPECT_EQ(seen.count(std::to_string(k)), 1u) << k;
    EXPECT_GT(i1.size(), 0u);
    EXPECT_GT(i2.size(), 0u);
    EXPECT_GT(i3.size(), 0u);
}

TEST_F(ZeroMq, RequeueRedeliversFlaggedRejectDrops)
{
    auto t = agent();
    const std::string q = queue("verdicts");
    std::mutex m;
    std::condition_variable cv;
    std::vector<std::pair<std::string, bool>> log;
    auto s = t->subscribe(
        q,
        [&](const Delivery &d) {
            std::lock_guard lock(m);
            log.emplace_back(std::string(d.payload), d.redelivered);
            cv.notify_all();
            if (d.payload == "again" && !d.redelivered)
                return Verdict::requeue;
            if (d.payload == "poison")
                return Verdict::reject;
            return Verdict::ack;
        },
        1); // one at a time: the requeued message comes back first
    t->publish(q, "again");
    t->publish(q, "poison");
    t->publish(q, "marker");
    std::unique_lock lock(m);
    ASSERT_TRUE(cv.wait_for(lock, 20s, [&] {
        return std::any_of(log.begin(), log.end(),
                           [](auto &e) { return e.first == "marker"; });
    }));
    std::vector<std::pair<std::string, bool>> expect = {{"again", false},
                                                        {"again", true},
                                                        {"poison", false},
                                                        {"marker", false}};
    EXPECT_EQ(log, expect);
    lock.unlock();
    t->publish(q, "end");
    lock.lock();
    ASSERT_TRUE(
        cv.wait_for(lock, 20s, [&] { return log.back().first == "end"; }));
    EXPECT_EQ(log.size(), 5u);
}

TEST_F(ZeroMq, HandlerExceptionRequeues)
{
    auto t = agent();
    const std::string q = queue("throws");
    std::atomic<int> calls{0};
    Inbox in;
    auto s = t->subscribe(q, [&](const Delivery &d) {
        if (calls++ == 0)
            throw std::runtime_error("boom");
        return in(d);
    });
    t->publish(q, "x");
    ASSERT_TRUE(in.wait_for(1));
    EXPECT_TRUE(in.all()[0].redelivered);
}

TEST_F(ZeroMq, TimeToLiveExpiresHeldMessages)
{
    auto t = agent();
    const std::string q = queue("ttl");
    const auto published = std::chrono::steady_clock::now();
    t->publish(q, "short", {20ms});
    t->publish(q, "long", {60s});
    // Let the clock pass the first message's expiry (a time condition, not a
    // synchronisation sleep).
    while (std::chrono::steady_clock::now() < published + 60ms)
        std::this_thread::sleep_for(5ms);
    Inbox in;
    auto s = t->subscribe(q, in.handler());
    t->publish(q, "marker");
    ASSERT_TRUE(in.wait_for(2));
    auto all = in.all();
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(all[0].payload, "long");
    EXPECT_EQ(all[1].payload, "marker");
}

TEST_F(ZeroMq, NoDeliveryAfterUnsubscribeOrStop)
{
    auto t = agent();
    const std::string q = queue("quiet");
    std::atomic<int> calls{0};
    std::atomic<bool> closed{false};
    std::atomic<bool> late{false};
    Inbox first;
    auto s = t->subscribe(q, [&](const Delivery &d) {
        if (closed)
            late = true;
        ++calls;
        std::this_thread::sleep_for(1ms); // widen the race window
        return first(d);
    });
    for (int i = 0; i < 20; ++i)
        t->publish(q, "m");
    ASSERT_TRUE(first.wait_for(1));
    s.reset();
    closed = true;
    const int at_close = calls;
    // What was not consumed (even if prefetched) goes to the next consumer.
    Inbox second;
    auto s2 = server_->subscribe(q, second.handler());
    ASSERT_TRUE(second.wait_for(size_t(20 - at_close)));
    EXPECT_FALSE(late);
    EXPECT_EQ(calls, at_close);

    std::atomic<bool> stopped{false};
    const std::string q2 = queue("quiet-stop");
    auto s3 = t->subscribe(q2, [&](const Delivery &) {
        if (stopped)
            late = true;
        std::this_thread::sleep_for(1ms);
        return Verdict::ack;
    });
    for (int i = 0; i < 20; ++i)
        t->publish(q2, "m");
    t->stop();
    stopped = true;
    EXPECT_FALSE(late);
    EXPECT_EQ(t->state(), LinkState::stopped);
}

TEST_F(ZeroMq, ConcurrentPublishAndPublishFromInsideDeliver)
{
    auto t = agent();
    const std::string q = queue("conc"), echo = queue("echo");
    Inbox in, out;
    auto s = t->subscribe(q, [&](const Delivery &d) {
        t->publish(echo, d.payload); // from inside the callback
        return in(d);
    });
    auto e = t->subscribe(echo, out.handler());
    const int threads = 4, per = 250;
    std::vector<std::thread> ts;
    for (int k = 0; k < threads; ++k)
        ts.emplace_back([&, k] {
            for (int i = 0; i < per; ++i)
                t->publish(q, std::to_string(k) + ":" + std::to_string(i));
        });
    for (auto &th : ts)
        th.join();
    ASSERT_TRUE(in.wait_for(threads * per));
    ASSERT_TRUE(out.wait_for(threads * per));
    std::set<std::string> seen;
    for (auto &r : out.all())
        seen.insert(r.payload);
    EXPECT_EQ(seen.size(), size_t(threads * per));
    // Per-publisher order is kept on a single consumer.
    std::map<int, int> last;
    for (auto &r : in.all()) {
        int k = std::stoi(r.payload.substr(0, r.payload.find(':')));
        int i = std::stoi(r.payload.substr(r.payload.find(':') + 1));
        EXPECT_GT(i, last.count(k) ? last[k] : -1);
        last[k] = i;
    }
}

TEST_F(ZeroMq, PublishProgressesWhileADeliverIsBlocked)
{
    auto t = agent();
    const std::string q = queue("blocked"), other = queue("other");
    std::mutex m;
    std::condition_variable cv;
    bool release = false, inside = false;
    auto s = t->subscribe(q, [&](const Delivery &) {
        std::unique_lock lock(m);
        inside = true;
        cv.notify_all();
        cv.wait(lock, [&] { return release; });
        return Verdict::ack;
    });
    Inbox in;
    auto o = t->subscribe(other, in.handler());
    t->publish(q, "block");
    {
        std::unique_lock lock(m);
        ASSERT_TRUE(cv.wait_for(lock, 20s, [&] { return inside; }));
    }
    // One deliver is blocked: publishing and other subscriptions go on.
    t->publish(other, "still moving");
    bool got = in.wait_for(1);
    {
        std::lock_guard lock(m);
        release = true;
    }
    cv.notify_all();
    EXPECT_TRUE(got);
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
            cv_.wait(lock, [&] { return open_; });
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
    std::this_thread::sleep_for(1500ms); // heartbeat_timeout_ms is 1000
    t->publish(queue("long-block-side"), "published while blocked");
    gate.open();
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(in.size(), 0u) << "the blocked message was requeued";
    EXPECT_FALSE(states.wait(LinkState::reconnecting, 1, 10ms));
}

TEST(ZeroMqBound, FullNamesTheDestinationAndBatchFillsStatuses)
{
    std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
    auto srv = Transport::create(
        zeromq(), {{"role", "server"}, {"endpoint", ep}, {"max_held", "2"}});
    srv->start();
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
    std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
    auto s1 =
        Transport::create(zeromq(), {{"role", "server"}, {"endpoint", ep}});
    s1->start();
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
    std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
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
    std::atomic<int32_t> away_status{1};
    std::thread away([&] {
        try {
            a->publish(q, "while away");
            away_status = TODD_COMMS_OK;
        } catch (const CommsError &e) {
            away_status = e.status();
        }
    });
    server_ = server();
    server_->start();
    away.join();
    EXPECT_EQ(away_status, TODD_COMMS_OK);
    ASSERT_TRUE(states.wait(LinkState::connected, 2));
    // The subscription carries on without the host doing anything.
    server_->publish(q, "after");
    ASSERT_TRUE(in.wait_for(3));
    std::set<std::string> got;
    for (auto &r : in.all())
        got.insert(r.payload);
    EXPECT_EQ(got, (std::set<std::string>{"before", "while away", "after"}));
}

/** A child process running the helper; killed when it goes out of scope. */
class Child {
  public:
    explicit Child(const std::vector<std::string> &args)
    {
        int fds[2];
        if (::pipe(fds) != 0)
            throw std::runtime_error("pipe");
        pid_ = ::fork();
        if (pid_ == 0) {
            ::dup2(fds[1], 1);
            ::close(fds[0]);
            ::close(fds[1]);
            std::vector<char *> argv;
            for (auto &a : args)
                argv.push_back(const_cast<char *>(a.c_str()));
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(fds[1]);
        fd_ = fds[0];
    }
    ~Child()
    {
        kill9();
        ::close(fd_);
    }
    /** Next line of the child's stdout; "" at end of file or after 20 s. */
    std::string line()
    {
        std::string s;
        auto deadline = std::chrono::steady_clock::now() + 20s;
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            pollfd p{fd_, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&p, 1, int(left.count())) <= 0)
                return {};
            char c;
            if (::read(fd_, &c, 1) != 1)
                return {};
            if (c == '\n')
                return s;
            s += c;
        }
    }
    void kill9()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
    }

  private:
    pid_t pid_ = -1;
    int fd_ = -1;
};

TEST_F(ZeroMq, KilledConsumersUnackedMessagesGoToAnother)
{
    const std::string q = queue("killed");
    Child helper({ZEROMQ_HELPER, ZEROMQ_DIR, endpoint_, q});
    // A bounded wait: the helper exits (end of file) if it cannot start.
    ASSERT_EQ(helper.line(), "ready");
    server_->publish(q, "m0");
    server_->publish(q, "m1");
    server_->publish(q, "m2");
    // It holds m0 in its handler; m1 and m2 are prefetched behind it.
    ASSERT_EQ(helper.line(), "got m0");
    helper.kill9();
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
    Child helper({ZEROMQ_HELPER, ZEROMQ_DIR, endpoint_, q, "ack"});
    ASSERT_EQ(helper.line(), "ready");
    server_->publish(q, "m0");
    ASSERT_EQ(helper.line(), "got m0");
    std::this_thread::sleep_for(200ms); // the agent says nothing more
    helper.kill9();
    Inbox in;
    auto s = server_->subscribe(q, in.handler());
    server_->publish(q, "m1");
    ASSERT_TRUE(in.wait_for(1));
    // The engine notices the dead agent within heartbeat_timeout_ms (1 s)
    // and would requeue m0 then, had its ack not arrived.
    EXPECT_FALSE(in.wait_for(2, 2500ms));
    EXPECT_EQ(in.all()[0].payload, "m1");
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

TEST_F(ZeroMq, LifecycleRules)
{
    States st;
    auto t = agent({}, false);
    try {
        t->publish("q", "before start");
        FAIL() << "publish before start accepted";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_STATE);
    }
    st.attach(*t);
    t->start();
    EXPECT_TRUE(st.wait(LinkState::connected));
    t->stop();
    EXPECT_EQ(t->state(), LinkState::stopped);
    // Destroy without stop is safe, with live subscriptions.
    auto u = agent();
    Inbox in;
    auto su = u->subscribe(queue("nostop"), in.handler());
    u->publish(queue("nostop"), "x");
    su = Subscription();
    u.reset();
}

} // namespace
