// SPDX-License-Identifier: Apache-2.0
// The Kafka plugin (the real libtodd-comms-kafka.so through core's Comms
// and Transport) against a raw librdkafka loop written here: same broker,
// same run, same librdkafka settings (kafka_bench.hpp's raw_properties),
// same records (key, headers, 256-byte body), same topic and partition.
// Each measurement starts on topics of a fresh prefix; pairs alternate
// which side runs first. See docs/benchmarks/kafka.md.
//
//   bench-kafka [--runs N] [--each N] [--batches N] [--consume N]
//               [--rtt N] [--only each|batch|consume|rtt]
//
// The broker: TODD_BENCH_KAFKA_BOOTSTRAP=host:port, else a private one.
// TODD_BENCH_KAFKA_DEBUG=<librdkafka debug contexts> traces every handle.
// Exit: 0 all goals met, 1 a goal missed (named), 2 an error, 77 no broker
// (a failure instead with TODD_REQUIRE_KAFKA=1).
#include "kafka_bench.hpp"

#include "../common/pairs.hpp"

#include <todd/core/comms.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using namespace benchpairs;
using namespace kbench;
using todd::core::Comms;
using todd::core::Delivery;
using todd::core::Transport;
using todd::core::Verdict;

namespace {

const std::string body(256, 'b'); // what the bytes are does not matter

struct Params {
    int runs = 5;
    int each = 500;       // publishes, one report awaited at a time
    int batches = 200;    // batches of 100
    int consume = 200000; // messages consumed and committed
    int rtt = 300;        // round trips
    std::string only;     // one pair: each, batch, consume or rtt
};

[[noreturn]] void fail(const std::string &what)
{
    throw std::runtime_error(what);
}

/** Topics and groups of one measurement, removed when it ends. */
struct Scratch {
    rd_kafka_t *admin;
    std::string prefix;
    std::vector<std::string> topics, groups;
    ~Scratch()
    {
        try {
            if (!groups.empty())
                delete_groups(admin, groups);
            if (!topics.empty())
                delete_topics(admin, topics);
        } catch (const std::exception &e) {
            std::fprintf(stderr, "bench-kafka: cleanup of %s: %s\n",
                         prefix.c_str(), e.what());
        }
    }
};

/** The next message of a raw consumer (skips partition EOF), within limit. */
rd_kafka_message_t *next_message(rd_kafka_t *c, std::chrono::milliseconds limit)
{
    const auto until = Clock::now() + limit;
    while (Clock::now() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m == nullptr)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
            return m;
        std::string why = rd_kafka_message_errstr(m);
        bool eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        rd_kafka_message_destroy(m);
        if (!eof)
            fail("raw consume: " + why);
    }
    fail("raw consume: nothing within " + std::to_string(limit.count()) +
         " ms");
}

// ---------------------------------------------------------------------------
// Publishing with delivery reports (msg/s, until every report is in).

double raw_publish(rd_kafka_t *admin, const std::string &bs, int n, int batch)
{
    Scratch sc{admin, fresh_prefix("kbr"), {}, {}};
    const std::string dest = "bench-pub", topic = topic_of(sc.prefix, dest);
    const int32_t part = home_of(dest);
    sc.topics = {topic};
    create_topics(admin, sc.topics, kPartitions);
    RawProducer p(bs);
    p.produce(topic, part, dest, body); // metadata, producer id
    p.wait(p.sent);
    const double t0 = now_s(), c0 = cpu_now();
    for (int i = 0; i < n; ++i) {
        for (int k = 0; k < batch; ++k)
            p.produce(topic, part, dest, body);
        p.wait(p.sent);
    }
    last_cpu_us = (cpu_now() - c0) * 1e6 / (double(n) * batch);
    return double(n) * batch / (now_s() - t0);
}

double plugin_publish_each(rd_kafka_t *admin, const std::string &bs, int n)
{
    Scratch sc{admin, fresh_prefix("kbp"), {}, {}};
    sc.topics = plugin_topics(sc.prefix);
    Comms comms(started_transport(plugin_options(bs, sc.prefix)));
    const std::string dest = "bench-pub";
    comms.send_raw(dest, body); // the route, the producer id
    const double t0 = now_s(), c0 = cpu_now();
    for (int i = 0; i < n; ++i)
        comms.send_raw(dest, body);
    last_cpu_us = (cpu_now() - c0) * 1e6 / n;
    return n / (now_s() - t0);
}

double plugin_publish_batch(rd_kafka_t *admin, const std::string &bs, int n)
{
    Scratch sc{admin, fresh_prefix("kbp"), {}, {}};
    sc.topics = plugin_topics(sc.prefix);
    auto t = started_transport(plugin_options(bs, sc.prefix));
    const std::string dest = "bench-pub";
    std::vector<std::pair<std::string, std::string>> batch(100, {dest, body});
    t->publish(dest, body);
    const double t0 = now_s(), c0 = cpu_now();
    for (int i = 0; i < n; ++i)
        for (int32_t st : t->publish_batch(batch))
            if (st != TODD_COMMS_OK)
                fail("publish_batch: status " + std::to_string(st));
    last_cpu_us = (cpu_now() - c0) * 1e6 / (n * 100.0);
    return n * 100.0 / (now_s() - t0);
}

// ---------------------------------------------------------------------------
// Consuming n held messages with a commit after processing (msg/s, from
// subscribing until the group's committed offset is the end).

const std::string consume_dest = "bench-consume";

void fill(const std::string &bs, const std::string &prefix, int n)
{
    RawProducer p(bs);
    const std::string topic = topic_of(prefix, consume_dest);
    for (int i = 0; i < n; ++i)
        p.produce(topic, home_of(consume_dest), consume_dest, body);
    p.wait(p.sent);
}

/** One consume measurement: the group's join (subscribe to the first
 *  message) and the rate from the first message to the final commit. */
struct ConsumeResult {
    double join_s = 0, rate = 0;
};

/** What the plugin reads of each record besides the body (its key, and
 *  the headers when there are any): false when it is another
 *  destination's. */
bool read_headers(const rd_kafka_message_t *m)
{
    if (m->key_len != consume_dest.size() ||
        std::memcmp(m->key, consume_dest.data(), m->key_len) != 0)
        return false;
    rd_kafka_headers_t *hs = nullptr;
    if (rd_kafka_message_headers(m, &hs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return true;
    std::string ttl, ct;
    for (auto [name, out] :
         {std::pair<const char *, std::string *>{"todd-ttl-ms", &ttl},
          {"content-type", &ct}}) {
        const void *v = nullptr;
        size_t len = 0;
        if (rd_kafka_header_get_last(hs, name, &v, &len) ==
            RD_KAFKA_RESP_ERR_NO_ERROR)
            out->assign(static_cast<const char *>(v), len);
    }
    return true;
}

ConsumeResult raw_consume(rd_kafka_t *admin, const std::string &bs, int n,
                          bool headers = false)
{
    Scratch sc{admin, fresh_prefix("kbr"), {}, {}};
    const std::string topic = topic_of(sc.prefix, consume_dest),
                      group = group_of(sc.prefix, consume_dest);
    sc.topics = {topic};
    sc.groups = {group};
    create_topics(admin, sc.topics, kPartitions);
    fill(bs, sc.prefix, n);
    const double t0 = now_s();
    double first = 0, c0 = 0;
    Handle c = raw_consumer(bs, group, topic);
    OffsetStore store(c.get(), topic);
    for (int got = 0; got < n; ++got) {
        rd_kafka_message_t *m = next_message(c.get(), 30s);
        if (got == 0)
            first = now_s(), c0 = cpu_now();
        if (m->len != body.size() || (headers && !read_headers(m)))
            fail("raw consume: a body of " + std::to_string(m->len) +
                 " bytes, or another destination's record");
        store(m);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_resp_err_t e = rd_kafka_commit(c.get(), nullptr, 0);
    // NO_OFFSET: the auto-commit had committed it all already.
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        fail(std::string("raw commit: ") + rd_kafka_err2str(e));
    const double end = now_s();
    last_cpu_us = (cpu_now() - c0) * 1e6 / (n - 1);
    if (committed(c.get(), topic, home_of(consume_dest)) != n)
        fail("raw consume: the committed offset is not the end");
    return {first - t0, (n - 1) / (end - first)};
}

ConsumeResult plugin_consume(rd_kafka_t *admin, const std::string &bs, int n)
{
    Scratch sc{admin, fresh_prefix("kbp"), {}, {}};
    sc.topics = plugin_topics(sc.prefix);
    const std::string topic = topic_of(sc.prefix, consume_dest),
                      group = group_of(sc.prefix, consume_dest);
    sc.groups = {group};
    auto t = started_transport(plugin_options(bs, sc.prefix));
    fill(bs, sc.prefix, n);
    // A handle of the group that never joins it: it reads what the
    // subscription committed.
    Handle reader =
        make_handle(RD_KAFKA_CONSUMER, raw_properties(bs, true, group));
    committed(reader.get(), topic, home_of(consume_dest)); // coordinator
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
    const auto limit = Clock::now() + 10s;
    while (committed(reader.get(), topic, home_of(consume_dest)) < n) {
        if (Clock::now() > limit)
            fail("plugin consume: the offsets were not committed within 10 s");
        std::this_thread::sleep_for(1ms); // paces the OffsetFetch requests
    }
    const double end = now_s();
    last_cpu_us = (cpu_now() - c0) * 1e6 / (n - 1);
    if (bad)
        fail("plugin consume: a body of the wrong size");
    return {first - t0, (n - 1) / (end - first)};
}

// ---------------------------------------------------------------------------
// Round trip: the server publishes a task to an agent's destination, the
// agent answers from inside its delivery, the server receives the answer.
// One in flight; every publish waits for its delivery report.

const std::string task_dest = "3f1c2a8e-bench-agent",
                  reply_dest = "agentresponses";

std::vector<double> raw_round_trip(rd_kafka_t *admin, const std::string &bs,
                                   int n)
{
    Scratch sc{admin, fresh_prefix("kbr"), {}, {}};
    const std::string ttopic = topic_of(sc.prefix, task_dest),
                      rtopic = topic_of(sc.prefix, reply_dest);
    sc.topics = {ttopic, rtopic};
    sc.groups = {group_of(sc.prefix, task_dest),
                 group_of(sc.prefix, reply_dest)};
    create_topics(admin, sc.topics, kPartitions);
    RawProducer server(bs), agent(bs);
    Handle agent_in = raw_consumer(bs, sc.groups[0], ttopic);
    Handle server_in = raw_consumer(bs, sc.groups[1], rtopic);
    OffsetStore agent_store(agent_in.get(), ttopic),
        server_store(server_in.get(), rtopic);
    std::vector<double> us;
    double c0 = 0;
    for (int i = -1; i < n; ++i) { // the first one warms up (group joins)
        const auto limit = i < 0 ? 30000ms : 10000ms;
        if (i == 0)
            c0 = cpu_now();
        const double t0 = now_s();
        server.produce(ttopic, home_of(task_dest), task_dest, body);
        server.wait(server.sent);
        rd_kafka_message_t *task = next_message(agent_in.get(), limit);
        agent.produce(rtopic, home_of(reply_dest), reply_dest, body);
        agent.wait(agent.sent);
        agent_store(task);
        rd_kafka_message_destroy(task);
        rd_kafka_message_t *reply = next_message(server_in.get(), limit);
        server_store(reply);
        rd_kafka_message_destroy(reply);
        if (i >= 0)
            us.push_back((now_s() - t0) * 1e6);
    }
    last_cpu_us = (cpu_now() - c0) * 1e6 / n;
    return us;
}

std::vector<double> plugin_round_trip(rd_kafka_t *admin, const std::string &bs,
                                      int n)
{
    Scratch sc{admin, fresh_prefix("kbp"), {}, {}};
    sc.topics = plugin_topics(sc.prefix);
    sc.groups = {group_of(sc.prefix, task_dest),
                 group_of(sc.prefix, reply_dest)};
    auto opts = plugin_options(bs, sc.prefix);
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
    std::fprintf(stderr, "usage: bench-kafka [--runs N] [--each N] "
                         "[--batches N] [--consume N] [--rtt N] "
                         "[--only each|batch|consume|rtt]\n");
    return 2;
}

} // namespace

int main(int argc, char **argv)
{
    Params p;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--only" && i + 1 < argc) {
            p.only = argv[++i];
            if (p.only != "each" && p.only != "batch" && p.only != "consume" &&
                p.only != "rtt") {
                std::fprintf(stderr, "bench-kafka: --only takes each, batch, "
                                     "consume or rtt\n");
                return 2;
            }
            continue;
        }
        int *field = a == "--runs"      ? &p.runs
                     : a == "--each"    ? &p.each
                     : a == "--batches" ? &p.batches
                     : a == "--consume" ? &p.consume
                     : a == "--rtt"     ? &p.rtt
                                        : nullptr;
        if (field == nullptr || i + 1 >= argc)
            return usage();
        char *end = nullptr;
        long v = std::strtol(argv[++i], &end, 10);
        if (*end != '\0' || v < 1 || v > 10000000) {
            std::fprintf(stderr, "bench-kafka: %s needs a count >= 1\n",
                         a.c_str());
            return 2;
        }
        *field = int(v);
    }
    int status = 0;
    auto broker = broker_for("bench-kafka", status);
    if (!broker)
        return status;
    const std::string bs = broker->bootstrap;
    std::printf("bench-kafka: broker %s, %d runs per pair, load %s\n",
                bs.c_str(), p.runs, loadavg().c_str());
    std::fflush(stdout);
    std::vector<Row> rows;
    std::vector<std::vector<double>> rtt_raw, rtt_plugin;
    try {
        Handle admin = admin_handle(bs);
        rd_kafka_t *ad = admin.get();
        // A fresh broker's JVM is still compiling its hot paths: the first
        // measurement would be slower whichever side it is. Warm it up.
        raw_publish(ad, bs, 200, 1);
        raw_publish(ad, bs, 100, 100);
        plugin_publish_batch(ad, bs, 20);
        auto want = [&](const char *k) {
            return p.only.empty() || p.only == k;
        };
        if (want("each")) {
            Row r{"publish, wait each (msg/s)", "%.0f", true};
            pair_runs(
                p.runs, "publish each",
                [&] { return raw_publish(ad, bs, p.each, 1); },
                [&] { return plugin_publish_each(ad, bs, p.each); }, r);
            rows.push_back(r);
        }
        if (want("batch")) {
            Row r{"publish, batches of 100 (msg/s)", "%.0f", true};
            pair_runs(
                p.runs, "publish batch 100",
                [&] { return raw_publish(ad, bs, p.batches, 100); },
                [&] { return plugin_publish_batch(ad, bs, p.batches); }, r);
            rows.push_back(r);
        }
        if (want("consume")) {
            Row r{"consume + commit (msg/s)", "%.0f", true},
                join{"consume: subscribe to 1st (ms)", "%.0f"};
            pair_runs(
                p.runs, "consume + commit",
                [&] {
                    auto c = raw_consume(ad, bs, p.consume);
                    join.raw.push_back(c.join_s * 1e3);
                    return c.rate;
                },
                [&] {
                    auto c = plugin_consume(ad, bs, p.consume);
                    join.plugin.push_back(c.join_s * 1e3);
                    return c.rate;
                },
                r);
            rows.push_back(r);
            rows.push_back(join);
            // The plugin must read each record's headers (destination,
            // time-to-live, content type): the same raw loop doing so
            // shows what the rest of the plugin and core cost.
            Row h{"  raw reading the headers too", "%.0f"};
            for (int k = 0; k < p.runs; ++k) {
                h.raw.push_back(raw_consume(ad, bs, p.consume, true).rate);
                h.raw_cpu.push_back(last_cpu_us);
                std::fprintf(stderr, "  %-22s run %d %-6s %.0f\n",
                             "consume + headers", k + 1, "raw", h.raw.back());
            }
            h.plugin = r.plugin;
            h.plugin_cpu = r.plugin_cpu;
            rows.push_back(h);
        }
        if (want("rtt")) {
            Row p50{"round trip p50 (us)", "%.0f"},
                p99{"round trip p99 (us)", "%.0f"};
            pair_runs(
                p.runs, "round trip p99 (us)",
                [&] {
                    rtt_raw.push_back(raw_round_trip(ad, bs, p.rtt));
                    p50.raw.push_back(percentile(rtt_raw.back(), 0.5));
                    return percentile(rtt_raw.back(), 0.99);
                },
                [&] {
                    rtt_plugin.push_back(plugin_round_trip(ad, bs, p.rtt));
                    p50.plugin.push_back(percentile(rtt_plugin.back(), 0.5));
                    return percentile(rtt_plugin.back(), 0.99);
                },
                p99);
            rows.push_back(p50);
            rows.push_back(p99);
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench-kafka: %s\n", e.what());
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
            std::printf("%-34s %-30s %-30s %8.2f\n", r.name.c_str(),
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
    for (const auto &[why, count] : false_failures())
        std::printf("note: the plugin reported 'failed' %d time(s) while "
                    "starting, then connected: %s\n",
                    count, why.c_str());
    for (const auto &m : missed)
        std::printf("goal missed: %s\n", m.c_str());
    return missed.empty() ? 0 : 1;
}
