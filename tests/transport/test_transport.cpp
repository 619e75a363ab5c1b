// SPDX-License-Identifier: Apache-2.0
// What every transport must show through core's Transport (the rule numbers
// are docs/plugin-abi.md's), run once per plugin the build has.
#include "suite.hpp"

#include <map>
#include <set>
#include <thread>

using namespace todd::core;
using namespace todd::test;
using namespace todd::test::transport;

namespace {

std::vector<std::string> payloads(const std::vector<Received> &v)
{
    std::vector<std::string> out;
    for (auto &r : v)
        out.push_back(r.payload);
    return out;
}

} // namespace

TEST_P(TransportSuite, RoundTripKeepsBytesDestinationAndContentType) // ABI-3
{
    Transport &srv = server().transport();
    auto a = open("agent");
    const std::string to_srv = unique("rt-to-server"),
                      to_agent = unique("rt-to-agent"),
                      to_self = unique("rt-to-itself");
    DeliveryInbox i1, i2, i3;
    auto s1 = srv.subscribe(to_srv, i1.handler());
    auto s2 = a->subscribe(to_agent, i2.handler());
    auto s3 = a->subscribe(to_self, i3.handler());
    const std::string binary("\0\x01\xff\x7f zero\0tail", 15);
    a->publish(to_srv, binary, {0ms, "application/octet-stream"});
    a->publish(to_srv, "", {0ms, "application/json"});
    a->publish(to_srv, "third");
    srv.publish(to_agent, "to the agent");
    a->publish(to_self, "to itself");
    ASSERT_TRUE(i1.wait_for(3));
    ASSERT_TRUE(i2.wait_for(1));
    ASSERT_TRUE(i3.wait_for(1));
    auto r1 = i1.all();
    ASSERT_EQ(r1.size(), 3u);
    EXPECT_EQ(r1[0], (Received{to_srv, binary, "application/octet-stream"}));
    EXPECT_EQ(r1[1], (Received{to_srv, "", "application/json"}));
    EXPECT_EQ(r1[2], (Received{to_srv, "third", "text/plain"}));
    EXPECT_EQ(i2.all(), (std::vector<Received>{
                            {to_agent, "to the agent", "text/plain"}}));
    EXPECT_EQ(i3.all(),
              (std::vector<Received>{{to_self, "to itself", "text/plain"}}));
}

TEST_P(TransportSuite, HeldUntilASubscriberArrives) // ABI-4
{
    const std::string q = unique("held");
    auto sender = open("agent");
    sender->publish(q, "one");
    sender->publish(q, "two");
    sender.reset(); // held by the service, not by the sender
    auto receiver = open("agent");
    DeliveryInbox in;
    auto s = receiver->subscribe(q, in.handler());
    ASSERT_TRUE(in.wait_for(2));
    EXPECT_EQ(in.all(), (std::vector<Received>{{q, "one", "text/plain"},
                                               {q, "two", "text/plain"}}));
}

TEST_P(TransportSuite, CompetingSubscribersGetEachMessageOnce) // ABI-5
{
    auto a1 = open("agent"), a2 = open("agent");
    Transport &srv = server().transport();
    const std::string q = unique("compete");
    Inbox<std::pair<int, std::string>> got; // (subscriber, payload)
    auto to = [&](int who) {
        return [&got, who](const Delivery &d) {
            got.push({who, std::string(d.payload)});
            return Verdict::ack;
        };
    };
    auto s1 = a1->subscribe(q, to(1), 10);
    auto s2 = a2->subscribe(q, to(2), 10);
    auto s3 = srv.subscribe(q, to(3), 10);
    // Subscribing may finish in the background: a publish from the same
    // instance travels behind its subscription, so all three are in
    // before the messages go out.
    for (Transport *t : {a1.get(), a2.get(), &srv})
        t->publish(unique("compete-sync"), "sync");
    const int n = 300;
    std::vector<std::pair<std::string, std::string>> batch;
    for (int k = 0; k < n; ++k)
        batch.emplace_back(q, std::to_string(k));
    if (declares(TODD_COMMS_CAP_BATCH)) {
        for (auto st : a1->publish_batch(batch))
            ASSERT_EQ(st, TODD_COMMS_OK);
    } else {
        for (auto &[d, p] : batch)
            a1->publish(d, p);
    }
    ASSERT_TRUE(got.wait_until([&](const auto &v) {
        std::set<std::string> distinct;
        for (auto &e : v)
            distinct.insert(e.second);
        return distinct.size() == size_t(n);
    })) << got.size()
        << " deliveries";
    // Quiescent: whatever was delivered is in the inbox now.
    s1.reset();
    s2.reset();
    s3.reset();
    std::map<std::string, int> times;
    int per[4] = {0, 0, 0, 0};
    for (auto &[who, p] : got.all()) {
        ++times[p];
        ++per[who];
    }
    EXPECT_EQ(got.size(), size_t(n)) << "a message was delivered twice";
    for (auto &[p, k] : times)
        EXPECT_EQ(k, 1) << "message " << p;
    EXPECT_GT(per[1], 0);
    EXPECT_GT(per[2], 0);
    EXPECT_GT(per[3], 0);
}

TEST_P(TransportSuite, RequeueRedeliversFlaggedRejectDrops) // ABI-6
{
    REQUIRE_CAPABILITY(TODD_COMMS_CAP_ACK);
    auto t = open("agent");
    const std::string q = unique("verdicts");
    DeliveryInbox in;
    in.verdict = [](const Received &r, size_t) {
        if (r.payload == "again" && !r.redelivered)
            return Verdict::requeue;
        if (r.payload == "poison")
            return Verdict::reject;
        return Verdict::ack;
    };
    // One at a time: the requeued message comes back before the next.
    auto s = t->subscribe(q, in.handler(), 1);
    t->publish(q, "again");
    t->publish(q, "poison");
    t->publish(q, "marker");
    ASSERT_TRUE(in.wait_for(payload_is("marker")));
    auto expect = std::vector<std::pair<std::string, bool>>{{"again", false},
                                                            {"again", true},
                                                            {"poison", false},
                                                            {"marker", false}};
    std::vector<std::pair<std::string, bool>> seen;
    for (auto &r : in.all())
        seen.emplace_back(r.payload, r.redelivered);
    EXPECT_EQ(seen, expect);
    // Nothing further: the acked and the rejected messages are gone.
    t->publish(q, "end");
    ASSERT_TRUE(in.wait_for(payload_is("end")));
    EXPECT_EQ(payloads(in.all()),
              (std::vector<std::string>{"again", "again", "poison", "marker",
                                        "end"}));
}

TEST_P(TransportSuite, HandlerExceptionRequeues) // HOST: throw = requeue
{
    REQUIRE_CAPABILITY(TODD_COMMS_CAP_ACK);
    auto t = open("agent");
    const std::string q = unique("throws");
    DeliveryInbox in;
    in.verdict = [](const Received &r, size_t) -> Verdict {
        if (!r.redelivered)
            throw std::runtime_error("handler failed");
        return Verdict::ack;
    };
    auto s = t->subscribe(q, in.handler());
    t->publish(q, "x");
    t->publish(q, "marker");
    ASSERT_TRUE(in.wait_for(
        [](const Received &r) { return r.payload == "x" && r.redelivered; }));
    ASSERT_TRUE(in.wait_for([](const Received &r) {
        return r.payload == "marker" && r.redelivered;
    }));
    EXPECT_EQ(in.count(payload_is("x")), 2u);
}

TEST_P(TransportSuite, TimeToLiveExpiresUnconsumed) // ABI-7
{
    REQUIRE_CAPABILITY(TODD_COMMS_CAP_TTL);
    auto t = open("agent");
    const std::string q = unique("ttl");
    const auto published = std::chrono::steady_clock::now();
    t->publish(q, "short", {50ms});
    t->publish(q, "long", {60s});
    // A time-to-live ends only when time passes: wait for the clock, not
    // for an event.
    while (std::chrono::steady_clock::now() < published + 150ms)
        std::this_thread::sleep_for(10ms);
    DeliveryInbox in;
    auto s = t->subscribe(q, in.handler());
    t->publish(q, "marker");
    EXPECT_TRUE(in.none_until(payload_is("short"), payload_is("marker")));
    EXPECT_EQ(payloads(in.all()), (std::vector<std::string>{"long", "marker"}));
}

TEST_P(TransportSuite, NoDeliveryAfterUnsubscribe) // ABI-8
{
    auto t = open("agent");
    const std::string q = unique("quiet");
    std::atomic<bool> closed{false};
    std::atomic<int> late{0};
    DeliveryInbox first;
    first.verdict = [&](const Received &, size_t) {
        if (closed)
            ++late;
        std::this_thread::sleep_for(1ms); // widen the race window
        return Verdict::ack;
    };
    auto s = t->subscribe(q, first.handler());
    for (int i = 0; i < 20; ++i)
        t->publish(q, "m" + std::to_string(i));
    ASSERT_TRUE(first.wait_for(1));
    s.reset();
    closed = true;
    const size_t at_close = first.size();
    // What was not consumed, prefetched or not, goes to the next one; so
    // does what is published after.
    std::set<std::string> missing;
    for (int i = 0; i < 20; ++i)
        missing.insert("m" + std::to_string(i));
    for (auto &r : first.all())
        missing.erase(r.payload);
    auto u = open("agent");
    DeliveryInbox second;
    auto s2 = u->subscribe(q, second.handler());
    t->publish(q, "after");
    t->publish(q, "marker");
    EXPECT_TRUE(second.wait_until([&](const std::vector<Received> &v) {
        std::set<std::string> left = missing;
        bool marker = false;
        for (auto &r : v) {
            left.erase(r.payload);
            marker = marker || r.payload == "marker";
        }
        return marker && left.empty();
    })) << "unconsumed messages lost";
    EXPECT_EQ(second.count(payload_is("after")), 1u);
    EXPECT_EQ(first.size(), at_close);
    EXPECT_EQ(late, 0);
}

TEST_P(TransportSuite, NoDeliveryAfterStop) // ABI-8
{
    auto t = open("agent");
    const std::string q = unique("quiet-stop");
    std::atomic<bool> stopped{false};
    std::atomic<int> late{0};
    DeliveryInbox first;
    first.verdict = [&](const Received &, size_t) {
        if (stopped)
            ++late;
        std::this_thread::sleep_for(1ms); // stop while deliveries flow
        return Verdict::ack;
    };
    auto s = t->subscribe(q, first.handler());
    for (int i = 0; i < 20; ++i)
        t->publish(q, "before");
    ASSERT_TRUE(first.wait_for(1));
    t->stop();
    stopped = true;
    EXPECT_EQ(t->state(), LinkState::stopped);
    EXPECT_TRUE(states(*t).wait(LinkState::stopped));
    const size_t at_stop = first.size();
    // Published after stop by another instance, on the stopped one's
    // destination: a transport still consuming would take some of them.
    auto u = open("agent");
    u->publish(q, "after-stop");
    u->publish(q, "marker");
    DeliveryInbox second;
    auto s2 = u->subscribe(q, second.handler());
    ASSERT_TRUE(second.wait_for(payload_is("marker")));
    EXPECT_EQ(second.count(payload_is("after-stop")), 1u);
    EXPECT_EQ(first.size(), at_stop);
    EXPECT_EQ(late, 0);
    try {
        t->publish(q, "from the stopped one");
        ADD_FAILURE() << "publish after stop accepted";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_STATE) << e.what();
    }
}

TEST_P(TransportSuite, ConcurrentPublishAndPublishFromInsideDeliver) // ABI-9
{
    auto t = open("agent");
    const std::string q = unique("conc"), echo = unique("echo");
    DeliveryInbox in, out;
    Transport *tp = t.get();
    // Each delivery publishes to another destination from inside deliver.
    in.verdict = [&](const Received &r, size_t) {
        tp->publish(echo, r.payload);
        return Verdict::ack;
    };
    auto s = t->subscribe(q, in.handler());
    auto e = t->subscribe(echo, out.handler());
    const int threads = 4, per = 250;
    on_threads(threads, [&](int k) {
        for (int i = 0; i < per; ++i)
            tp->publish(q, std::to_string(k) + ":" + std::to_string(i));
    });
    ASSERT_TRUE(in.wait_for(threads * per));
    ASSERT_TRUE(out.wait_for(threads * per));
    std::set<std::string> seen;
    for (auto &r : out.all())
        seen.insert(r.payload);
    EXPECT_EQ(seen.size(), size_t(threads * per));
    // Per-publisher order is kept on a single subscriber.
    std::map<int, int> last;
    for (auto &r : in.all()) {
        int k = std::stoi(r.payload.substr(0, r.payload.find(':')));
        int i = std::stoi(r.payload.substr(r.payload.find(':') + 1));
        EXPECT_GT(i, last.count(k) ? last[k] : -1);
        last[k] = i;
    }
}

// Whether the instance's other subscriptions go on meanwhile is the
// plugin's choice ("may deliver concurrently"): the receiver here is
// another instance.
TEST_P(TransportSuite, PublishProgressesWhileADeliverIsBlocked) // Data rule
{
    auto t = open("agent"), u = open("agent");
    const std::string q = unique("blocked"), other = unique("other");
    std::mutex m;
    std::condition_variable cv;
    bool release = false, inside = false;
    auto s = t->subscribe(q, [&](const Delivery &) {
        std::unique_lock lock(m);
        inside = true;
        cv.notify_all();
        // Bounded: a failing test must not leave it blocked for ever.
        cv.wait_for(lock, default_wait, [&] { return release; });
        return Verdict::ack;
    });
    DeliveryInbox in;
    auto o = u->subscribe(other, in.handler());
    t->publish(q, "block");
    {
        std::unique_lock lock(m);
        EXPECT_TRUE(cv.wait_for(lock, default_wait, [&] { return inside; }));
    }
    // One deliver is blocked: the same instance's publishes go through.
    t->publish(other, "still moving");
    const bool got = in.wait_for(1);
    {
        std::lock_guard lock(m);
        release = true;
    }
    cv.notify_all();
    EXPECT_TRUE(got);
}

TEST_P(TransportSuite, PublishBatchFillsStatusesAndDelivers) // ABI-11
{
    REQUIRE_CAPABILITY(TODD_COMMS_CAP_BATCH);
    auto t = open("agent");
    const std::string q = unique("batch");
    DeliveryInbox in;
    auto s = t->subscribe(q, in.handler());
    auto st = t->publish_batch({{q, "a"}, {q, "b"}, {q, "c"}});
    EXPECT_EQ(st, (std::vector<int32_t>{TODD_COMMS_OK, TODD_COMMS_OK,
                                        TODD_COMMS_OK}));
    EXPECT_TRUE(t->publish_batch({}).empty());
    ASSERT_TRUE(in.wait_for(3));
    EXPECT_EQ(payloads(in.all()), (std::vector<std::string>{"a", "b", "c"}));
}

TEST_P(TransportSuite, UnknownKeyIsRefusedNamingIt) // ABI-1, HOST-2
{
    try {
        Transport::create(plugin(), {{"no_such_key", "1"}});
        FAIL() << "an unknown key was accepted";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG);
        EXPECT_NE(std::string(e.what()).find("no_such_key"), std::string::npos)
            << e.what();
    }
}

TEST_P(TransportSuite, LifecycleRules) // ABI-2, HOST-1
{
    auto t = open("agent", false);
    DeliveryInbox early;
    const std::string q0 = unique("before-start");
    auto s0 = t->subscribe(q0, early.handler()); // takes effect at start
    t->start();
    ASSERT_TRUE(states(*t).wait(LinkState::connected));
    // Control calls from inside a handler of the same transport are
    // refused; publishing from there is fine.
    const std::string q = unique("inside");
    Inbox<int32_t> nested; // the status of a subscribe from inside
    DeliveryInbox in;
    in.verdict = [&](const Received &, size_t) {
        try {
            t->subscribe(unique("nested"),
                         [](const Delivery &) { return Verdict::ack; });
            nested.push(TODD_COMMS_OK);
        } catch (const CommsError &e) {
            nested.push(e.status());
        }
        return Verdict::ack;
    };
    auto s = t->subscribe(q, in.handler());
    t->publish(q, "x");
    t->publish(q0, "to the early one");
    ASSERT_TRUE(nested.wait_for(1));
    ASSERT_TRUE(early.wait_for(1));
    EXPECT_EQ(nested.all(), std::vector<int32_t>{TODD_COMMS_E_STATE});
    EXPECT_EQ(states(*t).count(LinkState::connected), 1u);
    t->stop();
    EXPECT_EQ(t->state(), LinkState::stopped);
    t->stop(); // idempotent
    try {
        t->start();
        ADD_FAILURE() << "start after stop accepted";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_STATE);
    }
    // Destroy without stop is safe, with a live subscription and a message
    // in flight.
    auto u = open("agent");
    DeliveryInbox ui;
    const std::string uq = unique("nostop");
    auto su = u->subscribe(uq, ui.handler());
    u->publish(uq, "x");
    su = Subscription();
    u.reset();
}

TEST_P(TransportSuite, SubscriptionResetInsideItsOwnHandler)
{
    auto t = open("agent");
    const std::string q = unique("selfreset");
    Subscription s;
    std::mutex m;
    std::condition_variable cv;
    bool ready = false;
    Inbox<std::string> calls;
    {
        std::unique_lock lock(m);
        s = t->subscribe(q, [&](const Delivery &d) {
            {
                std::unique_lock l(m);
                cv.wait_for(l, default_wait, [&] { return ready; });
            }
            s.reset(); // detaches; the plugin-side unsubscribe ends later
            calls.push(std::string(d.payload));
            return Verdict::ack;
        });
        ready = true;
    }
    cv.notify_all();
    t->publish(q, "1");
    t->publish(q, "2");
    ASSERT_TRUE(calls.wait_for(1));
    // The second message is not consumed by the detached handler: another
    // subscriber gets it.
    auto u = open("agent");
    DeliveryInbox in;
    auto s2 = u->subscribe(q, in.handler());
    ASSERT_TRUE(in.wait_for(payload_is("2")));
    EXPECT_EQ(calls.all(), std::vector<std::string>{"1"});
}

namespace {

// The plugins of this build (meson passes the list); each is its own meson
// test through --gtest_filter=*/<name>.
std::vector<std::string> built_plugins()
{
    std::vector<std::string> out;
    std::string list = TODD_TRANSPORT_PLUGINS;
    for (size_t at = 0; at <= list.size();) {
        size_t comma = list.find(',', at);
        if (comma == std::string::npos)
            comma = list.size();
        if (comma > at)
            out.push_back(list.substr(at, comma - at));
        at = comma + 1;
    }
    return out;
}

} // namespace

INSTANTIATE_TEST_SUITE_P(Plugins, TransportSuite,
                         ::testing::ValuesIn(built_plugins()),
                         [](const auto &info) { return info.param; });
