// SPDX-License-Identifier: Apache-2.0
// The connection states a transport reported, kept for the test thread to
// wait on (bounded) and look at.
//
//   StateLog states; // declared before the transport: it reports STOPPED
//   states.attach(*t);
//   size_t mark = states.size();
//   ... the broker goes away and comes back ...
//   ASSERT_TRUE(states.wait_state(LinkState::connected, mark));
#pragma once

#include <todd/core/transport.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace todd::test {

/** Every state change of the transports attached, in order. */
class StateLog {
  public:
    struct Entry {
        core::LinkState state;
        int32_t status;
        std::string detail;
    };
    /** Record every state t reports from now on; must outlive t. */
    void attach(core::Transport &t)
    {
        t.on_state([this](core::LinkState s, int32_t st, const std::string &d) {
            std::lock_guard g(m_);
            log_.push_back({s, st, d});
            cv_.notify_all();
        });
    }
    /** Wait until some entry at index `from` or later satisfies pred;
     *  that entry, or nullopt after limit. */
    template <class P>
    std::optional<Entry>
    wait(P pred, size_t from = 0,
         std::chrono::milliseconds limit = std::chrono::seconds(60))
    {
        std::unique_lock lk(m_);
        std::optional<Entry> hit;
        cv_.wait_for(lk, limit, [&] {
            for (size_t i = from; i < log_.size(); ++i)
                if (pred(log_[i])) {
                    hit = log_[i];
                    return true;
                }
            return false;
        });
        return hit;
    }
    /** wait() for an entry of state s. */
    std::optional<Entry>
    wait_state(core::LinkState s, size_t from = 0,
               std::chrono::milliseconds limit = std::chrono::seconds(60))
    {
        return wait([&](const Entry &e) { return e.state == s; }, from, limit);
    }
    /** Entries so far: a `from` for a later wait. */
    size_t size() const
    {
        std::lock_guard g(m_);
        return log_.size();
    }
    /** A copy of every entry so far. */
    std::vector<Entry> all() const
    {
        std::lock_guard g(m_);
        return log_;
    }
    /** How many entries are of state s. */
    size_t count(core::LinkState s) const
    {
        std::lock_guard g(m_);
        size_t n = 0;
        for (const auto &e : log_)
            n += e.state == s;
        return n;
    }
    /** The entries as "state(status) detail" lines, for failure messages. */
    std::string text() const
    {
        std::string out;
        for (const auto &e : all())
            out += std::string(core::to_string(e.state)) + "(" +
                   std::to_string(e.status) + ") " + e.detail + "\n";
        return out;
    }

  private:
    mutable std::mutex m_;
    std::condition_variable cv_;
    std::vector<Entry> log_;
};

} // namespace todd::test
