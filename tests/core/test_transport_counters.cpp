// SPDX-License-Identifier: Apache-2.0
// core::TransportCounters over the real loopback plugin: what the host
// counts around the plugin's calls and callbacks (publishes accepted and
// refused, one by one and in batches; deliveries and their verdicts, a
// handler that throws, redeliveries; link changes), and the Comms facade's
// refusals (undecodable, oversized) that reach the transport as rejects.
#include "inbox.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <ostream>
#include <stdexcept>
#include <thread>
#include <unistd.h>

using namespace todd::core;
using namespace todd;
using namespace std::chrono_literals;
using todd::test::DeliveryInbox;
using todd::test::Received;

namespace todd::core {
// For gtest's messages.
void PrintTo(const TransportCounters &c, std::ostream *os)
{
    *os << "{published " << c.published << ", publish_failed "
        << c.publish_failed << ", delivered " << c.delivered << ", acked "
        << c.acked << ", requeued " << c.requeued << ", rejected " << c.rejected
        << ", redelivered " << c.redelivered << ", connects " << c.connects
        << ", disconnects " << c.disconnects << "}";
}
} // namespace todd::core

namespace {

std::unique_ptr<Transport> loopback(const Options &o = {})
{
    static auto plugin = PluginRegistry({LOOPBACK_DIR}).load("loopback");
    return Transport::create(plugin, o);
}

/** A name no other test uses: the loopback broker is process-wide. */
std::string unique(const std::string &base)
{
    static std::atomic<int> n{0};
    return base + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

/** Poll the counters (they are bumped after a handler returns, on the
 *  plugin's thread) until pred holds; false after a bounded wait. */
bool counters_reach(const Transport &t,
                    const std::function<bool(const TransportCounters &)> &pred,
                    std::chrono::milliseconds limit = 20s)
{
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred(t.counters())) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

} // namespace

TEST(TransportCounters, ZeroUntilStartThenOneConnect)
{
    auto t = loopback();
    TransportCounters c = t->counters();
    EXPECT_EQ(c.published, 0u);
    EXPECT_EQ(c.publish_failed, 0u);
    EXPECT_EQ(c.delivered, 0u);
    EXPECT_EQ(c.acked + c.requeued + c.rejected + c.redelivered, 0u);
    EXPECT_EQ(c.connects, 0u);
    EXPECT_EQ(c.disconnects, 0u);

    t->start();
    // The loopback link is up when start returns (connecting, connected).
    ASSERT_TRUE(counters_reach(*t, [](const TransportCounters &c) {
        return c.connects >= 1;
    })) << ::testing::PrintToString(t->counters());
    EXPECT_EQ(t->state(), LinkState::connected);
    EXPECT_EQ(t->counters().connects, 1u);
    EXPECT_EQ(t->counters().disconnects, 0u);
    t->start(); // idempotent: no second connect
    EXPECT_EQ(t->counters().connects, 1u);

    // Leaving connected is a disconnect, once.
    t->stop();
    EXPECT_EQ(t->counters().disconnects, 1u);
    EXPECT_EQ(t->counters().connects, 1u);
    t->stop();
    EXPECT_EQ(t->counters().disconnects, 1u);
}

TEST(TransportCounters, PublishesAndEveryVerdict)
{
    auto pub = loopback();
    auto sub = loopback();
    pub->start();
    sub->start();
    const std::string q = unique("counted");
    const int n = 5;
    for (const char *p : {"a", "b", "c", "d", "e"})
        pub->publish(q, p);
    EXPECT_EQ(pub->counters().published, static_cast<uint64_t>(n));
    EXPECT_EQ(pub->counters().publish_failed, 0u);
    // Counted on the instance that did it only.
    EXPECT_EQ(sub->counters().published, 0u);

    // a: ack; b: requeue, then ack when redelivered; c: reject;
    // d: the handler throws (requeued), then ack; e: ack.
    DeliveryInbox in;
    in.verdict = [](const Received &r, size_t) {
        if (r.payload == "b" && !r.redelivered)
            return Verdict::requeue;
        if (r.payload == "c")
            return Verdict::reject;
        if (r.payload == "d" && !r.redelivered)
            throw std::runtime_error("handler failure on purpose");
        return Verdict::ack;
    };
    auto s = sub->subscribe(q, in.handler());
    ASSERT_TRUE(in.wait_for(7)) << in.size() << " deliveries";
    ASSERT_TRUE(counters_reach(*sub, [](const TransportCounters &c) {
        return c.acked + c.requeued + c.rejected >= 7;
    })) << ::testing::PrintToString(sub->counters());
    TransportCounters c = sub->counters();
    EXPECT_EQ(c.delivered, 7u);
    EXPECT_EQ(c.acked, 4u);    // a, b again, d again, e
    EXPECT_EQ(c.requeued, 2u); // b, d (the throw)
    EXPECT_EQ(c.rejected, 1u); // c
    EXPECT_EQ(c.redelivered, 2u);
    EXPECT_EQ(sub->rejected(q), 1u); // the per-destination count agrees
    // The publisher delivered nothing.
    EXPECT_EQ(pub->counters().delivered, 0u);
    EXPECT_EQ(in.count([](const Received &r) { return r.redelivered; }), 2u);

    // A batch counts each message.
    auto st = pub->publish_batch({{q, "f"}, {q, "g"}, {q, "h"}});
    ASSERT_EQ(st.size(), 3u);
    for (int32_t x : st)
        EXPECT_EQ(x, TODD_COMMS_OK);
    EXPECT_EQ(pub->counters().published, static_cast<uint64_t>(n + 3));
    ASSERT_TRUE(counters_reach(*sub, [](const TransportCounters &c) {
        return c.acked >= 7;
    })) << ::testing::PrintToString(sub->counters());
    EXPECT_EQ(sub->counters().delivered, 10u);
}

TEST(TransportCounters, RefusedPublishesAreCountedAsFailed)
{
    // max_queue_length 1: a second message to the same queue is refused.
    auto t = loopback({{"max_queue_length", "1"}});
    t->start();
    const std::string q = unique("full");
    t->publish(q, "1");
    try {
        t->publish(q, "2");
        FAIL() << "the queue bound was not hit";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_FULL) << e.what();
    }
    TransportCounters c = t->counters();
    EXPECT_EQ(c.published, 1u);
    EXPECT_EQ(c.publish_failed, 1u);

    // A batch: two to the full queue fail, one to a fresh queue succeeds.
    const std::string other = unique("free");
    auto st = t->publish_batch({{q, "3"}, {other, "x"}, {q, "4"}});
    ASSERT_EQ(st.size(), 3u);
    EXPECT_EQ(st[0], TODD_COMMS_E_FULL);
    EXPECT_EQ(st[1], TODD_COMMS_OK);
    EXPECT_EQ(st[2], TODD_COMMS_E_FULL);
    c = t->counters();
    EXPECT_EQ(c.published, 2u);
    EXPECT_EQ(c.publish_failed, 3u);

    // A publish after a failure is counted as accepted again.
    t->publish(other + "-2", "y");
    EXPECT_EQ(t->counters().published, 3u);
    EXPECT_EQ(t->counters().publish_failed, 3u);

    // Drain what is left (the broker is process-wide).
    for (const std::string &d : {q, other, other + "-2"}) {
        todd::test::PayloadInbox drain;
        auto s = t->subscribe(d, drain.handler());
        EXPECT_TRUE(drain.wait_for(1)) << d;
    }
}

TEST(TransportCounters, CommsRefusalsAreRejectsAndCountedByReason)
{
    MessageLimits limits;
    limits.max_message_bytes = 64;
    Comms server(loopback());
    Comms agent(loopback(), SendPolicy{}, limits);
    server.start();
    agent.start();
    const std::string uuid = unique("agent");
    server.send_raw(uuid, "not json");
    server.send_raw(uuid, "{\"type\":\"Bogus\"}");
    server.send_raw(uuid, std::string(100, 'x')); // over 64 bytes
    const msg::Task good = msg::KeyValueTask{"k", "v"};
    server.send_task(uuid, good);
    todd::test::Inbox<msg::Task> got;
    auto sub = agent.listen_for_tasks(uuid, [&](const msg::Task &t) {
        got.push(t);
        return Verdict::ack;
    });
    ASSERT_TRUE(got.wait_for(1));
    EXPECT_EQ(got.all(), std::vector<msg::Task>{good});
    EXPECT_EQ(agent.undecodable_rejected(), 2u);
    EXPECT_EQ(agent.oversized_rejected(), 1u);
    const Transport &t = agent.transport();
    ASSERT_TRUE(counters_reach(t, [](const TransportCounters &c) {
        return c.acked >= 1;
    })) << ::testing::PrintToString(t.counters());
    TransportCounters c = t.counters();
    EXPECT_EQ(c.delivered, 4u);
    EXPECT_EQ(c.rejected, 3u);
    EXPECT_EQ(c.acked, 1u);
    EXPECT_EQ(c.requeued, 0u);
    EXPECT_EQ(server.transport().counters().published, 4u);
    EXPECT_EQ(server.undecodable_rejected(), 0u);
}
