// SPDX-License-Identifier: Apache-2.0
// bench-nats-fleet N...: what N agents cost a NATS server under the NATS
// plugin's mapping (docs/nats.md): one durable push consumer per agent (an
// agent subscribes to its UUID) on the one work-queue stream, made exactly
// as the plugin's bind() makes it. For each N, on a fresh private
// nats-server (file storage):
//  - the time to make the N consumers, and the server's resident memory
//    and store size before and after;
//  - JetStream publishes (each waiting for its ack) to agents' subjects
//    with the N consumers there, against the same on the same server with
//    none yet: a fleet must not slow the server's publishing down
//    (goal >= 0.9);
//  - a server restart with them: the time until it is ready again.
// Real subscribers are not attached: an idle subscription costs the
// server nothing more than its consumer (the plugin's subscription waits
// for pushes, without requests).
#include "../common/pairs.hpp"
#include "nats_server.hpp"

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t)
{
    return std::chrono::duration<double>(Clock::now() - t).count();
}

[[noreturn]] void fail(const std::string &what)
{
    throw std::runtime_error(what);
}

void must(natsStatus st, const std::string &what)
{
    if (st != NATS_OK)
        fail(what + ": " + natsStatus_GetText(st));
}

/** VmRSS of pid, KiB. */
long rss_kib(pid_t pid)
{
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmRSS:", 0) == 0)
            return std::atol(line.c_str() + 6);
    return 0;
}

/** Bytes under dir. */
uintmax_t tree_bytes(const std::string &dir)
{
    uintmax_t n = 0;
    for (const auto &e : std::filesystem::recursive_directory_iterator(dir))
        if (e.is_regular_file())
            n += e.file_size();
    return n;
}

/** An agent's UUID-like destination; already [A-Za-z0-9-], so the
 *  plugin's encoding leaves it as it is. */
std::string agent(int i)
{
    char b[80];
    std::snprintf(b, sizeof b, "%064d", i);
    return b;
}

struct Conn {
    natsConnection *nc = nullptr;
    jsCtx *js = nullptr;
    explicit Conn(const std::string &url)
    {
        must(natsConnection_ConnectTo(&nc, url.c_str()), "connect " + url);
        jsOptions o;
        jsOptions_Init(&o);
        o.Wait = 10000;
        must(natsConnection_JetStream(&js, nc, &o), "JetStream context");
    }
    ~Conn()
    {
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
    }
};

// The plugin's defaults (keys.hpp) and names (settings.hpp).
const char *const stream = "TODD", *const prefix = "todd.msg";

void add_stream(jsCtx *js)
{
    jsStreamConfig c;
    jsStreamConfig_Init(&c);
    const std::string subjects = std::string(prefix) + ".>";
    const char *subj[] = {subjects.c_str()};
    c.Name = stream;
    c.Subjects = subj;
    c.SubjectsLen = 1;
    c.Retention = js_WorkQueuePolicy;
    c.Storage = js_FileStorage;
    c.Replicas = 1;
    c.MaxAge = 86400000LL * 1000000;
    c.Duplicates = 120000LL * 1000000;
    jsErrCode e;
    must(js_AddStream(nullptr, js, &c, nullptr, &e), "add stream");
}

void add_consumer(jsCtx *js, const std::string &dest)
{
    const std::string subject = std::string(prefix) + "." + dest,
                      deliver = std::string("_TODD.") + stream + "." + dest;
    jsConsumerConfig c;
    jsConsumerConfig_Init(&c);
    c.Durable = dest.c_str();
    c.Description = dest.c_str();
    c.DeliverSubject = deliver.c_str();
    c.DeliverGroup = dest.c_str();
    c.FilterSubject = subject.c_str();
    c.DeliverPolicy = js_DeliverAll;
    c.AckPolicy = js_AckExplicit;
    c.AckWait = 60000LL * 1000000;
    c.MaxAckPending = 64;
    jsErrCode e;
    must(js_AddConsumer(nullptr, js, stream, &c, nullptr, &e),
         "add consumer " + dest);
}

/** Publishes per second, each waiting for its ack, to the first `agents`
 *  agents' subjects in turn (a task each). */
double publish_rate(jsCtx *js, int count, int agents)
{
    const auto t = Clock::now();
    for (int i = 0; i < count; ++i) {
        const std::string subject =
            std::string(prefix) + "." + agent(i % std::max(agents, 1));
        jsPubAck *pa = nullptr;
        jsErrCode e;
        must(js_Publish(&pa, js, subject.c_str(), "task", 4, nullptr, &e),
             "publish");
        jsPubAck_Destroy(pa);
    }
    return count / seconds_since(t);
}

} // namespace

int main(int argc, char **argv)
{
    std::vector<int> sizes;
    for (int i = 1; i < argc; ++i) {
        const int n = std::atoi(argv[i]);
        if (n < 1 || n > 100000) {
            std::fprintf(stderr, "usage: bench-nats-fleet N... (1-100000)\n");
            return 2;
        }
        sizes.push_back(n);
    }
    if (sizes.empty())
        sizes = {1000, 10000};
    if (auto why = todd::test::NatsServer::unavailable()) {
        std::fprintf(stderr, "bench-nats-fleet: %s\n", why->c_str());
        return 1;
    }
    bool missed = false;
    try {
        std::printf("publishes per second, each waiting for its ack: median "
                    "(min..max) of 3 runs of 2,000\n");
        std::printf("%-7s %9s %10s %10s %12s %22s %22s %6s %12s\n", "agents",
                    "make (s)", "RSS (MiB)", "KiB/agent", "disk KiB/ag",
                    "pub/s none", "pub/s fleet", "ratio", "restart (s)");
        for (int n : sizes) {
            todd::test::NatsServer server;
            const long rss0 = rss_kib(server.pid());
            std::vector<double> none, fleet;
            double make_s = 0;
            {
                Conn c(server.url());
                add_stream(c.js);
                // The baseline: as many publishes before any consumer
                // exists, to agents outside the fleet (held in the
                // stream: nobody acknowledges them).
                const int pubs = 2000;
                for (int r = 0; r < 3; ++r)
                    none.push_back(publish_rate(c.js, pubs, 1000));
                const auto t = Clock::now();
                for (int i = 0; i < n; ++i)
                    add_consumer(c.js, agent(100000 + i));
                make_s = seconds_since(t);
                for (int r = 0; r < 3; ++r) {
                    const auto t0 = Clock::now();
                    for (int k = 0; k < pubs; ++k) {
                        const std::string s =
                            std::string(prefix) + "." + agent(100000 + k % n);
                        jsPubAck *pa = nullptr;
                        jsErrCode e;
                        must(js_Publish(&pa, c.js, s.c_str(), "task", 4,
                                        nullptr, &e),
                             "publish");
                        jsPubAck_Destroy(pa);
                    }
                    fleet.push_back(pubs / seconds_since(t0));
                }
            }
            const long rss1 = rss_kib(server.pid());
            const uintmax_t disk = tree_bytes(server.dir());
            server.stop();
            server.start(); // waits until it is ready (healthz)
            const double restart_s = server.last_start_time().count() / 1e3;
            const double ratio =
                benchpairs::median(fleet) / benchpairs::median(none);
            std::printf(
                "%-7d %9.1f %10.1f %10.1f %12.1f %22s %22s %6.2f "
                "%12.1f\n",
                n, make_s, rss1 / 1024.0, double(rss1 - rss0) / n,
                disk / 1024.0 / n, benchpairs::spread(none, "%.0f").c_str(),
                benchpairs::spread(fleet, "%.0f").c_str(), ratio, restart_s);
            std::fflush(stdout);
            if (ratio < 0.9) {
                std::printf("  goal: publishing with %d consumers >= 0.9x "
                            "without: MISSED (%.2f)\n",
                            n, ratio);
                missed = true;
            }
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench-nats-fleet: %s\n", e.what());
        return 1;
    }
    std::printf("goal: publishing (acked each) with the fleet's consumers "
                ">= 0.9x without: %s\n",
                missed ? "MISSED" : "met");
    return missed ? 1 : 0;
}
