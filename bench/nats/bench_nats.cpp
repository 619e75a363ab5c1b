// SPDX-License-Identifier: Apache-2.0
// The NATS plugin (the real libtodd-comms-nats.so through core's Comms and
// Transport) against a raw nats.c loop written here: same server, same run,
// same connection options, stream, subjects, consumers and message headers
// (nats_bench.hpp repeats the plugin's mapping). Each measurement runs on a
// fresh stream and subject prefix, deleted afterwards; pairs alternate which
// side runs first. See docs/benchmarks/nats.md.
//
//   bench-nats [--runs N] [--each N] [--consume N] [--rtt N]
//              [--only each|consume|rtt]
//
// The server: TODD_BENCH_NATS_URL=nats://host:port, else a private one.
// Exit: 0 all goals met, 1 a goal missed (named), 2 an error, 77 no server
// (a failure instead with TODD_REQUIRE_NATS=1).
#include "nats_bench.hpp"

#include "../common/pairs.hpp"

#include <todd/core/comms.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <vector>

using namespace std::chrono_literals;
using namespace benchpairs;
using namespace nbench;
using todd::core::Comms;
using todd::core::Delivery;
using todd::core::Transport;
using todd::core::Verdict;

namespace {

const std::string body(256, 'b'); // what the bytes are does not matter

struct Params {
    int runs = 5;
    int each = 2000;      // publishes, one ack awaited at a time
    int consume = 100000; // messages consumed and acknowledged
    int rtt = 1000;       // round trips
    std::string only;     // one pair: each, consume or rtt
};

[[noreturn]] void fail(const std::string &what)
{
    throw std::runtime_error(what);
}

/** A measurement's fresh stream and subject prefix; the stream (with its
 *  consumers) is deleted when the measurement ends. Declared first, so
 *  that the transports using it stop before. */
struct Scratch {
    Raw &admin;
    std::string stream = fresh_name("NB"), prefix = fresh_name("nb");
    ~Scratch()
    {
        try {
            admin.delete_stream(stream);
        } catch (const std::exception &e) {
            std::fprintf(stderr, "bench-nats: cleanup of %s: %s\n",
                         stream.c_str(), e.what());
        }
    }
};

// ---------------------------------------------------------------------------
// Publishing, each waiting for its JetStream ack (msg/s).

const std::string pub_dest = "bench-pub";

double raw_publish(Raw &admin, const std::string &url, int n)
{
    Scratch sc{admin};
    admin.add_stream(sc.stream, sc.prefix);
    Raw p(url);
    const std::string subject = subject_of(sc.prefix, pub_dest);
    p.publish(sc.stream, subject, body); // the stream's first message
    const double t0 = now_s(), c0 = cpu_now();
    for (int i = 0; i < n; ++i)
        p.publish(sc.stream, subject, body);
    const double end = now_s();
    last_cpu_us = (cpu_now() - c0) * 1e6 / n;
    admin.wait_msgs(sc.stream, uint64_t(n) + 1, 10s); // held, all of them
    return n / (end - t0);
}

double plugin_publish(Raw &admin, const std::string &url, int n)
{
    Scratch sc{admin};
    Comms comms(started_transport(plugin_options(url, sc.stream, sc.prefix)));
    comms.send_raw(pub_dest, body);
    const double t0 = now_s(), c0 = cpu_now();
    for (int i = 0; i < n; ++i)
        comms.send_raw(pub_dest, body);
    const double end = now_s();
    last_cpu_us = (cpu_now() - c0) * 1e6 / n;
    admin.wait_msgs(sc.stream, uint64_t(n) + 1, 10s);
    return n / (end - t0);
}

// ---------------------------------------------------------------------------
// Consuming n held messages, acknowledging each (msg/s, from the first
// message delivered until the work-queue stream holds none).

const std::string consume_dest = "bench-consume";

/** One consume measurement: subscribing to the first message, and the
 *  rate from the first message to the stream's last removal. */
struct ConsumeResult {
    double join_s = 0, rate = 0;
};

/** n messages to consume_dest, as the plugin's send writes them. */
void fill(Raw &admin, const Scratch &sc, int n)
{
    admin.publish_async(sc.stream, subject_of(sc.prefix, consume_dest), body,
                        n);
    admin.wait_msgs(sc.stream, uint64_t(n), 10s);
}

ConsumeResult raw_consume(Raw &admin, const std::string &url, int n)
{
    Scratch sc{admin};
    admin.add_stream(sc.stream, sc.prefix);
    fill(admin, sc, n);
    Raw c(url);
    const double t0 = now_s();
    double first = 0, c0 = 0;
    natsSubscription *sub = c.subscribe(sc.stream, sc.prefix, consume_dest);
    std::unique_ptr<natsSubscription, void (*)(natsSubscription *)> owned(
        sub, natsSubscription_Destroy);
    for (int got = 0; got < n; ++got) {
        natsMsg *m = next_msg(sub, 30s, "raw consume");
        if (got == 0)
            first = now_s(), c0 = cpu_now();
        const bool ok =
            read_like_plugin(m) && natsMsg_GetDataLength(m) == int(body.size());
        natsStatus st = natsMsg_Ack(m, nullptr);
        natsMsg_Destroy(m);
        if (!ok || st != NATS_OK)
            fail("raw consume: a message without metadata, of the wrong "
                 "size, or not acknowledged");
    }
    admin.wait_msgs(sc.stream, 0, 10s);
    const double end = now_s();
    last_cpu_us = (cpu_now() - c0) * 1e6 / (n - 1);
    natsSubscription_Unsubscribe(sub);
    return {first - t0, (n - 1) / (end - first)};
}

ConsumeResult plugin_consume(Raw &admin, const std::string &url, int n)
{
    Scratch sc{admin};
    auto t = started_transport(plugin_options(url, sc.stream, sc.prefix));
    fill(admin, sc, n);
    std::atomic<int> got{0};
    std::atomic<bool> bad{false};
    std::atomic<double> first{0}, c0{0};
    Counter done;
    const double t0 = now_s();
    auto sub = t->subscribe(consume_dest, [&](const Delivery &d) {
        const int k = ++got;
        if (k == 1)
            first = now_s(), c0 = cpu_now();
        if (d.payload.size() != body.size())
            bad = true;
        if (k == n)
            done.bump();
        return Verdict::ack;
    });
    if (!done.wait(1, 60s))
        fail("plugin consume: " + std::to_string(got.load()) + " of " +
             std::to_string(n) + " delivered within 60 s");
    admin.wait_msgs(sc.stream, 0, 10s);
    const double end = now_s();
    last_cpu_us = (cpu_now() - c0) * 1e6 / (n - 1);
    if (bad)
        fail("plugin consume: a body of the wrong size");
    return {first - t0, (n - 1) / (end - first)};
}

// ---------------------------------------------------------------------------
// Round trip: the server publishes a task to an agent's destination, the
// agent answers from inside its delivery, the server receives the answer.
// One in flight; every publish waits for its JetStream ack.

const std::string task_dest = "3f1c2a8e-bench-agent",
                  reply_dest = "agentresponses";

std::vector<double> raw_round_trip(Raw &admin, const std::string &url, int n)
{
    Scratch sc{admin};
    admin.add_stream(sc.stream, sc.prefix);
    const std::string tsubj = subject_of(sc.prefix, task_dest),
                      rsubj = subject_of(sc.prefix, reply_dest);
    Raw server(url), agent(url);
    using SubPtr =
        std::unique_ptr<natsSubscription, void (*)(natsSubscription *)>;
    SubPtr agent_in(agent.subscribe(sc.stream, sc.prefix, task_dest),
                    natsSubscription_Destroy);
    SubPtr server_in(server.subscribe(sc.stream, sc.prefix, reply_dest),
                     natsSubscription_Destroy);
    std::vector<double> us;
    double c0 = 0;
    for (int i = -1; i < n; ++i) { // the first one warms up
        const auto limit = i < 0 ? 30000ms : 10000ms;
        if (i == 0)
            c0 = cpu_now();
        const double t0 = now_s();
        server.publish(sc.stream, tsubj, body);
        natsMsg *task = next_msg(agent_in.get(), limit, "raw round trip task");
        read_like_plugin(task);
        agent.publish(sc.stream, rsubj, body); // inside the delivery
        natsMsg_Ack(task, nullptr);
        natsMsg_Destroy(task);
        natsMsg *reply =
            next_msg(server_in.get(), limit, "raw round trip answer");
        read_like_plugin(reply);
        natsMsg_Ack(reply, nullptr);
        natsMsg_Destroy(reply);
        if (i >= 0)
            us.push_back((now_s() - t0) * 1e6);
    }
    last_cpu_us = (cpu_now() - c0) * 1e6 / n;
    return us;
}

std::vector<double> plugin_round_trip(Raw &admin, const std::string &url, int n)
{
    Scratch sc{admin};
    const auto opts = plugin_options(url, sc.stream, sc.prefix);
    Comms server(started_transport(opts));
    auto agent = started_transport(opts);
    Transport *a = agent.get();
    auto tasks = agent->subscribe(task_dest, [&](const Delivery &) {
        a->publish(reply_dest, body);
        return Verdict::ack;
    });
    Counter replies;
    auto answers =
        server.transport().subscribe(reply_dest, [&](const Delivery &) {
            replies.bump();
            return Verdict::ack;
        });
    std::vector<double> us;
    double c0 = 0;
    for (int i = -1; i < n; ++i) {
        if (i == 0)
            c0 = cpu_now();
        const double t0 = now_s();
        server.send_raw(task_dest, body);
        if (!replies.wait(uint64_t(i + 2), i < 0 ? 30000ms : 10000ms))
            fail("plugin round trip: no answer");
        if (i >= 0)
            us.push_back((now_s() - t0) * 1e6);
    }
    last_cpu_us = (cpu_now() - c0) * 1e6 / n;
    tasks.reset();
    answers.reset();
    return us;
}

// ---------------------------------------------------------------------------
// Runs, figures and goals.

int usage()
{
    std::fprintf(stderr, "usage: bench-nats [--runs N] [--each N] "
                         "[--consume N] [--rtt N] "
                         "[--only each|consume|rtt]\n");
    return 2;
}

/** Parse argv into p; a status to exit with when it is wrong. */
std::optional<int> parse(int argc, char **argv, Params &p)
{
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--only" && i + 1 < argc) {
            p.only = argv[++i];
            if (p.only != "each" && p.only != "consume" && p.only != "rtt") {
                std::fprintf(stderr,
                             "bench-nats: --only takes each, consume or rtt\n");
                return 2;
            }
            continue;
        }
        int *field = a == "--runs"      ? &p.runs
                     : a == "--each"    ? &p.each
                     : a == "--consume" ? &p.consume
                     : a == "--rtt"     ? &p.rtt
                                        : nullptr;
        if (field == nullptr || i + 1 >= argc)
            return usage();
        char *end = nullptr;
        const long least = field == &p.consume ? 2 : 1;
        long v = std::strtol(argv[++i], &end, 10);
        if (*end != '\0' || v < least || v > 10000000) {
            std::fprintf(stderr, "bench-nats: %s needs a count >= %ld\n",
                         a.c_str(), least);
            return 2;
        }
        *field = int(v);
    }
    return std::nullopt;
}

} // namespace

int main(int argc, char **argv)
{
    Params p;
    if (auto st = parse(argc, argv, p))
        return *st;
    int status = 0;
    auto server = server_for("bench-nats", status);
    if (!server)
        return status;
    const std::string url = server->url;
    std::printf("bench-nats: server %s, %d runs per pair, load %s\n",
                url.c_str(), p.runs, loadavg().c_str());
    std::fflush(stdout);
    std::vector<Row> rows;
    std::vector<std::vector<double>> rtt_raw, rtt_plugin;
    try {
        Raw admin(url);
        // The first streams of a fresh server, and this process's first
        // plugin load, cost more whichever side comes first.
        raw_publish(admin, url, 200);
        plugin_publish(admin, url, 200);
        raw_consume(admin, url, 2000);
        plugin_consume(admin, url, 2000);
        auto want = [&](const char *k) {
            return p.only.empty() || p.only == k;
        };
        if (want("each")) {
            Row r{"publish, wait each ack (msg/s)", "%.0f", true};
            pair_runs(
                p.runs, "publish each",
                [&] { return raw_publish(admin, url, p.each); },
                [&] { return plugin_publish(admin, url, p.each); }, r);
            rows.push_back(r);
        }
        if (want("consume")) {
            Row r{"consume + ack (msg/s)", "%.0f", true},
                join{"consume: subscribe to 1st (ms)", "%.1f"};
            pair_runs(
                p.runs, "consume + ack",
                [&] {
                    auto c = raw_consume(admin, url, p.consume);
                    join.raw.push_back(c.join_s * 1e3);
                    return c.rate;
                },
                [&] {
                    auto c = plugin_consume(admin, url, p.consume);
                    join.plugin.push_back(c.join_s * 1e3);
                    return c.rate;
                },
                r);
            rows.push_back(r);
            rows.push_back(join);
        }
        if (want("rtt")) {
            Row p50{"round trip p50 (us)", "%.0f"},
                p99{"round trip p99 (us)", "%.0f"};
            pair_runs(
                p.runs, "round trip p99 (us)",
                [&] {
                    rtt_raw.push_back(raw_round_trip(admin, url, p.rtt));
                    p50.raw.push_back(percentile(rtt_raw.back(), 0.5));
                    return percentile(rtt_raw.back(), 0.99);
                },
                [&] {
                    rtt_plugin.push_back(plugin_round_trip(admin, url, p.rtt));
                    p50.plugin.push_back(percentile(rtt_plugin.back(), 0.5));
                    return percentile(rtt_plugin.back(), 0.99);
                },
                p99);
            p50.raw_cpu = p99.raw_cpu;
            p50.plugin_cpu = p99.plugin_cpu;
            p99.raw_cpu.clear(); // one CPU row for the pair
            rows.push_back(p50);
            rows.push_back(p99);
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench-nats: %s\n", e.what());
        return 2;
    }

    std::printf("\n%-34s %-30s %-30s %8s\n", "pair (median (min..max))", "raw",
                "plugin", "ratio");
    for (const auto &r : rows)
        std::printf("%-34s %-30s %-30s %8.2f\n", r.name.c_str(),
                    spread(r.raw, r.fmt).c_str(),
                    spread(r.plugin, r.fmt).c_str(),
                    median(r.plugin) / median(r.raw));
    std::printf("\n%-34s %-30s %-30s %8s\n", "CPU us per item (this process)",
                "raw", "plugin", "ratio");
    for (const auto &r : rows)
        if (!r.raw_cpu.empty() && !r.plugin_cpu.empty())
            std::printf("%-34s %-30s %-30s %8.2f\n",
                        r.name.rfind("round trip", 0) == 0 ? "round trip"
                                                           : r.name.c_str(),
                        spread(r.raw_cpu, "%.1f").c_str(),
                        spread(r.plugin_cpu, "%.1f").c_str(),
                        median(r.plugin_cpu) / median(r.raw_cpu));
    std::vector<double> all_raw, all_plugin;
    for (auto &v : rtt_raw)
        all_raw.insert(all_raw.end(), v.begin(), v.end());
    for (auto &v : rtt_plugin)
        all_plugin.insert(all_plugin.end(), v.begin(), v.end());
    const double raw99 = percentile(all_raw, 0.99),
                 plug99 = percentile(all_plugin, 0.99);
    if (!all_raw.empty())
        std::printf("round trip, all %zu + %zu samples: raw p50 %.0f us p99 "
                    "%.0f us, plugin p50 %.0f us p99 %.0f us\n",
                    all_raw.size(), all_plugin.size(), percentile(all_raw, 0.5),
                    raw99, percentile(all_plugin, 0.5), plug99);
    if (!all_raw.empty()) {
        // Where the tails part: a shift of the whole distribution, or a few
        // late samples (a thread waiting for a CPU).
        std::printf(
            "round trip tail (us):      p90    p95    p99  p99.9    max\n");
        for (auto [side, v] :
             {std::pair{"raw", &all_raw}, {"plugin", &all_plugin}})
            std::printf("  %-22s %6.0f %6.0f %6.0f %6.0f %6.0f\n", side,
                        percentile(*v, 0.9), percentile(*v, 0.95),
                        percentile(*v, 0.99), percentile(*v, 0.999),
                        percentile(*v, 1.0));
    }

    std::vector<std::string> missed;
    std::printf("\ngoals (load %s):\n", loadavg().c_str());
    for (const auto &r : rows) {
        if (!r.goal)
            continue;
        const double ratio = median(r.plugin) / median(r.raw);
        const bool met = ratio >= 0.9;
        std::printf("  %-34s plugin/raw %.2f, goal >= 0.90: %s\n",
                    r.name.c_str(), ratio, met ? "met" : "MISSED");
        if (!met)
            missed.push_back(r.name);
    }
    if (!all_raw.empty()) {
        const double ratio = plug99 / raw99;
        std::printf("  %-34s plugin/raw %.2f, goal <= 1.50: %s\n",
                    "round trip p99 (all samples)", ratio,
                    ratio <= 1.5 ? "met" : "MISSED");
        if (ratio > 1.5)
            missed.push_back("round trip p99");
    }
    for (const auto &m : missed)
        std::printf("goal missed: %s\n", m.c_str());
    return missed.empty() ? 0 : 1;
}
