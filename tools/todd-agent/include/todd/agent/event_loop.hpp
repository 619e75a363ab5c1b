// SPDX-License-Identifier: Apache-2.0
// A single-threaded work queue with timers: the agent's control thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>

namespace todd::agent {

class EventLoop {
  public:
    using Clock = std::chrono::steady_clock;
    using TimerId = uint64_t;

    /** Run fn on the loop thread, in order of posting. Thread-safe. */
    void post(std::function<void()> fn);
    /** Run fn at (or soon after) `when`; returns an id for cancel(). */
    TimerId post_at(Clock::time_point when, std::function<void()> fn);
    TimerId post_after(std::chrono::milliseconds delay,
                       std::function<void()> fn)
    {
        return post_at(Clock::now() + delay, std::move(fn));
    }
    /** Cancel a timer that has not fired yet (no-op otherwise). */
    void cancel(TimerId id);

    /** Run on the calling thread until stop(). Exceptions thrown by work
     *  items are logged and do not end the loop. */
    void run();
    /** Make run() return after the current item; pending work is dropped. */
    void stop();

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    std::multimap<Clock::time_point, TimerId> timers_;
    std::map<TimerId, std::function<void()>> timer_fns_;
    TimerId next_id_ = 1;
    bool stopped_ = false;
};

} // namespace todd::agent
