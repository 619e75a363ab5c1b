// SPDX-License-Identifier: Apache-2.0
// Captures the core's log sink (plugin lines included, as "component:
// message") while alive, and restores the previous sink after. Lines at warn
// and above are also echoed to stderr, so a failing test's log shows them.
//
//   LogCapture logs;
//   ... code that logs ...
//   EXPECT_TRUE(logs.wait_for("rejecting an undecodable message"));
//   EXPECT_EQ(logs.count("gave up"), 1u);
#pragma once

#include "inbox.hpp"

#include <todd/core/log.hpp>

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace todd::test {

class LogCapture {
  public:
    LogCapture()
    {
        // Shared with the sink: a line being written on another thread
        // while this is destroyed still has somewhere to go.
        auto lines = lines_;
        prev_ = log::set_sink(
            [lines](log::Level l, std::string_view c, std::string_view m) {
                if (l <= log::Level::warn)
                    std::fprintf(stderr, "[log] %.*s: %.*s\n", int(c.size()),
                                 c.data(), int(m.size()), m.data());
                lines->push(std::string(c) + ": " + std::string(m));
            });
    }
    ~LogCapture() { log::set_sink(prev_); }
    LogCapture(const LogCapture &) = delete;
    LogCapture &operator=(const LogCapture &) = delete;

    /** Lines containing needle so far. */
    size_t count(std::string_view needle)
    {
        return lines_->count([&](const std::string &l) {
            return l.find(needle) != std::string::npos;
        });
    }
    /** Wait (bounded) until a line containing needle was logged. */
    bool wait_for(std::string_view needle,
                  std::chrono::milliseconds limit = default_wait)
    {
        return lines_
            ->wait_for(
                [&](const std::string &l) {
                    return l.find(needle) != std::string::npos;
                },
                limit)
            .has_value();
    }
    /** Every line so far. */
    std::vector<std::string> lines() { return lines_->all(); }
    /** Every line so far, each ended by a newline. */
    std::string text()
    {
        std::string out;
        for (const auto &l : lines_->all())
            out += l + "\n";
        return out;
    }

  private:
    std::shared_ptr<Inbox<std::string>> lines_ =
        std::make_shared<Inbox<std::string>>();
    log::Sink prev_;
};

} // namespace todd::test
