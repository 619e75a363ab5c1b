// SPDX-License-Identifier: Apache-2.0
// The RabbitMQ plugin (through core's Comms facade / Transport) against a
// plain rabbitmq-c loop written here, same broker, same run, 256-byte
// bodies. Pairs: Raw/<x> and Plugin/<x>; compare items_per_second and the
// p50/p99 counters of the round trips. See docs/benchmarks/rabbitmq.md.
//
// Broker: a private one started via tests/common/rabbitmq_broker, or an
// existing one on 127.0.0.1:$TODD_BENCH_RABBITMQ_PORT (guest/guest).
#include "rabbitmq_broker.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/log.hpp>
#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using todd::core::Comms;
using todd::core::Options;
using todd::core::Transport;
using todd::core::Verdict;

namespace {

int g_port = 0;
int raw_mandatory = std::getenv("RAW_MANDATORY") ? 1 : 0;
const std::string body = [] {
    std::string b(256, 'x');
    const char head[] = "{\"seq\":0000000000,\"pad\":\"";
    b.replace(0, sizeof head - 1, head);
    b.replace(254, 2, "\"}");
    return b;
}();

double now_s()
{
    return std::chrono::duration<double>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// ---------------------------------------------------------------------------
// Raw rabbitmq-c, the baseline (what ../shared/tools/amqp-raw-bench.c does).

void die(const char *what)
{
    throw std::runtime_error(what);
}

void check(amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        die(what);
}

struct Raw {
    amqp_connection_state_t c;
    Raw()
    {
        c = amqp_new_connection();
        amqp_socket_t *s = amqp_tcp_socket_new(c);
        if (amqp_socket_open(s, "127.0.0.1", g_port) != AMQP_STATUS_OK)
            die("raw connect");
        check(amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest",
                         "guest"),
              "raw login");
        amqp_channel_open(c, 1);
        check(amqp_get_rpc_reply(c), "channel.open");
    }
    ~Raw()
    {
        amqp_connection_close(c, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(c);
    }
    // ToDD's topology, as the plugin declares it.
    uint32_t declare(const std::string &q)
    {
        amqp_exchange_declare(c, 1, amqp_cstring_bytes("test_exchange"),
                              amqp_cstring_bytes("direct"), 0, 0, 0, 0,
                              amqp_empty_table);
        check(amqp_get_rpc_reply(c), "exchange.declare");
        auto *ok = amqp_queue_declare(c, 1, amqp_cstring_bytes(q.c_str()), 0, 0,
                                      0, 0, amqp_empty_table);
        check(amqp_get_rpc_reply(c), "queue.declare");
        uint32_t n = ok->message_count;
        amqp_queue_bind(c, 1, amqp_cstring_bytes(q.c_str()),
                        amqp_cstring_bytes("test_exchange"),
                        amqp_cstring_bytes(q.c_str()), amqp_empty_table);
        check(amqp_get_rpc_reply(c), "queue.bind");
        return n;
    }
    void purge(const std::string &q)
    {
        declare(q);
        amqp_queue_purge(c, 1, amqp_cstring_bytes(q.c_str()));
        check(amqp_get_rpc_reply(c), "queue.purge");
    }
    void publish(const std::string &q)
    {
        amqp_basic_properties_t p;
        p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
        p.content_type = amqp_cstring_bytes("text/plain");
        amqp_bytes_t b{body.size(), const_cast<char *>(body.data())};
        if (amqp_basic_publish(c, 1, amqp_cstring_bytes("test_exchange"),
                               amqp_cstring_bytes(q.c_str()), raw_mandatory, 0,
                               &p, b) != AMQP_STATUS_OK)
            die("raw publish");
    }
    // Wait until the queue holds n messages (the broker has them all).
    void wait_count(const std::string &q, uint32_t n)
    {
        while (declare(q) < n)
            std::this_thread::sleep_for(1ms);
    }
    uint64_t confirmed = 0;
    void wait_confirms(uint64_t upto)
    {
        while (confirmed < upto) {
            amqp_frame_t f;
            if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK)
                die("wait confirm");
            if (f.frame_type == AMQP_FRAME_METHOD &&
                f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
                auto *a =
                    static_cast<amqp_basic_ack_t *>(f.payload.method.decoded);
                confirmed = std::max<uint64_t>(confirmed, a->delivery_tag);
            }
        }
        amqp_maybe_release_buffers(c);
    }
};

std::unique_ptr<Transport> plugin_transport(Options extra = {})
{
    static auto plugin =
        todd::core::PluginRegistry({RABBITMQ_PLUGIN_DIR}).load("rabbitmq");
    Options o = {{"host", "127.0.0.1"}, {"port", std::to_string(g_port)}};
    for (auto &kv : extra)
        o[kv.first] = kv.second;
    auto t = Transport::create(plugin, o);
    t->start();
    return t;
}

// ---------------------------------------------------------------------------
// Publishing, no confirms: until the broker holds every message.

void Raw_PublishNoConfirm(benchmark::State &state)
{
    Raw r;
    std::string q = "bench-pub";
    r.purge(q);
    uint32_t n = 0;
    for (auto _ : state) {
        r.publish(q);
        if (++n % 1000 == 0)
            amqp_maybe_release_buffers(r.c);
    }
    r.wait_count(q, n);
    state.SetItemsProcessed(n);
    r.purge(q);
}

void Plugin_PublishNoConfirm(benchmark::State &state)
{
    Raw r;
    std::string q = "bench-pub";
    r.purge(q);
    Comms comms(plugin_transport({{"confirms", "false"}}));
    comms.send_raw(q, body); // connect + declare outside the timing
    r.purge(q);
    uint32_t n = 0;
    for (auto _ : state) {
        comms.send_raw(q, body);
        ++n;
    }
    r.wait_count(q, n);
    state.SetItemsProcessed(n);
    r.purge(q);
}

// Publishing with confirms, 100 per batch (wait for all, then next).

void Raw_PublishConfirmBatch100(benchmark::State &state)
{
    Raw r;
    std::string q = "bench-pub";
    r.purge(q);
    amqp_confirm_select(r.c, 1);
    check(amqp_get_rpc_reply(r.c), "confirm.select");
    uint64_t n = 0;
    for (auto _ : state) {
        for (int i = 0; i < 100; ++i)
            r.publish(q);
        n += 100;
        r.wait_confirms(n);
    }
    state.SetItemsProcessed(static_cast<int64_t>(n));
    r.purge(q);
}

void Plugin_PublishConfirmBatch100(benchmark::State &state)
{
    Raw r;
    std::string q = "bench-pub";
    r.purge(q);
    auto t = plugin_transport();
    std::vector<std::pair<std::string, std::string>> batch(100, {q, body});
    t->publish_batch(batch);
    int64_t n = 0;
    for (auto _ : state) {
        auto st = t->publish_batch(batch);
        if (st[99] != TODD_COMMS_OK)
            state.SkipWithError("publish_batch failed");
        n += 100;
    }
    state.SetItemsProcessed(n);
    r.purge(q);
}

// One confirmed publish at a time through the facade (the default mode).
void Raw_PublishConfirmEach(benchmark::State &state)
{
    Raw r;
    std::string q = "bench-pub";
    r.purge(q);
    amqp_confirm_select(r.c, 1);
    check(amqp_get_rpc_reply(r.c), "confirm.select");
    uint64_t n = 0;
    for (auto _ : state) {
        r.publish(q);
        r.wait_confirms(++n);
    }
    state.SetItemsProcessed(static_cast<int64_t>(n));
    r.purge(q);
}

void Plugin_PublishConfirmEach(benchmark::State &state)
{
    Raw r;
    std::string q = "bench-pub";
    r.purge(q);
    Comms comms(plugin_transport());
    comms.send_raw(q, body);
    int64_t n = 0;
    for (auto _ : state) {
        comms.send_raw(q, body);
        ++n;
    }
    state.SetItemsProcessed(n);
    r.purge(q);
}

// ---------------------------------------------------------------------------
// Consuming with an ack each, prefetch 100, 20,000 messages per iteration.

constexpr uint32_t consume_n = 20000;

void fill(Raw &r, const std::string &q)
{
    r.purge(q);
    for (uint32_t i = 0; i < consume_n; ++i) {
        r.publish(q);
        if (i % 1000 == 0)
            amqp_maybe_release_buffers(r.c);
    }
    r.wait_count(q, consume_n);
}

void Raw_ConsumeAck(benchmark::State &state)
{
    Raw filler;
    std::string q = "bench-consume";
    int64_t n = 0;
    for (auto _ : state) {
        state.PauseTiming();
        fill(filler, q);
        auto c = std::make_unique<Raw>();
        amqp_basic_qos(c->c, 1, 0, 100, 0);
        check(amqp_get_rpc_reply(c->c), "basic.qos");
        state.ResumeTiming();
        amqp_basic_consume(c->c, 1, amqp_cstring_bytes(q.c_str()),
                           amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
        check(amqp_get_rpc_reply(c->c), "basic.consume");
        for (uint32_t i = 0; i < consume_n; ++i) {
            amqp_envelope_t env;
            amqp_maybe_release_buffers(c->c);
            check(amqp_consume_message(c->c, &env, nullptr, 0), "consume");
            amqp_basic_ack(c->c, 1, env.delivery_tag, 0);
            amqp_destroy_envelope(&env);
        }
        n += consume_n;
        state.PauseTiming();
        c.reset(); // the consumer goes away
        state.ResumeTiming();
    }
    state.SetItemsProcessed(n);
}

void Plugin_ConsumeAck(benchmark::State &state)
{
    Raw filler;
    std::string q = "bench-consume";
    auto t = plugin_transport({{"prefetch", "100"}});
    int64_t n = 0;
    for (auto _ : state) {
        state.PauseTiming();
        fill(filler, q);
        std::mutex m;
        std::condition_variable cv;
        uint32_t got = 0;
        state.ResumeTiming();
        auto sub = t->subscribe(q, [&](const todd::core::Delivery &d) {
            if (d.payload.size() != body.size())
                std::abort();
            std::lock_guard g(m);
            if (++got == consume_n)
                cv.notify_all();
            return Verdict::ack;
        });
        {
            std::unique_lock lk(m);
            cv.wait(lk, [&] { return got >= consume_n; });
        }
        n += consume_n;
        state.PauseTiming();
        sub.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(n);
}

// ---------------------------------------------------------------------------
// Round trip: the server sends a task, the agent answers, one in flight.

void percentiles(benchmark::State &state, std::vector<double> &lat)
{
    if (lat.empty())
        return;
    std::sort(lat.begin(), lat.end());
    state.counters["p50_us"] = lat[lat.size() / 2] * 1e6;
    state.counters["p99_us"] = lat[lat.size() * 99 / 100] * 1e6;
}

void Raw_RoundTrip(benchmark::State &state)
{
    Raw server, agent;
    std::string tq = "bench-task", rq = "bench-resp";
    server.purge(tq);
    server.purge(rq);
    amqp_basic_consume(agent.c, 1, amqp_cstring_bytes(tq.c_str()),
                       amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    check(amqp_get_rpc_reply(agent.c), "consume task");
    amqp_basic_consume(server.c, 1, amqp_cstring_bytes(rq.c_str()),
                       amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    check(amqp_get_rpc_reply(server.c), "consume resp");
    std::vector<double> lat;
    for (auto _ : state) {
        double t0 = now_s();
        server.publish(tq);
        amqp_envelope_t env;
        amqp_maybe_release_buffers(agent.c);
        check(amqp_consume_message(agent.c, &env, nullptr, 0), "agent get");
        amqp_basic_ack(agent.c, 1, env.delivery_tag, 0);
        amqp_destroy_envelope(&env);
        agent.publish(rq);
        amqp_maybe_release_buffers(server.c);
        check(amqp_consume_message(server.c, &env, nullptr, 0), "server get");
        amqp_basic_ack(server.c, 1, env.delivery_tag, 0);
        amqp_destroy_envelope(&env);
        lat.push_back(now_s() - t0);
    }
    state.SetItemsProcessed(static_cast<int64_t>(lat.size()));
    percentiles(state, lat);
}

void Plugin_RoundTrip(benchmark::State &state)
{
    // Confirms off, as the raw loop: both measure the broker path.
    Comms server(plugin_transport({{"confirms", "false"}}));
    auto agent = plugin_transport({{"confirms", "false"}});
    std::string tq = "bench-task", rq = "bench-resp";
    Transport *a = agent.get();
    auto tsub = agent->subscribe(tq, [&](const todd::core::Delivery &) {
        a->publish(rq, body);
        return Verdict::ack;
    });
    std::mutex m;
    std::condition_variable cv;
    uint64_t answers = 0;
    auto rsub =
        server.transport().subscribe(rq, [&](const todd::core::Delivery &) {
            std::lock_guard g(m);
            ++answers;
            cv.notify_all();
            return Verdict::ack;
        });
    std::vector<double> lat;
    uint64_t expect = 0;
    for (auto _ : state) {
        double t0 = now_s();
        server.send_raw(tq, body);
        ++expect;
        std::unique_lock lk(m);
        cv.wait(lk, [&] { return answers >= expect; });
        lat.push_back(now_s() - t0);
    }
    state.SetItemsProcessed(static_cast<int64_t>(lat.size()));
    percentiles(state, lat);
}

// Raw first, then the plugin, so each pair is measured back to back.
BENCHMARK(Raw_PublishNoConfirm)->Iterations(100000)->UseRealTime();
BENCHMARK(Plugin_PublishNoConfirm)->Iterations(100000)->UseRealTime();
BENCHMARK(Raw_PublishConfirmBatch100)->Iterations(500)->UseRealTime();
BENCHMARK(Plugin_PublishConfirmBatch100)->Iterations(500)->UseRealTime();
BENCHMARK(Raw_PublishConfirmEach)->Iterations(5000)->UseRealTime();
BENCHMARK(Plugin_PublishConfirmEach)->Iterations(5000)->UseRealTime();
BENCHMARK(Raw_ConsumeAck)->Iterations(3)->UseRealTime();
BENCHMARK(Plugin_ConsumeAck)->Iterations(3)->UseRealTime();
BENCHMARK(Raw_RoundTrip)->Iterations(5000)->UseRealTime();
BENCHMARK(Plugin_RoundTrip)->Iterations(5000)->UseRealTime();

} // namespace

int main(int argc, char **argv)
{
    benchmark::Initialize(&argc, argv);
    todd::log::set_level(todd::log::Level::warn);
    std::unique_ptr<todd::test::RabbitmqBroker> broker;
    if (const char *p = std::getenv("TODD_BENCH_RABBITMQ_PORT")) {
        g_port = std::atoi(p);
    } else {
        if (auto why = todd::test::RabbitmqBroker::unavailable()) {
            std::cerr << "skipping: " << *why
                      << " (or set TODD_BENCH_RABBITMQ_PORT)\n";
            return 0;
        }
        broker = std::make_unique<todd::test::RabbitmqBroker>();
        g_port = broker->port();
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
