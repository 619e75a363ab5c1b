// SPDX-License-Identifier: Apache-2.0
// What the Kafka plugin's mapping costs per agent: N plugin instances in
// this process, each subscribed to its own destination as an agent
// subscribes to its UUID, and one "server" instance that sends to them.
// For each N given:
//  - a message to every destination is published first (held: nobody
//    subscribes yet), then the N agents start; time until each has it;
//  - TCP connections to the broker, threads and memory of this process per
//    agent; the broker JVM's RSS, heap after a full GC and threads before
//    and after; topics and consumer groups on the broker; CPU of the
//    broker and of this process while the fleet idles;
//  - one task to every agent: publish time, time until all are delivered,
//    and the fetch amplification (records each agent's consumer read and
//    skipped, from the topics' end offsets and destinations per topic);
//  - one more agent starting while N run: time until it is live;
//  - stopping the N agents.
// See docs/benchmarks/kafka.md.
//
//   bench-kafka-fleet N [N...]      (default: 100 300)
//
// Exit: 0 done, 2 an error, 77 no broker (a failure with
// TODD_REQUIRE_KAFKA=1).
#include "kafka_bench.hpp"

#include <rabbitmq_broker.hpp> // run_capture

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using namespace kbench;
using todd::core::Delivery;
using todd::core::Transport;
using todd::core::Verdict;

namespace {

[[noreturn]] void fail(const std::string &what)
{
    throw std::runtime_error(what);
}

const std::string body(256, 't');
constexpr int kWave = 100; // agents started together

// ---------------------------------------------------------------------------
// /proc

/** A field of /proc/<pid>/status in kB (VmRSS) or a count (Threads). */
long status_field(pid_t pid, const std::string &field)
{
    std::ifstream f("/proc/" +
                    (pid == 0 ? std::string("self") : std::to_string(pid)) +
                    "/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(field + ":", 0) == 0)
            return std::atol(line.c_str() + field.size() + 1);
    return -1;
}

/** utime + stime of a process, seconds. */
double cpu_seconds(pid_t pid)
{
    std::ifstream f("/proc/" +
                    (pid == 0 ? std::string("self") : std::to_string(pid)) +
                    "/stat");
    std::string all((std::istreambuf_iterator<char>(f)), {});
    auto close = all.rfind(')');
    if (close == std::string::npos)
        return 0;
    std::istringstream rest(all.substr(close + 2));
    std::string v;
    double ticks = 0;
    for (int i = 3; i <= 15 && rest >> v; ++i)
        if (i == 14 || i == 15) // utime, stime
            ticks += std::atof(v.c_str());
    return ticks / double(sysconf(_SC_CLK_TCK));
}

/** Socket inodes a process holds (its /proc/<pid>/fd links). */
std::set<unsigned long> socket_inodes(pid_t pid)
{
    std::set<unsigned long> out;
    const std::string dir =
        "/proc/" + (pid == 0 ? std::string("self") : std::to_string(pid)) +
        "/fd";
    DIR *d = opendir(dir.c_str());
    if (d == nullptr)
        return out;
    while (dirent *e = readdir(d)) {
        char link[128];
        ssize_t n =
            readlink((dir + "/" + e->d_name).c_str(), link, sizeof link - 1);
        if (n <= 0)
            continue;
        link[n] = '\0';
        unsigned long ino = 0;
        if (std::sscanf(link, "socket:[%lu]", &ino) == 1)
            out.insert(ino);
    }
    closedir(d);
    return out;
}

/** One line of /proc/net/tcp{,6}. */
struct TcpEntry {
    int local_port = 0, remote_port = 0, state = 0;
    unsigned long inode = 0;
};

std::vector<TcpEntry> tcp_table()
{
    std::vector<TcpEntry> out;
    for (const char *path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::ifstream f(path);
        std::string line;
        std::getline(f, line); // header
        while (std::getline(f, line)) {
            std::istringstream in(line);
            std::string sl, local, remote, st, queues, timer, retr, uid, tmo;
            unsigned long inode = 0;
            in >> sl >> local >> remote >> st >> queues >> timer >> retr >>
                uid >> tmo >> inode;
            TcpEntry e;
            e.local_port = int(std::strtol(
                local.substr(local.find(':') + 1).c_str(), nullptr, 16));
            e.remote_port = int(std::strtol(
                remote.substr(remote.find(':') + 1).c_str(), nullptr, 16));
            e.state = int(std::strtol(st.c_str(), nullptr, 16));
            e.inode = inode;
            out.push_back(e);
        }
    }
    return out;
}

/** Established connections of this process to the broker's port. */
int connections_to(int port)
{
    auto mine = socket_inodes(0);
    int n = 0;
    for (const auto &e : tcp_table())
        if (e.remote_port == port && e.state == 1 && mine.count(e.inode))
            ++n;
    return n;
}

/** The process listening on 127.0.0.1:port (our user's), or 0. */
pid_t listener_of(int port)
{
    std::set<unsigned long> listening;
    for (const auto &e : tcp_table())
        if (e.local_port == port && e.state == 0x0A)
            listening.insert(e.inode);
    if (listening.empty())
        return 0;
    DIR *d = opendir("/proc");
    pid_t found = 0;
    while (dirent *e = d != nullptr ? readdir(d) : nullptr) {
        pid_t pid = std::atoi(e->d_name);
        if (pid <= 0)
            continue;
        for (unsigned long ino : socket_inodes(pid))
            if (listening.count(ino)) {
                found = pid;
                break;
            }
        if (found != 0)
            break;
    }
    if (d != nullptr)
        closedir(d);
    return found;
}

int thread_count()
{
    return int(status_field(0, "Threads"));
}

/** The JVM's heap in use after a full GC (jcmd), MiB; NaN if unknown. */
double heap_after_gc(pid_t jvm)
{
    if (jvm == 0)
        return NAN;
    const std::string pid = std::to_string(jvm);
    if (todd::test::run_capture({"jcmd", pid, "GC.run"}, 30s).exit_code != 0)
        return NAN;
    auto r = todd::test::run_capture({"jcmd", pid, "GC.heap_info"}, 30s);
    if (r.exit_code != 0)
        return NAN;
    // SerialGC: "def new generation total 78848K, used 42928K" and
    // "tenured generation ..."; G1: "garbage-first heap total ..., used ...".
    std::regex used(R"((generation|heap)\s+total \d+K, used (\d+)K)");
    double kb = 0;
    for (std::sregex_iterator it(r.output.begin(), r.output.end(), used), end;
         it != end; ++it)
        kb += std::atof((*it)[2].str().c_str());
    return kb / 1024;
}

void raise_fd_limit()
{
    rlimit r{};
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

// ---------------------------------------------------------------------------
// The fleet.

/** An agent's UUID-like destination. */
std::string agent_dest(int i)
{
    char b[64];
    std::snprintf(b, sizeof b, "5e3c0a1f-0000-4000-8000-%012d", i);
    return b;
}

/** Deliveries per agent, and a wait for totals. */
struct Tally {
    std::mutex m;
    std::condition_variable cv;
    std::vector<int> per;
    long total = 0;
    explicit Tally(size_t n) : per(n, 0) {}
    void bump(size_t i)
    {
        std::lock_guard g(m);
        ++per[i];
        ++total;
        cv.notify_all();
    }
    /** Every agent in [0, upto) has at least k; false after limit. */
    bool wait_each(size_t upto, int k, std::chrono::milliseconds limit)
    {
        std::unique_lock lk(m);
        return cv.wait_for(lk, limit, [&] {
            for (size_t i = 0; i < upto; ++i)
                if (per[i] < k)
                    return false;
            return true;
        });
    }
    int count(size_t i)
    {
        std::lock_guard g(m);
        return per[i];
    }
};

struct Agent {
    std::unique_ptr<Transport> t;
    todd::core::Subscription sub;
};

/** A created agent subscribed to its destination (not started). */
Agent make_agent(const todd::core::Options &opts, int i, Tally &tally)
{
    Agent a;
    a.t = Transport::create(kafka_plugin(), opts);
    a.sub = a.t->subscribe(agent_dest(i), [&tally, i](const Delivery &) {
        tally.bump(size_t(i));
        return Verdict::ack;
    });
    return a;
}

/** Publish one message to each destination in [from, to) in batches. */
double publish_to(Transport &server, int from, int to)
{
    const double t0 = now_s();
    std::vector<std::pair<std::string, std::string>> batch;
    for (int i = from; i < to; ++i) {
        batch.emplace_back(agent_dest(i), body);
        if (batch.size() == 500 || i + 1 == to) {
            for (int32_t st : server.publish_batch(batch))
                if (st != TODD_COMMS_OK)
                    fail("publish_batch: status " + std::to_string(st));
            batch.clear();
        }
    }
    return now_s() - t0;
}

/** Destroy transports from `threads` threads at once. */
void stop_all(std::vector<Agent> &agents, int threads)
{
    std::atomic<size_t> next{0};
    std::vector<std::thread> ts;
    for (int k = 0; k < threads; ++k)
        ts.emplace_back([&] {
            for (size_t i; (i = next++) < agents.size();) {
                agents[i].sub.reset();
                agents[i].t.reset();
            }
        });
    for (auto &t : ts)
        t.join();
}

struct Figures {
    int n = 0;
    double probe_publish_s = 0, live_s = 0, task_publish_s = 0,
           task_deliver_s = 0, one_more_ms = 0, stop_s = 0;
    double conns_per = 0, threads_per = 0, rss_per_kib = 0, fds_per = 0;
    // NaN: not known (no broker process here, no jcmd).
    double broker_rss_before = NAN, broker_rss_after = NAN;
    double heap_before = NAN, heap_after = NAN;
    double broker_threads_before = NAN, broker_threads_after = NAN;
    size_t topics_ours = 0, topics_all = 0, groups_ours = 0, groups_all = 0;
    double idle_broker_cpu = NAN, idle_client_cpu = 0;
    double records_read = 0, skipped_per_agent = 0, amplification = 0,
           task_amplification = 0;
    int busiest_topic_dests = 0;
    std::vector<double> waves_s; // each wave's start -> all of it live
};

int fd_count()
{
    int n = 0;
    if (DIR *d = opendir("/proc/self/fd")) {
        while (readdir(d) != nullptr)
            ++n;
        closedir(d);
    }
    return n - 2;
}

Figures measure(const Broker &broker, pid_t jvm, int n)
{
    Figures f;
    f.n = n;
    const std::string prefix = fresh_prefix("kbf");
    auto opts = plugin_options(broker.bootstrap, prefix);
    Handle admin = admin_handle(broker.bootstrap);
    // The server keeps the routes it read when it sent the held messages:
    // re-reading them (DescribeConsumerGroups) while a starved run times
    // requests out hits librdkafka 2.0's use-after-free in coordinator
    // admin requests (confluentinc/librdkafka#4605) and aborts.
    auto server_opts = opts;
    server_opts["route_refresh_ms"] = "3600000";
    auto server = started_transport(server_opts);
    std::fprintf(stderr, "N=%d: prefix %s\n", n, prefix.c_str());

    // Before: the server is up, no agent exists.
    const int threads0 = thread_count(), conns0 = connections_to(broker.port),
              fds0 = fd_count();
    const long rss0 = status_field(0, "VmRSS");
    if (jvm != 0) {
        f.heap_before = heap_after_gc(jvm);
        f.broker_rss_before = status_field(jvm, "VmRSS") / 1024.0;
        f.broker_threads_before = double(status_field(jvm, "Threads"));
    }

    // Held messages, then the agents.
    f.probe_publish_s = publish_to(*server, 0, n + 3);
    // In waves of kWave: agents of a fleet do not all start in the same
    // millisecond, and a wave's time shows whether a join costs more as
    // the fleet grows.
    Tally tally(size_t(n) + 3);
    std::vector<Agent> agents;
    agents.reserve(size_t(n) + 3);
    const double t0 = now_s();
    for (int w = 0; w < n; w += kWave) {
        const double tw = now_s();
        const int end = std::min(n, w + kWave);
        for (int i = w; i < end; ++i) {
            agents.push_back(make_agent(opts, i, tally));
            agents.back().t->start();
        }
        if (!tally.wait_each(size_t(end), 1, 120s))
            fail("agents " + std::to_string(w) + ".." +
                 std::to_string(end - 1) +
                 " did not all get their held message within 120 s");
        f.waves_s.push_back(now_s() - tw);
    }
    f.live_s = now_s() - t0;
    std::fprintf(stderr, "N=%d: all live after %.2f s\n", n, f.live_s);

    // What the live fleet holds (printed as it comes: a starved run may
    // not reach the end).
    f.conns_per = double(connections_to(broker.port) - conns0) / n;
    f.threads_per = double(thread_count() - threads0) / n;
    f.fds_per = double(fd_count() - fds0) / n;
    f.rss_per_kib = double(status_field(0, "VmRSS") - rss0) / n;
    auto topics = list_topics(admin.get());
    auto groups = list_groups(admin.get());
    f.topics_all = topics.size();
    f.groups_all = groups.size();
    for (const auto &t : topics)
        f.topics_ours += t.rfind(prefix, 0) == 0;
    for (const auto &g : groups)
        f.groups_ours += g.rfind(prefix, 0) == 0;
    if (jvm != 0) {
        f.heap_after = heap_after_gc(jvm);
        f.broker_rss_after = status_field(jvm, "VmRSS") / 1024.0;
        f.broker_threads_after = double(status_field(jvm, "Threads"));
    }
    std::fprintf(stderr,
                 "N=%d: per agent %.2f connections, %.2f threads, %.2f fds, "
                 "%.0f KiB; %zu topics and %zu groups of ours; broker RSS "
                 "%.0f -> %.0f MiB, heap %.1f -> %.1f MiB\n",
                 n, f.conns_per, f.threads_per, f.fds_per, f.rss_per_kib,
                 f.topics_ours, f.groups_ours, f.broker_rss_before,
                 f.broker_rss_after, f.heap_before, f.heap_after);

    // The fleet idles: what it costs.
    const double c0 = cpu_seconds(0), b0 = jvm ? cpu_seconds(jvm) : 0,
                 w0 = now_s();
    std::this_thread::sleep_for(5s); // the measurement window
    const double window = now_s() - w0;
    f.idle_client_cpu = (cpu_seconds(0) - c0) / window * 100;
    if (jvm != 0)
        f.idle_broker_cpu = (cpu_seconds(jvm) - b0) / window * 100;
    std::fprintf(stderr,
                 "N=%d: idle, broker %.1f %%, this process %.1f %% "
                 "of a core\n",
                 n, f.idle_broker_cpu, f.idle_client_cpu);

    // One task to every agent.
    const double t1 = now_s();
    f.task_publish_s = publish_to(*server, 0, n);
    if (!tally.wait_each(size_t(n), 2, 120s))
        fail("not every agent got its task within 120 s");
    f.task_deliver_s = now_s() - t1;
    std::fprintf(stderr,
                 "N=%d: one task each, published in %.2f s, all "
                 "delivered after %.2f s\n",
                 n, f.task_publish_s, f.task_deliver_s);

    // Fetch amplification: every agent's group reads its whole topic from
    // the start (earliest: nothing was committed before it joined).
    std::map<std::string, int> dests; // topic -> agents on it
    for (int i = 0; i < n; ++i)
        ++dests[topic_of(prefix, agent_dest(i))];
    double read = 0, task_reads = 0;
    for (const auto &[topic, d] : dests) {
        int64_t records = 0;
        for (int64_t e : end_offsets(admin.get(), topic, kPartitions))
            records += e;
        read += double(d) * double(records);
        task_reads += double(d) * double(d); // one task per agent on it
        f.busiest_topic_dests = std::max(f.busiest_topic_dests, d);
    }
    f.records_read = read;
    f.amplification = read / (2.0 * n); // 2 records per agent were its own
    f.skipped_per_agent = (read - 2.0 * n) / n;
    f.task_amplification = task_reads / n;

    // One more agent while N run: its own join only.
    std::vector<double> more;
    for (int k = 0; k < 3; ++k) {
        const double ts = now_s();
        agents.push_back(make_agent(opts, n + k, tally));
        agents.back().t->start();
        if (!tally.wait_each(size_t(n + k + 1), 1, 60s))
            fail("agent " + std::to_string(n + k) + " not live within 60 s");
        more.push_back((now_s() - ts) * 1e3);
    }
    std::sort(more.begin(), more.end());
    f.one_more_ms = more[1];

    const double ts = now_s();
    stop_all(agents, 8);
    f.stop_s = now_s() - ts;
    server.reset();

    std::vector<std::string> gs;
    for (int i = 0; i < n + 3; ++i)
        gs.push_back(group_of(prefix, agent_dest(i)));
    delete_groups(admin.get(), gs);
    delete_topics(admin.get(), plugin_topics(prefix));
    return f;
}

void print(const std::vector<Figures> &fs, const std::string &broker)
{
    auto row = [&](const char *name, auto get, const char *fmt) {
        std::printf("%-46s", name);
        for (const auto &f : fs) {
            char b[64];
            double v = get(f);
            if (std::isnan(v))
                std::snprintf(b, sizeof b, "%s", "n/a");
            else
                std::snprintf(b, sizeof b, fmt, v);
            std::printf(" %14s", b);
        }
        std::printf("\n");
    };
    std::printf("\nbench-kafka-fleet: broker %s, %d topics x %d partitions\n",
                broker.c_str(), kTopics, kPartitions);
    std::printf("%-46s", "agents (plugin instances, one destination each)");
    for (const auto &f : fs)
        std::printf(" %14d", f.n);
    std::printf("\n");
    using F = const Figures &;
    row(
        "held message to each, published in (s)",
        [](F f) { return f.probe_publish_s; }, "%.2f");
    row(
        "start -> every agent has it (s)", [](F f) { return f.live_s; },
        "%.2f");
    row(
        "  first wave (<= 100 agents): start -> live (s)",
        [](F f) { return f.waves_s.front(); }, "%.2f");
    row(
        "  last wave (<= 100 agents): start -> live (s)",
        [](F f) { return f.waves_s.back(); }, "%.2f");
    row(
        "one more agent, start -> live (ms, median of 3)",
        [](F f) { return f.one_more_ms; }, "%.0f");
    row(
        "TCP connections to the broker, per agent",
        [](F f) { return f.conns_per; }, "%.2f");
    row(
        "threads, per agent", [](F f) { return f.threads_per; }, "%.2f");
    row(
        "file descriptors, per agent", [](F f) { return f.fds_per; }, "%.2f");
    row(
        "client RSS, per agent (KiB)", [](F f) { return f.rss_per_kib; },
        "%.0f");
    row(
        "topics on the broker: ours (all)",
        [](F f) { return double(f.topics_ours); }, "%.0f");
    row(
        "consumer groups: ours", [](F f) { return double(f.groups_ours); },
        "%.0f");
    row(
        "consumer groups: all on the broker",
        [](F f) { return double(f.groups_all); }, "%.0f");
    row(
        "broker RSS before (MiB)", [](F f) { return f.broker_rss_before; },
        "%.0f");
    row(
        "broker RSS with the fleet (MiB)",
        [](F f) { return f.broker_rss_after; }, "%.0f");
    row(
        "broker heap after GC before (MiB)", [](F f) { return f.heap_before; },
        "%.1f");
    row(
        "broker heap after GC with the fleet (MiB)",
        [](F f) { return f.heap_after; }, "%.1f");
    row(
        "broker heap per agent (KiB)",
        [](F f) { return (f.heap_after - f.heap_before) * 1024 / f.n; },
        "%.1f");
    row(
        "broker threads before", [](F f) { return f.broker_threads_before; },
        "%.0f");
    row(
        "broker threads with the fleet",
        [](F f) { return f.broker_threads_after; }, "%.0f");
    row(
        "idle fleet: broker CPU (% of one core)",
        [](F f) { return f.idle_broker_cpu; }, "%.1f");
    row(
        "idle fleet: this process's CPU (% of one core)",
        [](F f) { return f.idle_client_cpu; }, "%.1f");
    row(
        "one task each: published in (s)", [](F f) { return f.task_publish_s; },
        "%.2f");
    row(
        "one task each: publish -> all delivered (s)",
        [](F f) { return f.task_deliver_s; }, "%.2f");
    row(
        "agents on the busiest topic",
        [](F f) { return double(f.busiest_topic_dests); }, "%.0f");
    row(
        "records read by all agents' consumers",
        [](F f) { return f.records_read; }, "%.0f");
    row(
        "  of which skipped, per agent",
        [](F f) { return f.skipped_per_agent; }, "%.1f");
    row(
        "  records read per record delivered",
        [](F f) { return f.amplification; }, "%.1f");
    row(
        "the task round alone: records read per task",
        [](F f) { return f.task_amplification; }, "%.1f");
    row(
        "stop every agent, 8 threads (s)", [](F f) { return f.stop_s; },
        "%.2f");
}

} // namespace

int main(int argc, char **argv)
{
    std::vector<int> ns;
    for (int i = 1; i < argc; ++i) {
        char *end = nullptr;
        long v = std::strtol(argv[i], &end, 10);
        if (*end != '\0' || v < 1 || v > 20000) {
            std::fprintf(stderr,
                         "usage: bench-kafka-fleet N [N...]  (1 <= N <= "
                         "20000 agents)\n");
            return 2;
        }
        ns.push_back(int(v));
    }
    if (ns.empty())
        ns = {100, 300};
    raise_fd_limit(); // before a private broker starts: it inherits it
    int status = 0;
    auto broker = broker_for("bench-kafka-fleet", status);
    if (!broker)
        return status;
    const pid_t jvm =
        broker->pid != 0 ? broker->pid : listener_of(broker->port);
    std::printf("bench-kafka-fleet: broker %s (pid %s), load %s\n",
                broker->bootstrap.c_str(),
                jvm ? std::to_string(jvm).c_str() : "not found here",
                loadavg().c_str());
    std::fflush(stdout);
    std::vector<Figures> fs;
    try {
        for (int n : ns)
            fs.push_back(measure(*broker, jvm, n));
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench-kafka-fleet: %s\n", e.what());
        return 2;
    }
    print(fs, broker->bootstrap);
    std::printf("load at the end: %s\n", loadavg().c_str());
    return 0;
}
