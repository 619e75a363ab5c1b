// SPDX-License-Identifier: Apache-2.0
#include "broker.hpp"

#include <algorithm>
#include <optional>

namespace loopback {

Broker &Broker::shared()
{
    // Leaked: consumer threads of un-destroyed instances may still run while
    // static destructors do.
    static auto *b = new Broker;
    return *b;
}

Queue &Broker::queue(const std::string &name)
{
    auto it = queues_.find(name);
    if (it == queues_.end())
        it = queues_.emplace(name, std::make_unique<Queue>()).first;
    return *it->second;
}

void Queue::purge(Clock::time_point now)
{
    ready.erase(
        std::remove_if(ready.begin(), ready.end(),
                       [&](const Message &m) { return m.expires <= now; }),
        ready.end());
}

void Queue::pump()
{
    // The clock is read only for messages that can expire: it is costly.
    std::optional<Clock::time_point> now;
    while (!ready.empty() && !consumers.empty()) {
        const auto expires = ready.front().expires;
        if (expires != Clock::time_point::max() &&
            expires <= (now ? *now : *(now = Clock::now()))) {
            ready.pop_front();
            continue;
        }
        // Next consumer in round-robin order that has room.
        Consumer *taker = nullptr;
        for (size_t i = 0; i < consumers.size(); ++i) {
            Consumer *c = consumers[(next + i) % consumers.size()];
            if (c->buffer_.size() + (c->in_flight_ ? 1 : 0) < c->prefetch_) {
                taker = c;
                next = (next + i + 1) % consumers.size();
                break;
            }
        }
        if (taker == nullptr)
            return;
        taker->buffer_.push_back(std::move(ready.front()));
        ready.pop_front();
        taker->wake_.notify_one();
    }
}

todd_comms_status Broker::publish(const char *destination,
                                  const uint8_t *payload, uint64_t len,
                                  const char *content_type, int64_t ttl_ms,
                                  uint64_t max_ready)
{
    Message m;
    m.destination = destination;
    m.content_type = content_type;
    m.payload.assign(payload, payload + len);
    if (ttl_ms > 0)
        m.expires = Clock::now() + std::chrono::milliseconds(ttl_ms);

    std::lock_guard lock(mutex_);
    Queue &q = queue(m.destination);
    if (max_ready != 0 && q.ready.size() >= max_ready) {
        q.purge(Clock::now());
        if (q.ready.size() >= max_ready)
            return TODD_COMMS_E_FULL;
    }
    q.ready.push_back(std::move(m));
    q.pump();
    return TODD_COMMS_OK;
}

std::unique_ptr<Consumer> Broker::consume(const std::string &destination,
                                          uint32_t prefetch, DeliverFn fn)
{
    std::unique_ptr<Consumer> c;
    std::lock_guard lock(mutex_);
    Queue &q = queue(destination);
    c.reset(
        new Consumer(*this, q, std::max<uint32_t>(prefetch, 1), std::move(fn)));
    q.consumers.push_back(c.get());
    q.pump();
    return c;
}

size_t Broker::ready_count(const std::string &destination)
{
    std::lock_guard lock(mutex_);
    Queue &q = queue(destination);
    q.purge(Clock::now());
    return q.ready.size();
}

void Broker::drop_ready(const std::string &destination)
{
    std::lock_guard lock(mutex_);
    queue(destination).ready.clear();
}

Consumer::Consumer(Broker &b, Queue &q, uint32_t prefetch, DeliverFn fn)
    : broker_(b), queue_(q), prefetch_(prefetch), deliver_(std::move(fn))
{
    thread_ = std::thread([this] { run(); });
}

Consumer::~Consumer()
{
    cancel();
}

void Consumer::cancel()
{
    {
        std::lock_guard lock(broker_.mutex_);
        if (!cancelled_) {
            cancelled_ = true;
            auto &cs = queue_.consumers;
            cs.erase(std::remove(cs.begin(), cs.end(), this), cs.end());
            if (queue_.next >= cs.size())
                queue_.next = 0;
            // Prefetched but never delivered: back to the head, in order.
            while (!buffer_.empty()) {
                queue_.ready.push_front(std::move(buffer_.back()));
                buffer_.pop_back();
            }
            queue_.pump();
            wake_.notify_one();
        }
    }
    if (thread_.joinable())
        thread_.join(); // waits for a delivery in progress: quiescence
}

void Consumer::run()
{
    std::unique_lock lock(broker_.mutex_);
    for (;;) {
        wake_.wait(lock, [&] { return cancelled_ || !buffer_.empty(); });
        if (cancelled_)
            return;
        Message m = std::move(buffer_.front());
        buffer_.pop_front();
        in_flight_ = true;
        lock.unlock();
        // No lock held: the handler may publish, even to this queue.
        const int32_t verdict = deliver_(m);
        lock.lock();
        in_flight_ = false;
        if (verdict == TODD_COMMS_VERDICT_REQUEUE) {
            m.redelivered = true;
            queue_.ready.push_front(std::move(m));
        }
        // ACK and REJECT both forget the message: there is no dead-letter
        // queue.
        queue_.pump();
    }
}

} // namespace loopback
