// SPDX-License-Identifier: Apache-2.0
#include <todd/core/log.hpp>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <sys/time.h>

namespace todd::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::info)};

// One mutex for the sink and for stderr, so lines never interleave. The
// sink pointer is shared so a sink being replaced is not destroyed while a
// writer is still calling it.
std::mutex &mutex()
{
    static auto *m = new std::mutex; // leaked: usable from static destructors
    return *m;
}
std::shared_ptr<Sink> &sink_slot()
{
    static auto *s = new std::shared_ptr<Sink>;
    return *s;
}

const char *level_name(Level l)
{
    switch (l) {
    case Level::error: return "ERROR";
    case Level::warn: return "WARN";
    case Level::info: return "INFO";
    case Level::debug: return "DEBUG";
    case Level::trace: return "TRACE";
    }
    return "?";
}

} // namespace

void set_level(Level level)
{
    g_level.store(static_cast<int>(level));
}

Level level()
{
    return static_cast<Level>(g_level.load());
}

bool enabled(Level l)
{
    return static_cast<int>(l) <= g_level.load(std::memory_order_relaxed);
}

Level parse_level(std::string_view text)
{
    if (text == "error")
        return Level::error;
    if (text == "warn" || text == "warning")
        return Level::warn;
    if (text == "info")
        return Level::info;
    if (text == "debug")
        return Level::debug;
    if (text == "trace")
        return Level::trace;
    throw std::invalid_argument(
        "unknown log level '" + std::string(text) +
        "' (expected error, warn, info, debug or trace)");
}

Sink set_sink(Sink sink)
{
    std::lock_guard lock(mutex());
    auto &slot = sink_slot();
    Sink previous = slot ? *slot : Sink{};
    slot = sink ? std::make_shared<Sink>(std::move(sink)) : nullptr;
    return previous;
}

void write(Level l, std::string_view component, std::string_view message)
{
    if (!enabled(l))
        return;
    std::shared_ptr<Sink> sink;
    {
        std::lock_guard lock(mutex());
        sink = sink_slot();
    }
    if (sink) {
        // Called outside the lock: a sink may log or take its own locks.
        try {
            (*sink)(l, component, message);
        } catch (...) {
            // A failing sink must not take the caller down (this runs inside
            // plugin callbacks).
        }
        return;
    }
    timeval tv{};
    gettimeofday(&tv, nullptr);
    tm t{};
    gmtime_r(&tv.tv_sec, &t);
    char stamp[96];
    std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                  t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour,
                  t.tm_min, t.tm_sec, static_cast<int>(tv.tv_usec / 1000));
    std::string line;
    line.reserve(48 + component.size() + message.size());
    line += stamp;
    line += ' ';
    line += level_name(l);
    line += ' ';
    line += component;
    line += ": ";
    line += message;
    if (line.empty() || line.back() != '\n')
        line += '\n';
    std::lock_guard lock(mutex());
    std::fwrite(line.data(), 1, line.size(), stderr);
}

} // namespace todd::log
