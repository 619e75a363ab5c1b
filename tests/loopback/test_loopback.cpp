// SPDX-License-Identifier: Apache-2.0
// The loopback plugin through todd::core::Transport: every ABI-* behaviour a
// transport must show, on the real shared object.
#include <todd/core/log.hpp>
#include <todd/core/transport.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace todd::core;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<const Plugin> loopback()
{
    static auto p = PluginRegistry({LOOPBACK_DIR}).load("loopback");
    return p;
}

std::unique_ptr<Transport> make(const Options &o = {})
{
    auto t = Transport::create(loopback(), o);
    t->start();
    return t;
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
    bool wait_for(size_t n, std::chrono::milliseconds limit = 10s)
    {
        std::unique_lock lock(m_);
        return cv_.wait_for(lock, limit, [&] { return got_.size() >= n; });
    }
    std::vector<Received> all()
    {
        std::lock_guard lock(m_);
        return got_;
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

TEST(Loopback, Metadata)
{
    const PluginInfo &i = loopback()->info();
    EXPECT_EQ(i.name, "loopback");
    EXPECT_EQ(i.abi_major, 1u);
    EXPECT_EQ(i.capabilities,
              TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL | TODD_COMMS_CAP_BATCH);
    ASSERT_EQ(i.keys.size(), 2u);
    EXPECT_EQ(i.keys[0].name, "max_queue_length");
}

TEST(Loopback, RoundTripKeepsBytesDestinationAndContentType) // ABI-3
{
    auto t = make();
    const std::string a = queue("rt-a"), b = queue("rt-b");
    Inbox ia, ib;
    auto sa = t->subscribe(a, ia.handler());
    auto sb = t->subscribe(b, ib.handler());
    const std::string binary("\0\x01\xff\x7f zero\0tail", 15);
    t->publish(a, binary, {0ms, "application/octet-stream"});
    t->publish(b, "", {0ms, "application/json"});
    t->publish(a, "second");
    ASSERT_TRUE(ia.wait_for(2));
    ASSERT_TRUE(ib.wait_for(1));
    auto ra = ia.all(), rb = ib.all();
    EXPECT_EQ(ra[0].payload, binary);
    EXPECT_EQ(ra[0].destination, a);
    EXPECT_EQ(ra[0].content_type, "application/octet-stream");
    EXPECT_FALSE(ra[0].redelivered);
    EXPECT_EQ(ra[1].payload, "second");
    EXPECT_EQ(ra[1].content_type, "text/plain");
    EXPECT_EQ(rb[0].payload, "");
    EXPECT_EQ(rb[0].destination, b);
    EXPECT_EQ(rb[0].content_type, "application/json");
}

TEST(Loopback, HeldUntilSubscribeAcrossInstances) // ABI-4
{
    const std::string q = queue("held");
    auto sender = make();
    sender->publish(q, "one");
    sender->publish(q, "two");
    sender.reset(); // held by the shared broker, not the instance
    auto receiver = make();
    Inbox in;
    auto s = receiver->subscribe(q, in.handler());
    ASSERT_TRUE(in.wait_for(2));
    EXPECT_EQ(in.all()[0].payload, "one");
    EXPECT_EQ(in.all()[1].payload, "two");
}

TEST(Loopback, CompetingSubscribersEachMessageOnce) // ABI-5
{
    auto t1 = make(), t2 = make();
    const std::string q = queue("compete");
    Inbox i1, i2;
    auto s1 = t1->subscribe(q, i1.handler());
    auto s2 = t2->subscribe(q, i2.handler());
    const int n = 200;
    for (int k = 0; k < n; ++k)
        t1->publish(q, std::to_string(k));
    std::multiset<std::string> seen;
    for (int spin = 0; spin < 1000; ++spin) {
        if (i1.all().size() + i2.all().size() >= size_t(n))
            break;
        std::this_thread::sleep_for(10ms);
    }
    for (auto &r : i1.all())
        seen.insert(r.payload);
    for (auto &r : i2.all())
        seen.insert(r.payload);
    ASSERT_EQ(seen.size(), size_t(n));
    for (int k = 0; k < n; ++k)
        EXPECT_EQ(seen.count(std::to_string(k)), 1u) << k;
    EXPECT_GT(i1.all().size(), 0u);
    EXPECT_GT(i2.all().size(), 0u);
}

TEST(Loopback, RequeueRedeliversFlaggedRejectDrops) // ABI-6
{
    auto t = make();
    const std::string q = queue("verdicts");
    std::mutex m;
    std::condition_variable cv;
    std::vector<std::pair<std::string, bool>> log;
    auto s = t->subscribe(q, [&](const Delivery &d) {
        std::lock_guard lock(m);
        log.emplace_back(std::string(d.payload), d.redelivered);
        cv.notify_all();
        if (d.payload == "again" && !d.redelivered)
            return Verdict::requeue;
        if (d.payload == "poison")
            return Verdict::reject;
        return Verdict::ack;
    });
    t->publish(q, "again");
    t->publish(q, "poison");
    t->publish(q, "marker");
    std::unique_lock lock(m);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] {
        return std::any_of(log.begin(), log.end(),
                           [](auto &e) { return e.first == "marker"; });
    }));
    std::vector<std::pair<std::string, bool>> expect = {{"again", false},
                                                        {"again", true},
                                                        {"poison", false},
                                                        {"marker", false}};
    EXPECT_EQ(log, expect);
    lock.unlock();
    // Nothing further: the acked and rejected messages are gone.
    t->publish(q, "end");
    lock.lock();
    ASSERT_TRUE(
        cv.wait_for(lock, 10s, [&] { return log.back().first == "end"; }));
    EXPECT_EQ(log.size(), 5u);
}

TEST(Loopback, HandlerExceptionRequeues)
{
    auto t = make();
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

TEST(Loopback, TimeToLiveExpiresUnconsumed) // ABI-7
{
    auto t = make();
    const std::string q = queue("ttl");
    const auto published = std::chrono::steady_clock::now();
    t->publish(q, "short", {20ms});
    t->publish(q, "long", {60s});
    // Let the clock pass the first message's expiry (a time condition, not a
    // synchronisation sleep).
    while (std::chrono::steady_clock::now() < published + 40ms)
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

TEST(Loopback, NoDeliveryAfterUnsubscribeOrStop) // ABI-8
{
    auto t = make();
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
    // What was not consumed is still there for the next subscriber.
    Inbox second;
    auto s2 = t->subscribe(q, second.handler());
    ASSERT_TRUE(second.wait_for(size_t(20 - at_close)));
    EXPECT_FALSE(late);
    EXPECT_EQ(calls, at_close);

    std::atomic<bool> stopped{false};
    auto s3 = t->subscribe(queue("quiet-stop"), [&](const Delivery &) {
        if (stopped)
            late = true;
        return Verdict::ack;
    });
    t->stop();
    stopped = true;
    EXPECT_FALSE(late);
    EXPECT_EQ(t->state(), LinkState::stopped);
}

TEST(Loopback, ConcurrentPublishAndPublishFromInsideDeliver) // ABI-9
{
    auto t = make();
    const std::string q = queue("conc"), echo = queue("echo");
    Inbox in, out;
    // Each delivery publishes to another queue from inside the callback.
    auto s = t->subscribe(q, [&](const Delivery &d) {
        t->publish(echo, d.payload);
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

TEST(Loopback, PublishBatchFillsStatuses) // ABI-11
{
    auto t = make({{"max_queue_length", "2"}});
    const std::string q = queue("batch");
    auto st = t->publish_batch({{q, "a"}, {q, "b"}, {q, "c"}});
    ASSERT_EQ(st.size(), 3u);
    EXPECT_EQ(st[0], TODD_COMMS_OK);
    EXPECT_EQ(st[1], TODD_COMMS_OK);
    EXPECT_EQ(st[2], TODD_COMMS_E_FULL);
}

TEST(Loopback, BoundGivesFullWithReason)
{
    auto t = make({{"max_queue_length", "1"}});
    const std::string q = queue("full");
    t->publish(q, "a");
    try {
        t->publish(q, "b");
        FAIL() << "no error";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_FULL);
        EXPECT_NE(std::string(e.what()).find("max_queue_length"),
                  std::string::npos)
            << e.what();
    }
}

TEST(Loopback, ConfigurationRefusedNamingTheKey) // ABI-1
{
    auto expect_config = [](const Options &o, const std::string &needle) {
        try {
            Transport::create(loopback(), o);
            FAIL() << "accepted";
        } catch (const CommsError &e) {
            EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG);
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
                << e.what();
        }
    };
    expect_config({{"max_queue_length", "-1"}},
                  "max_queue_length"); // refused by the plugin
    expect_config({{"max_queue_length", "many"}},
                  "max_queue_length"); // by the host
    expect_config({{"no_such_key", "1"}}, "no_such_key");
}

TEST(Loopback, LifecycleRules) // ABI-2, HOST-1
{
    auto t = Transport::create(loopback(), {});
    std::atomic<int> connected{0};
    t->on_state([&](LinkState s, int32_t, const std::string &) {
        if (s == LinkState::connected)
            ++connected;
    });
    t->start();
    EXPECT_EQ(t->state(), LinkState::connected);
    EXPECT_EQ(connected, 1);
    // Control calls from inside a handler of the same transport are refused.
    const std::string q = queue("inside");
    std::atomic<int32_t> status{0};
    Inbox in;
    auto s = t->subscribe(q, [&](const Delivery &d) {
        try {
            t->subscribe(queue("nested"),
                         [](const Delivery &) { return Verdict::ack; });
        } catch (const CommsError &e) {
            status = e.status();
        }
        return in(d);
    });
    t->publish(q, "x");
    ASSERT_TRUE(in.wait_for(1));
    EXPECT_EQ(status, TODD_COMMS_E_STATE);
    t->stop();
    try {
        t->start();
        FAIL() << "start after stop accepted";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_STATE);
    }
    // Destroy without stop is safe.
    auto u = make();
    auto su = u->subscribe(queue("nostop"),
                           [](const Delivery &) { return Verdict::ack; });
    su = Subscription();
    u.reset();
}

TEST(Loopback, SubscriptionResetInsideItsOwnHandler)
{
    auto t = make();
    const std::string q = queue("selfreset");
    Subscription s;
    std::atomic<int> calls{0};
    std::mutex m;
    std::condition_variable cv;
    bool ready = false;
    {
        std::unique_lock lock(m);
        s = t->subscribe(q, [&](const Delivery &) {
            std::unique_lock l(m);
            cv.wait(l, [&] { return ready; });
            ++calls;
            s.reset(); // detaches; the plugin-side unsubscribe finishes later
            return Verdict::ack;
        });
        ready = true;
    }
    cv.notify_all();
    t->publish(q, "1");
    t->publish(q, "2");
    // The second message is not consumed by the detached handler: another
    // subscriber gets it.
    Inbox in;
    for (int spin = 0; spin < 1000 && calls == 0; ++spin)
        std::this_thread::sleep_for(5ms);
    auto s2 = t->subscribe(q, in.handler());
    ASSERT_TRUE(in.wait_for(1));
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(in.all()[0].payload, "2");
}

TEST(Loopback, PluginLogLinesGoThroughHostLog)
{
    std::mutex m;
    std::vector<std::string> lines;
    auto prev = todd::log::set_sink(
        [&](todd::log::Level, std::string_view c, std::string_view msg) {
            std::lock_guard lock(m);
            lines.push_back(std::string(c) + ": " + std::string(msg));
        });
    try {
        Transport::create(loopback(), {{"prefetch", "-3"}});
    } catch (const CommsError &) {
    }
    todd::log::set_sink(prev);
    ASSERT_FALSE(lines.empty());
    EXPECT_NE(
        lines.back().find("loopback: create: configuration key 'prefetch'"),
        std::string::npos)
        << lines.back();
}

} // namespace
