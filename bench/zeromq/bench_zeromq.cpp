// SPDX-License-Identifier: Apache-2.0
// The embedded transport next to RabbitMQ's, same run, same 256-byte
// messages, both through core's Transport:
//   Throughput: publish_batch of 1000 messages from one instance, consumed
//     (acked, prefetch 256) by another; an iteration ends when all are
//     consumed.
//   RoundTrip: one message in flight; the responder publishes the reply
//     from inside its deliver; p50 / p99 of the whole round trip.
// zeromq: publisher/requester is an agent-role instance over TCP loopback,
// the consumer/responder the server-role instance (the ToDD task and
// response path). rabbitmq: two instances on a private rabbitmq-server
// started here (skipped, with the reason, when it cannot be).
// Two floors in the same run: a bare libzmq echo, and a thread hand-off.
// Prints the ratios against RabbitMQ at the end; see docs/benchmarks/zeromq.md.
#include <todd/core/log.hpp>
#include <todd/core/transport.hpp>

#include <rabbitmq_broker.hpp>

#include <benchmark/benchmark.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace todd::core;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kBatch = 1000;
constexpr uint32_t kPrefetch = 256;
const std::string kPayload = [] {
    std::string s =
        "{\"Type\":\"AgentResponse\",\"Uuid\":\"bench\",\"Data\":\"";
    while (s.size() < 254)
        s += char('a' + s.size() % 26);
    return s + "\"}";
}();

/** A publisher ("agent") and a consumer/responder ("server"). */
struct Pair {
    std::unique_ptr<Transport> b, a; // a (the agent) is destroyed first
};

std::map<std::string, Pair> pairs;
std::map<std::string, std::string> missing; // transport -> why skipped
std::unique_ptr<todd::test::RabbitmqBroker> broker;

struct Result {
    double msgs_per_s = 0, p50_us = 0, p99_us = 0;
};
std::map<std::string, Result> results;

/** p50 / p99 of a round trip's samples, as counters and for the summary. */
void report_latency(benchmark::State &st, const std::string &name,
                    std::vector<double> &us)
{
    if (us.empty())
        return;
    std::sort(us.begin(), us.end());
    auto pct = [&](double q) {
        return us[std::min(us.size() - 1, size_t(q * double(us.size())))];
    };
    st.counters["p50_us"] = pct(0.50);
    st.counters["p99_us"] = pct(0.99);
    results[name].p50_us = pct(0.50);
    results[name].p99_us = pct(0.99);
}

std::string unique_queue(const std::string &base)
{
    static std::atomic<int> n{0};
    return "bench-" + base + "-" + std::to_string(n++);
}

void setup_zeromq()
{
    auto plugin = PluginRegistry({ZEROMQ_DIR}).load("zeromq");
    std::string ep =
        "tcp://127.0.0.1:" + std::to_string(todd::test::free_tcp_port());
    Pair p;
    p.b = Transport::create(plugin, {{"role", "server"}, {"endpoint", ep}});
    p.b->start();
    p.a = Transport::create(plugin, {{"role", "agent"}, {"endpoint", ep}});
    p.a->start();
    pairs["zeromq"] = std::move(p);
}

void setup_rabbitmq()
{
    std::shared_ptr<const Plugin> plugin;
    try {
        plugin = PluginRegistry({RABBITMQ_DIR}).load("rabbitmq");
    } catch (const std::exception &e) {
        missing["rabbitmq"] = std::string("no rabbitmq plugin: ") + e.what();
        return;
    }
    if (auto why = todd::test::RabbitmqBroker::unavailable()) {
        missing["rabbitmq"] = *why;
        return;
    }
    broker = std::make_unique<todd::test::RabbitmqBroker>();
    Options o{{"host", broker->host()},
              {"port", std::to_string(broker->port())}};
    Pair p;
    p.b = Transport::create(plugin, o);
    p.b->start();
    p.a = Transport::create(plugin, o);
    p.a->start();
    pairs["rabbitmq"] = std::move(p);
}

Pair *pair_for(benchmark::State &st, const std::string &name)
{
    auto it = pairs.find(name);
    if (it == pairs.end()) {
        st.SkipWithError(("skipped: " + missing[name]).c_str());
        return nullptr;
    }
    return &it->second;
}

void Throughput(benchmark::State &st, const std::string &name)
{
    Pair *p = pair_for(st, name);
    if (p == nullptr)
        return;
    const std::string q = unique_queue("tp");
    std::mutex m;
    std::condition_variable cv;
    int64_t got = 0;
    auto sub = p->b->subscribe(
        q,
        [&](const Delivery &) {
            std::lock_guard lock(m);
            if (++got % kBatch == 0)
                cv.notify_all();
            return Verdict::ack;
        },
        kPrefetch);
    std::vector<std::pair<std::string, std::string>> batch(kBatch,
                                                           {q, kPayload});
    int64_t expected = 0;
    auto t0 = Clock::now();
    for (auto _ : st) {
        for (int32_t s : p->a->publish_batch(batch))
            if (s != TODD_COMMS_OK) {
                st.SkipWithError("publish_batch failed");
                return;
            }
        expected += kBatch;
        std::unique_lock lock(m);
        if (!cv.wait_for(lock, 60s, [&] { return got >= expected; })) {
            st.SkipWithError("messages not consumed within 60 s");
            return;
        }
    }
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    st.SetItemsProcessed(expected);
    results[name].msgs_per_s = expected / secs;
    st.counters["msg_per_s"] = expected / secs;
}

void RoundTrip(benchmark::State &st, const std::string &name)
{
    Pair *p = pair_for(st, name);
    if (p == nullptr)
        return;
    const std::string ping = unique_queue("ping"), pong = unique_queue("pong");
    Transport *b = p->b.get();
    auto responder = b->subscribe(ping, [&](const Delivery &d) {
        b->publish(pong, d.payload);
        return Verdict::ack;
    });
    std::mutex m;
    std::condition_variable cv;
    int64_t got = 0;
    auto requester = p->a->subscribe(pong, [&](const Delivery &) {
        std::lock_guard lock(m);
        ++got;
        cv.notify_all();
        return Verdict::ack;
    });
    // Warm up: both subscriptions registered and connections hot.
    p->a->publish(ping, kPayload);
    {
        std::unique_lock lock(m);
        if (!cv.wait_for(lock, 30s, [&] { return got >= 1; })) {
            st.SkipWithError("no reply within 30 s");
            return;
        }
    }
    std::vector<double> us;
    us.reserve(100000);
    int64_t expected = 1;
    for (auto _ : st) {
        auto t0 = Clock::now();
        p->a->publish(ping, kPayload);
        ++expected;
        std::unique_lock lock(m);
        if (!cv.wait_for(lock, 30s, [&] { return got >= expected; })) {
            st.SkipWithError("no reply within 30 s");
            return;
        }
        us.push_back(
            std::chrono::duration<double, std::micro>(Clock::now() - t0)
                .count());
    }
    report_latency(st, name, us);
}

/**
 * The machine's floor, same run: a bare libzmq DEALER -> ROUTER echo over TCP
 * loopback (an echo thread and the requester), no queues, no confirms.
 */
void RoundTripFloor(benchmark::State &st)
{
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    void *dealer = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
    std::string ep =
        "tcp://127.0.0.1:" + std::to_string(todd::test::free_tcp_port());
    zmq_bind(router, ep.c_str());
    zmq_connect(dealer, ep.c_str());
    std::thread echo([router] {
        for (;;) {
            zmq_msg_t id, body;
            zmq_msg_init(&id);
            zmq_msg_init(&body);
            if (zmq_msg_recv(&id, router, 0) < 0 ||
                zmq_msg_recv(&body, router, 0) < 0)
                return; // context terminated
            bool quit = zmq_msg_size(&body) == 0;
            zmq_msg_send(&id, router, ZMQ_SNDMORE);
            zmq_msg_send(&body, router, 0);
            if (quit)
                return;
        }
    });
    std::vector<double> us;
    char buf[512];
    for (auto _ : st) {
        auto t0 = Clock::now();
        zmq_send(dealer, kPayload.data(), kPayload.size(), 0);
        zmq_recv(dealer, buf, sizeof buf, 0);
        us.push_back(
            std::chrono::duration<double, std::micro>(Clock::now() - t0)
                .count());
    }
    zmq_send(dealer, "", 0, 0);
    zmq_recv(dealer, buf, sizeof buf, 0);
    echo.join();
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
    report_latency(st, "zmq-floor", us);
}

/**
 * What a thread hand-off costs on this machine, same run: two threads pass
 * a token back and forth through a condition variable (two wake-ups per
 * exchange). A transport's round trip is a chain of such wake-ups.
 */
void RoundTripThreadWake(benchmark::State &st)
{
    std::mutex m;
    std::condition_variable cv;
    int turn = 0; // 1: the echo thread's, 0: ours, -1: stop
    std::thread echo([&] {
        std::unique_lock lock(m);
        for (;;) {
            cv.wait(lock, [&] { return turn != 0; });
            if (turn < 0)
                return;
            turn = 0;
            cv.notify_all();
        }
    });
    std::vector<double> us;
    for (auto _ : st) {
        auto t0 = Clock::now();
        {
            std::unique_lock lock(m);
            turn = 1;
            cv.notify_all();
            cv.wait(lock, [&] { return turn == 0; });
        }
        us.push_back(
            std::chrono::duration<double, std::micro>(Clock::now() - t0)
                .count());
    }
    {
        std::lock_guard lock(m);
        turn = -1;
    }
    cv.notify_all();
    echo.join();
    report_latency(st, "thread-wake", us);
}

void summary()
{
    std::printf("\n%-11s %14s %10s %10s\n", "transport", "msg/s", "p50 us",
                "p99 us");
    for (auto &[name, r] : results)
        std::printf("%-11s %14.0f %10.1f %10.1f\n", name.c_str(), r.msgs_per_s,
                    r.p50_us, r.p99_us);
    for (auto &[name, why] : missing)
        std::printf("%-11s skipped: %s\n", name.c_str(), why.c_str());
    auto z = results.find("zeromq"), r = results.find("rabbitmq");
    if (z != results.end() && r != results.end() && r->second.msgs_per_s > 0)
        std::printf("\nthroughput zeromq / rabbitmq: %.1fx (goal >= 5x)\n"
                    "round trip p99 zeromq / rabbitmq: %.2f\n",
                    z->second.msgs_per_s / r->second.msgs_per_s,
                    r->second.p99_us > 0 ? z->second.p99_us / r->second.p99_us
                                         : 0.0);
    if (z != results.end())
        std::printf("round trip p99 zeromq: %.1f us (goal < 200 us)\n",
                    z->second.p99_us);
}

} // namespace

int main(int argc, char **argv)
{
    todd::log::set_level(todd::log::Level::warn);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    try {
        setup_zeromq();
        setup_rabbitmq();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench-zeromq: setup failed: %s\n", e.what());
        return 1;
    }
    for (const char *name : {"zeromq", "rabbitmq"}) {
        std::string n = name;
        benchmark::RegisterBenchmark(
            ("Throughput/" + n).c_str(),
            [n](benchmark::State &st) { Throughput(st, n); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->MinTime(2.0);
        benchmark::RegisterBenchmark(
            ("RoundTrip/" + n).c_str(),
            [n](benchmark::State &st) { RoundTrip(st, n); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime()
            ->MinTime(2.0);
    }
    benchmark::RegisterBenchmark("RoundTrip/zmq-floor", RoundTripFloor)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime()
        ->MinTime(2.0);
    benchmark::RegisterBenchmark("RoundTrip/thread-wake", RoundTripThreadWake)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime()
        ->MinTime(1.0);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    summary();
    pairs.clear(); // transports before the broker
    broker.reset();
    return 0;
}
