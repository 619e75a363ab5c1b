// SPDX-License-Identifier: Apache-2.0
// Process-wide logging to stderr with levels. Thread-safe.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace todd::log {

/** Severity, most severe first; values match TODD_COMMS_LOG_*. */
enum class Level { error = 1, warn = 2, info = 3, debug = 4, trace = 5 };

/** Messages above this level are dropped (default: info). */
void set_level(Level level);
/** The current threshold. */
Level level();
/** True when a message at this level would be written. */
bool enabled(Level level);
/** Parse "error|warn|info|debug|trace"; throws std::invalid_argument. */
Level parse_level(std::string_view text);
/** Write one line: time, level, component, message. */
void write(Level level, std::string_view component, std::string_view message);

/** Receives every line that passes the level filter, instead of stderr. */
using Sink = std::function<void(Level, std::string_view component,
                                std::string_view message)>;
/** Install a sink (empty = stderr again); returns the previous one. Used by
 *  tests and tools that capture log lines. */
Sink set_sink(Sink sink);

inline void error(std::string_view c, std::string_view m)
{
    write(Level::error, c, m);
}
inline void warn(std::string_view c, std::string_view m)
{
    write(Level::warn, c, m);
}
inline void info(std::string_view c, std::string_view m)
{
    write(Level::info, c, m);
}
inline void debug(std::string_view c, std::string_view m)
{
    if (enabled(Level::debug))
        write(Level::debug, c, m);
}

} // namespace todd::log
