// SPDX-License-Identifier: Apache-2.0
// The server's task sender: one FIFO thread, so a slow or retrying
// transport never blocks the I/O thread, and one agent's tasks keep their
// order.
#pragma once

#include "server_metrics.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/log.hpp>
#include <todd/core/messages.hpp>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace todd::server {

/** Sends tasks in order on its own thread. */
class Sender {
  public:
    using OnError = std::function<void(const std::string &)>;
    Sender(core::Comms &comms, ServerMetrics &metrics)
        : comms_(comms), metrics_(metrics)
    {
        thread_ = std::thread([this] { run(); });
    }
    ~Sender() { stop(); }
    void push(std::string queue, msg::Task task, OnError on_error = {})
    {
        {
            std::lock_guard lk(mu_);
            if (stop_)
                return;
            q_.push_back(
                {std::move(queue), std::move(task), std::move(on_error)});
        }
        cv_.notify_one();
    }
    void stop()
    {
        {
            std::lock_guard lk(mu_);
            stop_ = true;
            q_.clear();
        }
        cv_.notify_one();
        if (thread_.joinable())
            thread_.join();
    }

  private:
    struct Item {
        std::string queue;
        msg::Task task;
        OnError on_error;
    };
    void run()
    {
        for (;;) {
            Item it;
            {
                std::unique_lock lk(mu_);
                cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
                if (stop_)
                    return;
                it = std::move(q_.front());
                q_.pop_front();
            }
            const std::string_view type = msg::type_name(it.task);
            try {
                comms_.send_task(it.queue, it.task);
                metrics_.task_sent(type);
                if (log::enabled(log::Level::debug))
                    log::debug("server",
                               "sent " + std::string(msg::type_name(it.task)) +
                                   " to " + it.queue);
            } catch (const std::exception &e) {
                std::string m = "sending " +
                                std::string(msg::type_name(it.task)) + " to " +
                                it.queue + " failed: " + e.what();
                log::error("server", m);
                metrics_.task_failed(type);
                if (it.on_error)
                    it.on_error(m);
            }
        }
    }
    core::Comms &comms_;
    ServerMetrics &metrics_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Item> q_;
    bool stop_ = false;
    std::thread thread_;
};

} // namespace todd::server
