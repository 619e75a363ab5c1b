// SPDX-License-Identifier: Apache-2.0
#include <todd/agent/event_loop.hpp>
#include <todd/core/log.hpp>

#include <exception>

namespace todd::agent {

void EventLoop::post(std::function<void()> fn)
{
    {
        std::lock_guard lk(mu_);
        if (stopped_)
            return;
        queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
}

EventLoop::TimerId EventLoop::post_at(Clock::time_point when,
                                      std::function<void()> fn)
{
    TimerId id;
    {
        std::lock_guard lk(mu_);
        id = next_id_++;
        if (stopped_)
            return id;
        timers_.emplace(when, id);
        timer_fns_.emplace(id, std::move(fn));
    }
    cv_.notify_one();
    return id;
}

void EventLoop::cancel(TimerId id)
{
    std::lock_guard lk(mu_);
    timer_fns_.erase(id); // its entry in timers_ is skipped when it fires
}

void EventLoop::run()
{
    std::unique_lock lk(mu_);
    while (!stopped_) {
        std::function<void()> fn;
        if (!queue_.empty()) {
            fn = std::move(queue_.front());
            queue_.pop_front();
        } else if (!timers_.empty() && timers_.begin()->first <= Clock::now()) {
            TimerId id = timers_.begin()->second;
            timers_.erase(timers_.begin());
            auto it = timer_fns_.find(id);
            if (it == timer_fns_.end())
                continue;
            fn = std::move(it->second);
            timer_fns_.erase(it);
        } else if (!timers_.empty()) {
            // A copy: the node may be freed (cancel, stop) during the wait.
            const Clock::time_point next = timers_.begin()->first;
            cv_.wait_until(lk, next);
            continue;
        } else {
            cv_.wait(lk);
            continue;
        }
        lk.unlock();
        try {
            fn();
        } catch (const std::exception &e) {
            log::error("agent",
                       std::string("control task failed: ") + e.what());
        }
        lk.lock();
    }
}

void EventLoop::stop()
{
    {
        std::lock_guard lk(mu_);
        stopped_ = true;
        queue_.clear();
        timers_.clear();
        timer_fns_.clear();
    }
    cv_.notify_all();
}

} // namespace todd::agent
