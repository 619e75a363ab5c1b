// SPDX-License-Identifier: Apache-2.0
// The ZeroMQ transport's deliveries: subscriptions and their workers, the
// deliveries the reading thread makes itself and the stand-in reader that
// takes over when one runs long, and the acks that settle them.
#include "transport.hpp"

#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include <cstring>

namespace todd_zmq {

void ZmqTransport::subscribe(const char *destination, uint64_t cookie,
                             const todd_comms_subscribe_opts *opts)
{
    if (stopped_)
        throw Error(TODD_COMMS_E_STATE, "subscribe after stop");
    if (subs_.count(cookie) != 0)
        throw Error(TODD_COMMS_E_INVAL, "cookie " + std::to_string(cookie) +
                                            " is already subscribed");
    auto sub = std::make_shared<Sub>();
    sub->id = ++next_sub_id_;
    sub->cookie = cookie;
    sub->dest = destination;
    uint32_t pf = todd::comms::sdk::prefetch(opts);
    sub->prefetch = pf != 0 ? pf : static_cast<uint32_t>(s_.prefetch);
    subs_.emplace(cookie, sub);
    if (!started_)
        return;
    start_worker(sub);
    {
        std::lock_guard<std::mutex> lk(lm_);
        io_subs_[sub->id] = sub;
        if (!engine_ && welcomed_) {
            send_sub(*sub);
            wake_if_readable();
        }
    }
    if (engine_)
        engine_sub(*sub);
}

void ZmqTransport::unsubscribe(uint64_t cookie)
{
    auto it = subs_.find(cookie);
    if (it == subs_.end())
        throw Error(TODD_COMMS_E_INVAL, "unknown subscription "
                                        "cookie " +
                                            std::to_string(cookie));
    std::shared_ptr<Sub> sub = it->second;
    subs_.erase(it);
    // The worker sends its acks before it ends; UNSUB follows them and
    // the engine requeues what the host never saw.
    stop_worker(*sub);
    if (!started_ || stopped_)
        return;
    char b[8];
    put_u64(b, sub->id);
    std::string_view f[2] = {kUnsub, std::string_view(b, 8)};
    {
        std::lock_guard<std::mutex> lk(lm_);
        io_subs_.erase(sub->id);
        if (!engine_ && welcomed_) {
            send_or_queue(f, 2);
            wake_if_readable();
        }
    }
    if (engine_) {
        Msgv m{f, 2};
        engine_->client_send(&m, 1);
    }
}

void ZmqTransport::link_ack(uint64_t session, const std::string &records,
                            bool hold)
{
    std::string_view f[2] = {kAck, records};
    if (engine_) {
        Msgv m{f, 2};
        engine_->client_send(&m, 1);
        return;
    }
    std::lock_guard<std::mutex> lk(lm_);
    // Acks of an older session are void: the engine requeued those.
    if (dealer_ == nullptr || !welcomed_ ||
        session != session_.load(std::memory_order_relaxed))
        return;
    if (hold) {
        if (held_acks_.empty())
            held_since_ = now_ms();
        held_acks_ += records;
        if (held_acks_.size() >= 32 * 9)
            flush_held_acks(); // the engine sends more as acks arrive
        return;
    }
    send_or_queue(f, 2);
    wake_if_readable();
}

void ZmqTransport::engine_sub(const Sub &sub)
{
    SubFrames f(sub);
    Msgv m{f.f.data(), f.f.size()};
    engine_->client_send(&m, 1);
}

void ZmqTransport::start_worker(const std::shared_ptr<Sub> &sub)
{
    sub->worker = std::thread([this, sub] { work(*sub); });
}

void ZmqTransport::stop_worker(Sub &sub)
{
    {
        std::unique_lock<std::mutex> lk(sub.m);
        sub.closed = true;
        // An inline delivery for it may be running on the reader.
        sub.cv.wait(lk, [&] { return !sub.inline_busy; });
    }
    sub.cv.notify_all();
    if (sub.worker.joinable())
        sub.worker.join();
}

int32_t ZmqTransport::deliver_item(const Sub &sub, const Item &it)
{
    todd_comms_message m;
    m.struct_size = sizeof m;
    m.flags = it.flags;
    m.destination = sub.dest.c_str();
    m.payload = reinterpret_cast<const uint8_t *>(it.payload.data());
    m.payload_len = it.payload.size();
    m.content_type = it.ctype.c_str();
    int32_t v = host().deliver(sub.cookie, m);
    if (v != TODD_COMMS_VERDICT_ACK && v != TODD_COMMS_VERDICT_REQUEUE &&
        v != TODD_COMMS_VERDICT_REJECT) {
        host().logf(TODD_COMMS_LOG_WARN,
                    "deliver returned unknown verdict %d; requeueing",
                    static_cast<int>(v));
        v = TODD_COMMS_VERDICT_REQUEUE;
    }
    return v;
}

void ZmqTransport::add_ack(Acks &a, const Item &it, int32_t v)
{
    if (it.session != a.session && !a.recs.empty()) {
        link_ack(a.session, a.recs);
        a.recs.clear();
    }
    a.session = it.session;
    char r[9];
    put_u64(r, it.tag);
    r[8] = static_cast<char>(v);
    a.recs.append(r, 9);
    // Settle in slices: the engine sends more as acks arrive.
    if (a.recs.size() >= 32 * 9)
        flush_acks(a);
}

void ZmqTransport::flush_acks(Acks &a, bool hold)
{
    if (!a.recs.empty()) {
        link_ack(a.session, a.recs, hold);
        a.recs.clear();
    }
}

void ZmqTransport::work(Sub &sub)
{
    std::deque<Item> batch;
    Acks acks;
    for (;;) {
        {
            std::unique_lock<std::mutex> lk(sub.m);
            sub.delivering = false;
            sub.cv.wait(lk, [&] {
                return sub.closed || (!sub.q.empty() && !sub.inline_busy);
            });
            if (sub.closed)
                return;
            batch.swap(sub.q);
            sub.delivering = true;
        }
        for (Item &it : batch) {
            if (sub.closed.load(std::memory_order_relaxed))
                break; // the engine requeues the rest on UNSUB
            if (it.session != session_.load(std::memory_order_acquire))
                continue; // requeued by the engine when we reconnected
            add_ack(acks, it, deliver_item(sub, it));
        }
        flush_acks(acks);
        batch.clear();
    }
}

bool ZmqTransport::deliver_inline(std::vector<Inline> &list)
{
    if (list.empty())
        return false;
    inline_seq_.fetch_add(1);
    primary_inline_.store(true);
    {
        std::lock_guard<std::mutex> lk(tick_m_);
        if (!ticking_) {
            itimerspec t{};
            t.it_value.tv_nsec = kWatchdogTickNs;
            t.it_interval.tv_nsec = kWatchdogTickNs;
            timerfd_settime(timer_fd_, 0, &t, nullptr);
            ticking_ = true;
        }
    }
    tl_inline = true;
    Acks acks;
    for (Inline &x : list) {
        if (x.sub->closed.load() ||
            x.item.session != session_.load(std::memory_order_acquire))
            continue; // the engine requeues it (UNSUB, new session)
        add_ack(acks, x.item, deliver_item(*x.sub, x.item));
    }
    flush_acks(acks, !engine_);
    tl_inline = false;
    primary_inline_.store(false);
    if (rescued_.exchange(false))
        eventfd_kick(rescue_fd_); // the stand-in goes back to sleep
    for (Inline &x : list) {
        Sub &sub = *x.sub;
        std::lock_guard<std::mutex> lk(sub.m);
        if (sub.inline_busy) {
            sub.inline_busy = false;
            sub.cv.notify_all(); // its worker, or stop_worker
        }
    }
    list.clear();
    return true;
}

void ZmqTransport::rescue_run()
{
    Frames in;
    uint64_t seen = 0; // inline_seq_ at the previous tick
    for (;;) {
        zmq_pollitem_t items[2] = {{nullptr, timer_fd_, ZMQ_POLLIN, 0},
                                   {nullptr, rescue_fd_, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, -1) < 0 && errno != EINTR)
            return;
        if (stop_rescue_.load())
            return;
        bool asked = items[1].revents != 0;
        if (asked)
            eventfd_drain(rescue_fd_);
        if (items[0].revents != 0) {
            eventfd_drain(timer_fd_);
            uint64_t seq = inline_seq_.load();
            bool same = seq == seen;
            seen = seq;
            if (same && !primary_inline_.load()) {
                // A whole tick without deliveries: stop ticking.
                std::lock_guard<std::mutex> lk(tick_m_);
                if (inline_seq_.load() == seq && !primary_inline_.load()) {
                    itimerspec off{};
                    timerfd_settime(timer_fd_, 0, &off, nullptr);
                    ticking_ = false;
                }
                continue;
            }
            // The same delivery as a tick ago is still running.
            asked = asked || same;
        }
        if (!asked || !primary_inline_.load())
            continue;
        rescued_.store(true);
        while (primary_inline_.load() && !stop_rescue_.load()) {
            if (engine_)
                engine_->poll_once(100, rescue_fd_);
            else
                serve_once(in);
            eventfd_drain(rescue_fd_);
        }
        // A kick meant for whoever reads may have come here as the
        // primary returned: let it look again.
        rescued_.store(false);
        if (!engine_)
            eventfd_kick(evfd_);
    }
}

void ZmqTransport::serve_once(Frames &in)
{
    long timeout;
    {
        std::lock_guard<std::mutex> lk(lm_);
        if (dealer_ == nullptr)
            return;
        timeout = std::min(next_timeout(), 100L);
    }
    zmq_pollitem_t items[2] = {{nullptr, zfd_, ZMQ_POLLIN, 0},
                               {nullptr, rescue_fd_, ZMQ_POLLIN, 0}};
    if (zmq_poll(items, 2, timeout) < 0)
        return;
    std::lock_guard<std::mutex> lk(lm_);
    if (dealer_ == nullptr)
        return;
    if (!sendq_.empty())
        flush_sendq();
    drain(dealer_, in,
          [this](const Msgv &m, const Frames &) { on_message(m); });
    on_timers();
    eventfd_kick(evfd_); // the primary looks again when it is back
}

void ZmqTransport::start_rescue()
{
    rescue_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (rescue_fd_ < 0 || timer_fd_ < 0)
        throw Error(TODD_COMMS_E_INTERNAL,
                    std::string("eventfd/timerfd: ") + std::strerror(errno));
    rescue_ = std::thread([this] { rescue_run(); });
}

void ZmqTransport::stop_rescue()
{
    if (rescue_.joinable()) {
        stop_rescue_.store(true);
        eventfd_kick(rescue_fd_);
        rescue_.join();
    }
    close_fd(rescue_fd_);
    close_fd(timer_fd_);
}

bool ZmqTransport::batch_end()
{
    tl_collect = nullptr;
    return deliver_inline(inline_);
}

void ZmqTransport::on_engine_message(const Msgv &m)
{
    std::lock_guard<std::mutex> lk(lm_);
    on_message(m);
}

} // namespace todd_zmq
