// SPDX-License-Identifier: Apache-2.0
// Wall time of a ToDD test run of an instant testlet (prints {} at once),
// followed the way `todd run` does (POST /v1/testrun/run, status stream in
// lock-step until all finished, GET /v1/testdata), with 1 and 3 agents, and
// the time from an agent's start to being usable in its group. Server and
// agents run in this process over the loopback plugin; with
// TODD_BENCH_RABBITMQ=1 also over a private RabbitMQ. Baselines measured
// in the same run: one REST round trip and one testlet process spawn.
// See docs/benchmarks/testrun.md.
#include "server_test_util.hpp"

#include <rabbitmq_broker.hpp>
#include <todd/core/log.hpp>

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

using namespace todd;
using namespace todd::test;
namespace fs = std::filesystem;

namespace {

const char *instant_testlet = "#!/bin/sh\n"
                              "[ \"$1\" = check ] && { echo 'Check mode "
                              "PASSED'; exit 0; }\n"
                              "echo '{}'\n";

/** A server with n agents in group "g" and testrun "instant". */
struct Rig {
    TempDir dir;
    TransportFactory tf;
    std::unique_ptr<server::Server> srv;
    std::vector<std::unique_ptr<agent::Agent>> agents;
    uint16_t api = 0, stream = 0;
    int next_agent = 0;

    Rig(TransportFactory f, int n) : tf(std::move(f))
    {
        auto cfg = test_server_config(dir.path());
        write_script(cfg.opt_dir + "/assets/testlets/instant", instant_testlet);
        srv = std::make_unique<server::Server>(cfg, tf());
        srv->start();
        api = srv->api_port();
        stream = srv->stream_port();
        http(api, "POST", "/v1/object/create", group_json("g", "127.0.0.0/8"));
        http(api, "POST", "/v1/object/create",
             ping_testrun_json("instant", "g", "instant", ""));
        for (int i = 0; i < n; ++i)
            add_agent(true);
    }
    ~Rig()
    {
        for (auto &a : agents)
            a->stop();
        agents.clear();
        srv->stop();
    }
    /** Start an agent; with_assets = it already has the server's testlet. */
    agent::Agent &add_agent(bool wait)
    {
        int n = next_agent++;
        std::string opt = dir.path() + "/agent-" + std::to_string(n) + "/opt";
        write_script(opt + "/assets/testlets/instant", instant_testlet);
        agent::AgentConfig ac;
        agents.push_back(make_agent(tf, dir.path(), n, &ac));
        agents.back()->start();
        if (wait &&
            !wait_until([&] { return agents.back()->group() == "g"; }, 30s))
            throw std::runtime_error("agent did not join its group");
        return *agents.back();
    }
};

std::unique_ptr<RabbitmqBroker> &broker()
{
    static std::unique_ptr<RabbitmqBroker> b;
    return b;
}

TransportFactory factory(bool rabbit)
{
    if (!rabbit)
        return loopback_factory();
    if (!broker())
        broker() = std::make_unique<RabbitmqBroker>();
    return plugin_factory(RABBITMQ_PLUGIN_DIR, "rabbitmq",
                          {{"host", broker()->host()},
                           {"port", std::to_string(broker()->port())}});
}

void BM_TestRun(benchmark::State &state, bool rabbit)
{
    Rig rig(factory(rabbit), static_cast<int>(state.range(0)));
    for (auto _ : state) {
        RunOutcome o = run_and_follow(rig.api, rig.stream, "instant");
        size_t n = 0;
        for (size_t p = 0;
             (p = o.result.find("\"127.0.0.1\":{}", p)) != std::string::npos;
             ++p)
            ++n;
        if (o.result_status != 200 ||
            n != static_cast<size_t>(state.range(0))) {
            state.SkipWithError(
                ("run failed: " + o.uuid + " " + o.result).c_str());
            break;
        }
    }
    state.SetLabel(std::to_string(state.range(0)) + " agent(s)");
}

void BM_AgentStartToGroup(benchmark::State &state, bool rabbit)
{
    Rig rig(factory(rabbit), 0);
    for (auto _ : state) {
        auto t0 = std::chrono::steady_clock::now();
        agent::Agent &a = rig.add_agent(true);
        auto t1 = std::chrono::steady_clock::now();
        state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
        a.stop(); // not timed
    }
}

void BM_Baseline_RestRoundTrip(benchmark::State &state)
{
    Rig rig(loopback_factory(), 0);
    for (auto _ : state)
        benchmark::DoNotOptimize(http(rig.api, "GET", "/v1/groups"));
}

void BM_Baseline_TestletSpawn(benchmark::State &state)
{
    TempDir d;
    write_script(d / "instant", instant_testlet);
    std::string cmd = d / "instant";
    cmd += " 127.0.0.1 '' >/dev/null";
    for (auto _ : state)
        benchmark::DoNotOptimize(std::system(cmd.c_str()));
}

} // namespace

BENCHMARK_CAPTURE(BM_TestRun, loopback, false)
    ->Arg(1)
    ->Arg(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2);
BENCHMARK_CAPTURE(BM_AgentStartToGroup, loopback, false)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(20);
BENCHMARK(BM_Baseline_RestRoundTrip)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_Baseline_TestletSpawn)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

int main(int argc, char **argv)
{
    todd::log::set_level(todd::log::Level::warn);
    if (const char *r = std::getenv("TODD_BENCH_RABBITMQ");
        r && *r == '1' && !RabbitmqBroker::unavailable()) {
        benchmark::RegisterBenchmark("BM_TestRun/rabbitmq", BM_TestRun, true)
            ->Arg(1)
            ->Arg(3)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->MinTime(2);
        benchmark::RegisterBenchmark("BM_AgentStartToGroup/rabbitmq",
                                     BM_AgentStartToGroup, true)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond)
            ->Iterations(10);
    }
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    broker().reset();
    return 0;
}
