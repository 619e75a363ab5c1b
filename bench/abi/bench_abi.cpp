// SPDX-License-Identifier: Apache-2.0
// Cost of the plugin boundary: the loopback transport through core Transport
// and the C ABI, against the same broker compiled into this binary and called
// directly (the baseline). The difference per message is the ABI overhead.
#include "broker.hpp"

#include <todd/core/transport.hpp>

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <string>
#include <thread>

#include <pthread.h>
#include <time.h>

using namespace todd::core;

namespace {

constexpr int kBatch = 1000; // hops per chain
const std::string kPayload(64, 'x');
// Expired messages are purged when a queue reaches its bound: publish-only
// runs stay bounded in memory, the same way for both sides.
constexpr int64_t kTtlMs = 1;
constexpr uint64_t kBound = 100000;

Transport &abi_transport()
{
    static std::unique_ptr<Transport> t = [] {
        auto plugin = PluginRegistry({LOOPBACK_DIR}).load("loopback");
        auto tr = Transport::create(
            plugin, {{"max_queue_length", std::to_string(kBound)}});
        tr->start();
        return tr;
    }();
    return *t;
}

void wait_for(const std::atomic<int64_t> &n, int64_t target)
{
    while (n.load(std::memory_order_acquire) < target)
        std::this_thread::yield();
}

// Publish only -----------------------------------------------------------

void BM_Publish_Direct(benchmark::State &state)
{
    auto &b = loopback::Broker::shared();
    for (auto _ : state) {
        auto st = b.publish("bench-pub",
                            reinterpret_cast<const uint8_t *>(kPayload.data()),
                            kPayload.size(), "text/plain", kTtlMs, kBound);
        benchmark::DoNotOptimize(st);
    }
    state.SetItemsProcessed(state.iterations());
}

void BM_Publish_Abi(benchmark::State &state)
{
    Transport &t = abi_transport();
    const PublishOptions opts{std::chrono::milliseconds(kTtlMs), "text/plain"};
    for (auto _ : state)
        t.publish("bench-pub", kPayload, opts);
    state.SetItemsProcessed(state.iterations());
}

// One publish and one delivery -------------------------------------------
// Each delivery publishes the next message to the same queue from inside the
// handler, so a chain of kBatch hops runs on the consumer thread alone: no
// thread hand-offs, only the work of one publish plus one delivery per hop.

struct Chain {
    std::atomic<int64_t> hops{0};
    int64_t target = 0;
    // CPU clock of the consumer thread: the chain's cost without the time
    // it spends preempted on a busy machine.
    std::atomic<bool> have_clock{false};
    clockid_t clock{};

    void note_thread()
    {
        if (!have_clock.load(std::memory_order_acquire)) {
            pthread_getcpuclockid(pthread_self(), &clock);
            have_clock.store(true, std::memory_order_release);
        }
    }
    double cpu_ns() const
    {
        timespec ts{};
        clock_gettime(clock, &ts);
        return ts.tv_sec * 1e9 + ts.tv_nsec;
    }
};

/** Run the chains, reporting the consumer thread's CPU ns per hop. */
template <class Kick>
void run_chains(benchmark::State &state, Chain &c, Kick kick)
{
    // Warm up: one chain, so the consumer thread's clock is known.
    c.target += kBatch;
    kick();
    wait_for(c.hops, c.target);
    const double cpu0 = c.cpu_ns();
    for (auto _ : state) {
        c.target += kBatch;
        kick();
        wait_for(c.hops, c.target);
    }
    state.counters["cpu_ns_per_msg"] =
        (c.cpu_ns() - cpu0) / static_cast<double>(state.iterations() * kBatch);
    state.SetItemsProcessed(state.iterations() * kBatch);
}

void BM_PublishDeliver_Direct(benchmark::State &state)
{
    auto &b = loopback::Broker::shared();
    Chain c;
    auto publish = [&] {
        b.publish("bench-chain",
                  reinterpret_cast<const uint8_t *>(kPayload.data()),
                  kPayload.size(), "text/plain", 0, 0);
    };
    DeliveryHandler handler = [&](const Delivery &d) {
        benchmark::DoNotOptimize(d.payload.data());
        c.note_thread();
        if (c.hops.fetch_add(1, std::memory_order_acq_rel) + 1 < c.target)
            publish();
        return Verdict::ack;
    };
    // The same work the host does for a delivery, minus the boundary.
    auto consumer =
        b.consume("bench-chain", 1, [&](const loopback::Message &m) {
            Delivery d{m.destination,
                       std::string_view(
                           reinterpret_cast<const char *>(m.payload.data()),
                           m.payload.size()),
                       m.content_type, m.redelivered};
            return static_cast<int32_t>(handler(d));
        });
    run_chains(state, c, publish);
    consumer->cancel();
}

void BM_PublishDeliver_Abi(benchmark::State &state)
{
    Transport &t = abi_transport();
    Chain c;
    auto sub = t.subscribe("bench-chain", [&](const Delivery &d) {
        benchmark::DoNotOptimize(d.payload.data());
        c.note_thread();
        if (c.hops.fetch_add(1, std::memory_order_acq_rel) + 1 < c.target)
            t.publish("bench-chain", kPayload);
        return Verdict::ack;
    });
    run_chains(state, c, [&] { t.publish("bench-chain", kPayload); });
    sub.reset();
}

BENCHMARK(BM_Publish_Direct)->UseRealTime();
BENCHMARK(BM_Publish_Abi)->UseRealTime();
BENCHMARK(BM_PublishDeliver_Direct)->UseRealTime();
BENCHMARK(BM_PublishDeliver_Abi)->UseRealTime();

/**
 * Console output plus a summary per message: ABI - direct. Both figures are
 * CPU time, so a busy (shared) machine's preemption does not count: publish
 * on the publishing thread, a publish+deliver hop on the consumer thread that
 * runs the chain. With --benchmark_repetitions the medians are used.
 */
class Reporter : public benchmark::ConsoleReporter {
  public:
    Reporter() : ConsoleReporter(OO_Tabular) {}

    void ReportRuns(const std::vector<Run> &runs) override
    {
        ConsoleReporter::ReportRuns(runs);
        for (const auto &r : runs) {
            const bool median =
                r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
            if (!median && r.run_type != Run::RT_Iteration)
                continue;
            const std::string name = r.run_name.function_name;
            const bool round_trip =
                name.find("PublishDeliver") != std::string::npos;
            auto cpu = r.counters.find("cpu_ns_per_msg");
            double ns = round_trip && cpu != r.counters.end()
                            ? double(cpu->second)
                            : r.GetAdjustedCPUTime();
            auto &slot = ns_[name];
            if (median || !slot.second) // a median replaces single runs
                slot = {ns, median};
        }
    }
    void Finalize() override
    {
        ConsoleReporter::Finalize();
        std::printf(
            "\nPer message (ns)          direct      abi  overhead  ratio\n");
        for (const char *what : {"Publish", "PublishDeliver"}) {
            auto d = ns_.find(std::string("BM_") + what + "_Direct");
            auto a = ns_.find(std::string("BM_") + what + "_Abi");
            if (d == ns_.end() || a == ns_.end())
                continue;
            const double dn = d->second.first, an = a->second.first;
            std::printf("%-24s %8.1f %8.1f %9.1f  %5.2f  (%s)\n", what, dn, an,
                        an - dn, an / dn,
                        std::string(what) == "Publish" ? "publisher CPU"
                                                       : "consumer thread CPU");
        }
    }

  private:
    std::map<std::string, std::pair<double, bool>> ns_; // ns, from a median
};

} // namespace

int main(int argc, char **argv)
{
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    Reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
    return 0;
}
