// SPDX-License-Identifier: Apache-2.0
// The ZeroMQ transport's caller side: publish and publish_batch wait for the
// engine's confirmations, which the reading thread completes.
#include "transport.hpp"

#include <chrono>

namespace todd_zmq {

std::string ZmqTransport::oversized(uint64_t len) const
{
    return "payload of " + std::to_string(len) +
           " bytes is over max_frame_bytes (" +
           std::to_string(s_.max_frame_bytes) + ")";
}

void ZmqTransport::publish(const char *destination, const uint8_t *payload,
                           uint64_t len, const todd_comms_publish_opts *opts)
{
    if (*destination == '\0')
        throw Error(TODD_COMMS_E_INVAL, "empty destination name");
    // The receiving side would drop the link over it: refuse it here.
    if (len > static_cast<uint64_t>(s_.max_frame_bytes))
        throw Error(TODD_COMMS_E_FULL, oversized(len));
    todd_comms_status st = kPendingStatus;
    Waiter w;
    w.remaining = 1;
    w.statuses = &st;
    OutPub p;
    p.ttl = todd::comms::sdk::ttl_ms(opts);
    p.dest = destination;
    p.ctype = todd::comms::sdk::content_type(opts);
    if (len != 0)
        p.payload.assign(reinterpret_cast<const char *>(payload),
                         static_cast<size_t>(len));
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(s_.publish_timeout_ms);
    {
        std::lock_guard<std::mutex> lk(mu_);
        check_running_locked();
        p.seq = ++next_seq_;
        pending_.emplace(p.seq, std::make_pair(&w, 0u));
    }
    uint64_t seq = p.seq;
    // The server's engine confirms before link_publish returns.
    bool sent = link_publish(&p, 1);
    need_reader();
    std::unique_lock<std::mutex> lk(mu_);
    if (!sent)
        complete_locked(seq, TODD_COMMS_E_STATE, "publish after stop");
    if (!w.cv.wait_until(lk, deadline, [&] { return w.remaining == 0; })) {
        pending_.erase(seq);
        throw Error(TODD_COMMS_E_UNAVAILABLE, unavailable(destination));
    }
    if (st != TODD_COMMS_OK)
        throw Error(st, w.error);
}

todd_comms_status ZmqTransport::publish_batch(const todd_comms_outgoing *msgs,
                                              uint32_t count,
                                              todd_comms_status *statuses)
{
    if (count == 0)
        return TODD_COMMS_OK;
    Waiter w;
    w.statuses = statuses;
    std::vector<OutPub> pubs;
    std::vector<uint32_t> index;
    pubs.reserve(count);
    index.reserve(count);
    for (uint32_t i = 0; i < count; ++i) {
        const todd_comms_outgoing &m = msgs[i];
        if (m.destination == nullptr || *m.destination == '\0' ||
            (m.payload == nullptr && m.payload_len != 0)) {
            statuses[i] = TODD_COMMS_E_INVAL;
            if (w.error.empty())
                w.error = "message " + std::to_string(i) +
                          " of the batch has no destination or payload";
            continue;
        }
        if (m.payload_len > static_cast<uint64_t>(s_.max_frame_bytes)) {
            statuses[i] = TODD_COMMS_E_FULL;
            if (w.error.empty())
                w.error = "message " + std::to_string(i) +
                          " of the batch: " + oversized(m.payload_len);
            continue;
        }
        statuses[i] = kPendingStatus;
        OutPub p;
        p.ttl = todd::comms::sdk::ttl_ms(m.opts);
        p.dest = m.destination;
        p.ctype = todd::comms::sdk::content_type(m.opts);
        if (m.payload_len != 0)
            p.payload.assign(reinterpret_cast<const char *>(m.payload),
                             static_cast<size_t>(m.payload_len));
        pubs.push_back(std::move(p));
        index.push_back(i);
    }
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(s_.publish_timeout_ms);
    std::vector<uint64_t> seqs;
    seqs.reserve(pubs.size());
    if (!pubs.empty()) {
        {
            std::lock_guard<std::mutex> lk(mu_);
            check_running_locked();
            w.remaining = static_cast<uint32_t>(pubs.size());
            for (size_t k = 0; k < pubs.size(); ++k) {
                pubs[k].seq = ++next_seq_;
                seqs.push_back(pubs[k].seq);
                pending_.emplace(pubs[k].seq, std::make_pair(&w, index[k]));
            }
        }
        bool sent = link_publish(pubs.data(), pubs.size());
        need_reader();
        std::unique_lock<std::mutex> lk(mu_);
        if (!sent)
            for (uint64_t q : seqs)
                complete_locked(q, TODD_COMMS_E_STATE, "publish after stop");
        if (!w.cv.wait_until(lk, deadline, [&] { return w.remaining == 0; })) {
            for (uint64_t q : seqs)
                pending_.erase(q);
            for (uint32_t i = 0; i < count; ++i)
                if (statuses[i] == kPendingStatus)
                    statuses[i] = TODD_COMMS_E_UNAVAILABLE;
            if (w.error.empty())
                w.error = unavailable("(batch)");
        }
    }
    todd_comms_status first = TODD_COMMS_OK;
    for (uint32_t i = 0; i < count && first == TODD_COMMS_OK; ++i)
        first = statuses[i];
    if (first != TODD_COMMS_OK)
        host().logf(TODD_COMMS_LOG_ERROR, "publish_batch: %s", w.error.c_str());
    return first;
}

std::string ZmqTransport::unavailable(const char *dest) const
{
    return "no confirmation for '" + std::string(dest) + "' within " +
           std::to_string(s_.publish_timeout_ms) + " ms: " +
           (s_.server ? "the in-process engine did not answer"
                      : "no todd-server engine reachable at " + s_.endpoint +
                            " (is todd-server running?)");
}

void ZmqTransport::check_running_locked()
{
    if (!started_)
        throw Error(TODD_COMMS_E_STATE, "publish before start");
    if (io_done_)
        throw Error(TODD_COMMS_E_STATE, "publish after stop");
}

bool ZmqTransport::link_publish(OutPub *pubs, size_t n)
{
    if (engine_) {
        std::vector<PubFrames> frames(pubs, pubs + n);
        std::vector<Msgv> msgs;
        msgs.reserve(n);
        for (const PubFrames &f : frames)
            msgs.push_back(Msgv{f.f.data(), f.f.size()});
        return engine_->client_send(msgs.data(), n);
    }
    std::lock_guard<std::mutex> lk(lm_);
    if (dealer_ == nullptr)
        return false;
    for (size_t i = 0; i < n; ++i) {
        if (welcomed_) {
            inflight_.push_back(std::move(pubs[i]));
            send_pub(inflight_.back());
        } else {
            outbox_.push_back(std::move(pubs[i]));
        }
    }
    wake_if_readable();
    return true;
}

void ZmqTransport::need_reader()
{
    if (!engine_ && tl_inline)
        eventfd_kick(rescue_fd_);
}

void ZmqTransport::complete_locked(uint64_t seq, todd_comms_status st,
                                   std::string_view text)
{
    auto it = pending_.find(seq);
    if (it == pending_.end())
        return; // the caller gave up
    Waiter *w = it->second.first;
    w->statuses[it->second.second] = st;
    if (st != TODD_COMMS_OK && w->error.empty())
        w->error.assign(text);
    pending_.erase(it);
    if (--w->remaining == 0)
        w->cv.notify_one();
}

void ZmqTransport::fail_pending()
{
    std::lock_guard<std::mutex> lk(mu_);
    io_done_ = true;
    for (auto &kv : pending_) {
        Waiter *w = kv.second.first;
        w->statuses[kv.second.second] = TODD_COMMS_E_UNAVAILABLE;
        if (w->error.empty())
            w->error = "transport stopped before the engine "
                       "confirmed the message";
        if (--w->remaining == 0)
            w->cv.notify_one();
    }
    pending_.clear();
}

} // namespace todd_zmq
