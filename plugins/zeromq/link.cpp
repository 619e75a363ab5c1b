// SPDX-License-Identifier: Apache-2.0
// The ZeroMQ transport's link to the engine: the agent's DEALER, its I/O
// thread (reading, heartbeats, reconnecting, resending), and the engine's
// answers, which both roles handle.
#include "transport.hpp"

#include <algorithm>
#include <cstring>

namespace todd_zmq {

void ZmqTransport::wake_if_readable()
{
    // Whoever reads: the stand-in while it serves, else the I/O thread
    // (which also looks again when back from delivering).
    if (link_needs_reader())
        eventfd_kick(rescued_.load() ? rescue_fd_ : evfd_);
}

bool ZmqTransport::link_needs_reader()
{
    int ev = socket_events(dealer_);
    return (ev & ZMQ_POLLIN) != 0 ||
           (!sendq_.empty() && (ev & ZMQ_POLLOUT) != 0);
}

int ZmqTransport::link_send(const std::string_view *f, size_t n)
{
    return send_frames(dealer_, f, n);
}

void ZmqTransport::send_or_queue(const std::string_view *f, size_t n)
{
    if (f[0] != kAck)
        flush_held_acks();
    if (sendq_.empty()) {
        int e = link_send(f, n);
        if (e == 0)
            return;
        if (e != EAGAIN) {
            host().logf(TODD_COMMS_LOG_WARN, "send failed: %s",
                        zmq_strerror(e));
            return;
        }
    }
    sendq_.emplace_back(f, f + n);
}

void ZmqTransport::flush_held_acks()
{
    if (held_acks_.empty())
        return;
    std::string recs;
    recs.swap(held_acks_);
    std::string_view f[2] = {kAck, recs};
    send_or_queue(f, 2);
}

void ZmqTransport::flush_sendq()
{
    while (!sendq_.empty()) {
        auto &m = sendq_.front();
        std::string_view f[Frames::kMax];
        size_t n = std::min(m.size(), Frames::kMax);
        for (size_t i = 0; i < n; ++i)
            f[i] = m[i];
        int e = link_send(f, n);
        if (e == EAGAIN)
            return;
        sendq_.pop_front();
    }
}

void ZmqTransport::send_pub(const OutPub &p)
{
    PubFrames f(p);
    send_or_queue(f.f.data(), f.f.size());
}

void ZmqTransport::send_sub(const Sub &s)
{
    SubFrames f(s);
    send_or_queue(f.f.data(), f.f.size());
}

void ZmqTransport::send_hello()
{
    last_hello_ = now_ms();
    char b[8];
    put_u64(b, session_.load());
    std::string_view f[2] = {kHello, std::string_view(b, 8)};
    link_send(f, 2); // EAGAIN: not connected, retried later
}

void ZmqTransport::lost(const std::string &why)
{
    if (!welcomed_)
        return;
    welcomed_ = false;
    // Everything in flight belongs to the old session now: the engine
    // requeues it when we say HELLO again.
    session_.fetch_add(1, std::memory_order_acq_rel);
    sendq_.clear();
    held_acks_.clear(); // void in the new session
    lost_since_ = now_ms();
    failed_reported_ = false;
    host().logf(TODD_COMMS_LOG_WARN, "%s; reconnecting", why.c_str());
    host().state(TODD_COMMS_STATE_RECONNECTING, TODD_COMMS_E_UNAVAILABLE, why);
    send_hello();
}

void ZmqTransport::on_welcome(std::string_view body)
{
    if (body.size() != 16)
        return;
    uint64_t epoch = get_u64(body.data());
    uint64_t session = get_u64(body.data() + 8);
    if (session != session_.load() || welcomed_)
        return; // answer to an older HELLO
    welcomed_ = true;
    last_heard_ = now_ms();
    sendq_.clear();
    held_acks_.clear(); // void in the new session
    if (engine_epoch_ != 0 && epoch != engine_epoch_)
        host().logf(TODD_COMMS_LOG_INFO,
                    "engine at %s restarted: subscribing %zu "
                    "destinations again, resending %zu unconfirmed "
                    "publishes",
                    s_.endpoint.c_str(), io_subs_.size(),
                    inflight_.size() + outbox_.size());
    engine_epoch_ = epoch;
    for (auto &kv : io_subs_)
        send_sub(*kv.second);
    // Unconfirmed publishes may have been lost with the connection:
    // send them again (at-least-once), then the ones that waited.
    for (auto &p : outbox_)
        inflight_.push_back(std::move(p));
    outbox_.clear();
    {
        std::lock_guard<std::mutex> lk(mu_);
        inflight_.erase(std::remove_if(inflight_.begin(), inflight_.end(),
                                       [&](const OutPub &p) {
                                           return pending_.count(p.seq) == 0;
                                       }),
                        inflight_.end());
    }
    for (auto &p : inflight_)
        send_pub(p);
    host().state(TODD_COMMS_STATE_CONNECTED, TODD_COMMS_OK,
                 s_.server ? "engine on " + s_.endpoint : s_.endpoint);
}

void ZmqTransport::on_message(const Msgv &in)
{
    size_t n = in.count();
    if (n == 0 || n > Frames::kMax)
        return;
    last_heard_ = now_ms();
    std::string_view cmd = in.view(0);
    if (cmd == kDeliver) {
        if (n != 4 || in.size(1) != 20 || !welcomed_)
            return; // the engine requeues what we drop here
        const char *h = in.view(1).data();
        auto it = io_subs_.find(get_u64(h));
        if (it == io_subs_.end())
            return; // unsubscribed: requeued by the engine on UNSUB
        Sub &sub = *it->second;
        Item item;
        item.session = session_.load(std::memory_order_relaxed);
        item.tag = get_u64(h + 8);
        item.flags = get_u32(h + 16);
        item.ctype.assign(in.view(2));
        item.payload.assign(in.view(3));
        bool wake;
        {
            std::lock_guard<std::mutex> lk(sub.m);
            if (tl_collect != nullptr && !sub.closed && sub.q.empty() &&
                !sub.delivering &&
                (tl_collect->empty() ||
                 tl_collect->front().sub.get() == &sub)) {
                // The reader delivers it itself once it has read the
                // batch: no hand-off to the worker (later ones of the
                // same batch too, in order). One subscription per
                // batch, so that a handler that blocks holds up only
                // its own subscription: the others go to their workers.
                sub.inline_busy = true;
                tl_collect->push_back(Inline{it->second, std::move(item)});
                return;
            }
            wake = sub.q.empty() && !sub.inline_busy;
            sub.q.push_back(std::move(item));
        }
        if (wake)
            sub.cv.notify_one();
    } else if (cmd == kConfirm) {
        if (n != 2 || in.size(1) % 8 != 0)
            return;
        std::string_view recs = in.view(1);
        uint64_t last = 0;
        {
            std::lock_guard<std::mutex> lk(mu_);
            for (size_t off = 0; off < recs.size(); off += 8) {
                last = get_u64(recs.data() + off);
                complete_locked(last, TODD_COMMS_OK, {});
            }
        }
        while (!inflight_.empty() && inflight_.front().seq <= last)
            inflight_.pop_front();
    } else if (cmd == kNack) {
        if (n != 3 || in.size(1) != 12)
            return;
        uint64_t seq = get_u64(in.view(1).data());
        auto st =
            static_cast<todd_comms_status>(get_u32(in.view(1).data() + 8));
        if (st >= 0)
            st = TODD_COMMS_E_PROTOCOL;
        {
            std::lock_guard<std::mutex> lk(mu_);
            complete_locked(seq, st, in.view(2));
        }
        while (!inflight_.empty() && inflight_.front().seq <= seq)
            inflight_.pop_front();
    } else if (cmd == kWelcome) {
        if (n == 2)
            on_welcome(in.view(1));
    } else if (cmd == kWho) {
        lost("the engine at " + s_.endpoint + " no longer knows this instance");
    }
    // kHeartbeat: last_heard_ is enough.
}

void ZmqTransport::on_monitor(Frames &in)
{
    if (in.count() < 1 || in.size(0) < 6)
        return;
    const auto *p = reinterpret_cast<const unsigned char *>(in.view(0).data());
    uint16_t event = static_cast<uint16_t>(p[0] | (p[1] << 8));
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && !welcomed_)
        send_hello();
    else if (event == ZMQ_EVENT_DISCONNECTED)
        lost("lost the connection to the engine at " + s_.endpoint);
}

long ZmqTransport::next_timeout() const
{
    int64_t due = welcomed_ ? std::min(last_hb_ + s_.heartbeat_ms,
                                       last_heard_ + s_.heartbeat_timeout_ms)
                            : last_hello_ + s_.heartbeat_ms;
    if (!held_acks_.empty())
        due = std::min(due, held_since_ + kAckHoldMs);
    long t = static_cast<long>(std::max<int64_t>(0, due - now_ms()));
    // Refused sends wait for room: look again soon even if the
    // notification was taken by a caller.
    return sendq_.empty() ? t : std::min(t, 10L);
}

void ZmqTransport::on_timers()
{
    int64_t now = now_ms();
    if (!held_acks_.empty() && now - held_since_ >= kAckHoldMs)
        flush_held_acks();
    if (welcomed_) {
        if (now - last_heard_ > s_.heartbeat_timeout_ms) {
            lost("no answer from the engine at " + s_.endpoint + " for " +
                 std::to_string(now - last_heard_) + " ms");
        } else if (now - last_hb_ >= s_.heartbeat_ms) {
            last_hb_ = now;
            std::string_view f[1] = {kHeartbeat};
            link_send(f, 1);
        }
        return;
    }
    if (now - last_hello_ >= s_.heartbeat_ms)
        send_hello();
    if (!failed_reported_ && now - lost_since_ >= s_.publish_timeout_ms) {
        failed_reported_ = true;
        host().state(TODD_COMMS_STATE_FAILED, TODD_COMMS_E_UNAVAILABLE,
                     "no todd-server engine answers at " + s_.endpoint +
                         "; still trying");
    }
}

void ZmqTransport::io_run()
{
    zmq_pollitem_t items[3] = {{nullptr, zfd_, ZMQ_POLLIN, 0},
                               {nullptr, evfd_, ZMQ_POLLIN, 0},
                               {mon_, 0, ZMQ_POLLIN, 0}};
    int nitems = mon_ != nullptr ? 3 : 2;
    Frames in;
    long timeout;
    {
        std::lock_guard<std::mutex> lk(lm_);
        lost_since_ = now_ms();
        send_hello();
        timeout = 0;
    }
    while (!stop_io_.load()) {
        if (zmq_poll(items, nitems, timeout) < 0) {
            if (errno == EINTR)
                continue;
            host().logf(TODD_COMMS_LOG_ERROR, "poll failed: %s",
                        zmq_strerror(errno));
            break;
        }
        if (items[1].revents != 0)
            eventfd_drain(evfd_);
        if (stop_io_.load())
            break;
        bool more = false;
        {
            std::lock_guard<std::mutex> lk(lm_);
            if (!sendq_.empty())
                flush_sendq();
            tl_collect = &inline_;
            more = drain(dealer_, in, [this](const Msgv &m, const Frames &) {
                on_message(m);
            });
            tl_collect = nullptr;
            while (mon_ != nullptr && in.recv(mon_, ZMQ_DONTWAIT))
                on_monitor(in);
            on_timers();
            more = more || link_needs_reader();
            timeout = more ? 0 : next_timeout();
        }
        // The stand-in may have read meanwhile: look again at once.
        if (deliver_inline(inline_))
            timeout = 0;
    }
    {
        std::lock_guard<std::mutex> lk(lm_);
        if (welcomed_) {
            flush_held_acks();
            std::string_view f[1] = {kBye};
            link_send(f, 1);
        }
    }
    fail_pending();
}

} // namespace todd_zmq
