// SPDX-License-Identifier: Apache-2.0
// What the transport benchmarks (bench-kafka, bench-nats) share to compare
// a plugin with a raw client loop: CPU time, a counter to wait on, medians
// and spreads, and runs that alternate which side goes first.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

namespace benchpairs {

/** CPU seconds this process used so far (every thread: the benchmark's,
 *  the plugin's, the client library's; not the server's). */
inline double cpu_now()
{
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/** CPU microseconds per item of the last measurement (its timed part),
 *  set by each measurement. */
inline double last_cpu_us = 0;

/** Waits for a count reached on another thread. */
struct Counter {
    std::mutex m;
    std::condition_variable cv;
    uint64_t n = 0;
    void bump()
    {
        std::lock_guard g(m);
        ++n;
        cv.notify_all();
    }
    bool wait(uint64_t upto, std::chrono::milliseconds limit)
    {
        std::unique_lock lk(m);
        return cv.wait_for(lk, limit, [&] { return n >= upto; });
    }
};

inline double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

inline double percentile(std::vector<double> v, double q)
{
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, size_t(q * double(v.size())))];
}

/** "median (min..max)" with fmt for each, "-" for no value. */
inline std::string spread(const std::vector<double> &v, const char *fmt)
{
    if (v.empty())
        return "-";
    char b[128];
    auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    std::string f = std::string(fmt) + " (" + fmt + ".." + fmt + ")";
    std::snprintf(b, sizeof b, f.c_str(), median(v), *lo, *hi);
    return b;
}

/** One line of the table: a figure per run of each side. */
struct Row {
    Row(std::string n, const char *f, bool g = false)
        : name(std::move(n)), fmt(f), goal(g)
    {
    }
    std::string name;
    const char *fmt;
    bool goal; // plugin/raw of the medians >= 0.9
    std::vector<double> raw, plugin;
    std::vector<double> raw_cpu, plugin_cpu; // CPU us per item
};

/** Run raw and plugin `runs` times, alternating which goes first, each
 *  run's figure and CPU per item into row (and on stderr). */
template <class R, class P>
void pair_runs(int runs, const char *name, R raw, P plugin, Row &row)
{
    for (int r = 0; r < runs; ++r) {
        const bool raw_first = r % 2 == 0;
        for (int side = 0; side < 2; ++side) {
            const bool is_raw = (side == 0) == raw_first;
            double v = is_raw ? raw() : plugin();
            (is_raw ? row.raw : row.plugin).push_back(v);
            (is_raw ? row.raw_cpu : row.plugin_cpu).push_back(last_cpu_us);
            std::fprintf(stderr, "  %-22s run %d %-6s ", name, r + 1,
                         is_raw ? "raw" : "plugin");
            std::fprintf(stderr, row.fmt, v);
            std::fprintf(stderr, "  (%.1f us CPU each)\n", last_cpu_us);
        }
    }
}

} // namespace benchpairs
