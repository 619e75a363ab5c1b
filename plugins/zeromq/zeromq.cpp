// SPDX-License-Identifier: Apache-2.0
// The embedded, brokerless transport. Every instance talks to the queue
// engine through one DEALER socket; the server-role instance also runs the
// engine (engine.cpp) and calls it directly. Callers send on the socket
// themselves, under a lock, instead of handing work to another thread: on a
// small machine every thread wake-up costs more than the rest of a round
// trip. For the same reason the thread that reads a delivery (agent I/O
// thread, server engine thread) makes it itself when the subscription is
// idle; otherwise the subscription's worker thread does. A stand-in thread
// takes over reading when such a delivery runs long, so a blocked deliver
// holds up publishing, other subscriptions and heartbeats two watchdog ticks
// at most.
// docs/zeromq.md describes the design and the differences from RabbitMQ.
#include "engine.hpp"
#include "keys.hpp"
#include "wire.hpp"

#include <todd/comms/sdk.hpp>

#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace todd_zmq {
namespace {

using todd::comms::sdk::Config;
using todd::comms::sdk::Error;
using todd::comms::sdk::Host;

constexpr todd_comms_status kPendingStatus = 1; // not a valid status

// The defaults are the key table's (keys.hpp): the host fills them in.
struct Settings {
    bool server = false;
    std::string endpoint;
    long long publish_timeout_ms = 0;
    long long max_held = 0;
    long long prefetch = 0;
    long long heartbeat_ms = 0;
    long long heartbeat_timeout_ms = 0;
    long long max_frame_bytes = 0;
};

long long positive(const Config &c, const char *key)
{
    long long v = c.integer(key, key_default_int(key));
    if (v <= 0 || v > 2147483647LL)
        throw Error(TODD_COMMS_E_CONFIG,
                    std::string("configuration key '") + key +
                        "' must be a positive integer, not " +
                        std::to_string(v));
    return v;
}

Settings parse(const Config &c)
{
    Settings s;
    std::string role = c.str("role", key_default("role"));
    if (role != "server" && role != "agent")
        throw Error(TODD_COMMS_E_CONFIG,
                    "configuration key 'role' must be 'server' or 'agent', "
                    "not '" +
                        role + "'");
    s.server = role == "server";
    s.endpoint = c.str("endpoint", key_default("endpoint"));
    if (s.endpoint.find("://") == std::string::npos)
        throw Error(TODD_COMMS_E_CONFIG,
                    std::string("configuration key 'endpoint' is not a "
                                "ZeroMQ address (e.g. ") +
                        key_default("endpoint") + "): '" + s.endpoint + "'");
    if (!s.server && (s.endpoint.find('*') != std::string::npos ||
                      s.endpoint.find("0.0.0.0") != std::string::npos))
        throw Error(TODD_COMMS_E_CONFIG,
                    "role=agent cannot connect to the wildcard endpoint '" +
                        s.endpoint + "': give the server's address");
    s.publish_timeout_ms = positive(c, "publish_timeout_ms");
    s.max_held = positive(c, "max_held");
    s.prefetch = positive(c, "prefetch");
    s.heartbeat_ms = positive(c, "heartbeat_ms");
    s.heartbeat_timeout_ms = positive(c, "heartbeat_timeout_ms");
    s.max_frame_bytes = positive(c, "max_frame_bytes");
    if (s.heartbeat_timeout_ms <= s.heartbeat_ms)
        throw Error(TODD_COMMS_E_CONFIG,
                    "configuration key 'heartbeat_timeout_ms' (" +
                        std::to_string(s.heartbeat_timeout_ms) +
                        ") must exceed 'heartbeat_ms' (" +
                        std::to_string(s.heartbeat_ms) + ")");
    return s;
}

void setopt_int(void *s, int opt, int v)
{
    zmq_setsockopt(s, opt, &v, sizeof v);
}

/** One delivery waiting for its subscription's worker. */
struct Item {
    uint64_t session = 0;
    uint64_t tag = 0;
    uint32_t flags = 0;
    std::string ctype;
    std::string payload;
};

struct Sub {
    uint64_t id = 0;
    uint64_t cookie = 0;
    std::string dest;
    uint32_t prefetch = 0;
    std::mutex m;
    std::condition_variable cv;
    std::deque<Item> q;
    bool delivering = false;  // the worker is delivering a batch
    bool inline_busy = false; // the reading thread is delivering for it
    std::atomic<bool> closed{false};
    std::thread worker;
};

/** A delivery the reading thread makes itself, saving a thread hop. */
struct Inline {
    std::shared_ptr<Sub> sub;
    Item item;
};

// Set while this thread reads a batch as its instance's primary reader:
// deliveries for idle subscriptions are collected here.
thread_local std::vector<Inline> *tl_collect = nullptr;
// Set while this thread makes those deliveries.
thread_local bool tl_inline = false;

// While deliveries run on the reading thread, a watchdog ticks this often;
// a delivery still running after a whole tick hands the link to the
// stand-in reader (so within one to two ticks). Arming a timer for each
// delivery would cost more than the hop it saves (on a VM, ~20 us), and
// a shorter tick shows in the round trip's p99 (20 ms: +20-30 us).
constexpr long kWatchdogTickNs = 100'000'000;

// How long acks of deliveries made on the agent's I/O thread may wait for a
// message to travel with (flush_held_acks).
constexpr int64_t kAckHoldMs = 1;

/** A caller waiting in publish or publish_batch; lives on its stack. */
struct Waiter {
    std::condition_variable cv;
    uint32_t remaining = 0;
    todd_comms_status *statuses = nullptr;
    std::string error; // first failure's text
};

struct OutPub {
    uint64_t seq = 0;
    int64_t ttl = 0;
    std::string dest, ctype, payload;
};

/** A PUB command's frames, pointing into its own header and the OutPub. */
struct PubFrames {
    explicit PubFrames(const OutPub &p)
    {
        put_u64(h.data(), p.seq);
        put_u64(h.data() + 8, static_cast<uint64_t>(p.ttl));
        f = {kPub, std::string_view(h.data(), h.size()), p.dest, p.ctype,
             p.payload};
    }
    PubFrames(const PubFrames &) = delete; // f points into h
    PubFrames &operator=(const PubFrames &) = delete;
    std::array<char, 16> h;
    std::array<std::string_view, 5> f;
};

/** A SUB command's frames, pointing into its own header and the Sub. */
struct SubFrames {
    explicit SubFrames(const Sub &s)
    {
        put_u64(h.data(), s.id);
        put_u32(h.data() + 8, s.prefetch);
        f = {kSub, std::string_view(h.data(), h.size()), s.dest};
    }
    SubFrames(const SubFrames &) = delete; // f points into h
    SubFrames &operator=(const SubFrames &) = delete;
    std::array<char, 12> h;
    std::array<std::string_view, 3> f;
};

std::string random_id(char prefix)
{
    std::random_device rd;
    std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                        static_cast<uint64_t>(now_ms()));
    char buf[32];
    std::snprintf(buf, sizeof buf, "%c%013llx", prefix,
                  static_cast<unsigned long long>(gen() & 0xfffffffffffffULL));
    return buf;
}

class ZmqTransport : public todd::comms::sdk::Transport, private LocalClient {
  public:
    ZmqTransport(const Host &host, const Config &cfg)
        : Transport(host, cfg), s_(parse(cfg)),
          rid_(random_id(s_.server ? 's' : 'a'))
    {
    }

    ~ZmqTransport() override
    {
        try {
            stop();
        } catch (...) {
        }
    }

    void start() override
    {
        if (started_)
            throw Error(TODD_COMMS_E_STATE, "already started");
        host().state(TODD_COMMS_STATE_CONNECTING, TODD_COMMS_OK,
                     s_.server ? "engine on " + s_.endpoint : s_.endpoint);
        ctx_ = zmq_ctx_new();
        if (ctx_ == nullptr)
            throw Error(TODD_COMMS_E_INTERNAL,
                        std::string("zmq_ctx_new: ") + zmq_strerror(errno));
        try {
            open_sockets();
            if (!engine_) {
                size_t len = sizeof zfd_;
                zmq_getsockopt(dealer_, ZMQ_FD, &zfd_, &len);
            }
            start_rescue();
        } catch (...) {
            stop_rescue();
            close_sockets();
            throw;
        }
        started_ = true;
        {
            // Subscriptions made before start: an agent sends them once
            // welcomed, the server right below.
            std::lock_guard<std::mutex> lk(lm_);
            for (auto &kv : subs_)
                io_subs_[kv.second->id] = kv.second;
        }
        if (engine_) {
            welcomed_ = true;
            engine_->start();
            for (auto &kv : subs_)
                engine_sub(*kv.second);
            host().state(TODD_COMMS_STATE_CONNECTED, TODD_COMMS_OK,
                         "engine on " + s_.endpoint);
        } else {
            io_ = std::thread([this] { io_run(); });
        }
        for (auto &kv : subs_)
            start_worker(kv.second);
    }

    void stop() override
    {
        if (stopped_)
            return;
        stopped_ = true;
        if (!started_) {
            host().state(TODD_COMMS_STATE_STOPPED, TODD_COMMS_OK, {});
            return;
        }
        // Deliveries first: a deliver may still publish, which needs the
        // I/O thread (agent) or the engine (server) to be confirmed.
        for (auto &kv : subs_)
            stop_worker(*kv.second);
        // No inline delivery runs any more: the stand-in is not needed.
        stop_rescue();
        if (engine_) {
            engine_->stop();
            fail_pending();
        } else {
            stop_io_.store(true);
            eventfd_kick(evfd_);
            if (io_.joinable())
                io_.join();
        }
        close_sockets();
        host().state(TODD_COMMS_STATE_STOPPED, TODD_COMMS_OK, {});
    }

    std::string oversized(uint64_t len) const
    {
        return "payload of " + std::to_string(len) +
               " bytes is over max_frame_bytes (" +
               std::to_string(s_.max_frame_bytes) + ")";
    }

    void publish(const char *destination, const uint8_t *payload, uint64_t len,
                 const todd_comms_publish_opts *opts) override
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

    todd_comms_status publish_batch(const todd_comms_outgoing *msgs,
                                    uint32_t count,
                                    todd_comms_status *statuses) override
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
                    complete_locked(q, TODD_COMMS_E_STATE,
                                    "publish after stop");
            if (!w.cv.wait_until(lk, deadline,
                                 [&] { return w.remaining == 0; })) {
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
            host().logf(TODD_COMMS_LOG_ERROR, "publish_batch: %s",
                        w.error.c_str());
        return first;
    }

    void subscribe(const char *destination, uint64_t cookie,
                   const todd_comms_subscribe_opts *opts) override
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

    void unsubscribe(uint64_t cookie) override
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

  private:
    // ---- caller side -----------------------------------------------------

    std::string unavailable(const char *dest) const
    {
        return "no confirmation for '" + std::string(dest) + "' within " +
               std::to_string(s_.publish_timeout_ms) + " ms: " +
               (s_.server ? "the in-process engine did not answer"
                          : "no todd-server engine reachable at " +
                                s_.endpoint + " (is todd-server running?)");
    }

    void check_running_locked()
    {
        if (!started_)
            throw Error(TODD_COMMS_E_STATE, "publish before start");
        if (io_done_)
            throw Error(TODD_COMMS_E_STATE, "publish after stop");
    }

    /**
     * Hand publishes to the engine: over the DEALER, or (server) a direct
     * call that also confirms them. False when the link is already closed.
     * Called without mu_ or lm_ held.
     */
    bool link_publish(OutPub *pubs, size_t n)
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

    /**
     * Agent: a publisher is about to wait for its confirmation. Made from
     * inside a delivery on the I/O thread, nobody would read it until the
     * watchdog's next ticks: wake the stand-in now. (Other threads wait for
     * the I/O thread to be back, or for the watchdog.)
     */
    void need_reader()
    {
        if (!engine_ && tl_inline)
            eventfd_kick(rescue_fd_);
    }

    /** Settle deliveries: records of (tag u64, verdict u8). hold: made on
     *  the agent's I/O thread, which sends them by kAckHoldMs. */
    void link_ack(uint64_t session, const std::string &records,
                  bool hold = false)
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

    /** Server: subscribe the engine's local client (lm_ not held). */
    void engine_sub(const Sub &sub)
    {
        SubFrames f(sub);
        Msgv m{f.f.data(), f.f.size()};
        engine_->client_send(&m, 1);
    }

    /**
     * Agent, lm_ held, after using the DEALER: that may have consumed the
     * notification the I/O thread sleeps on, so pass it on when input
     * waits (or output can go).
     */
    void wake_if_readable()
    {
        // Whoever reads: the stand-in while it serves, else the I/O thread
        // (which also looks again when back from delivering).
        if (link_needs_reader())
            eventfd_kick(rescued_.load() ? rescue_fd_ : evfd_);
    }

    /** Agent, lm_ held: input waits, or refused sends can go now. */
    bool link_needs_reader()
    {
        int ev = socket_events(dealer_);
        return (ev & ZMQ_POLLIN) != 0 ||
               (!sendq_.empty() && (ev & ZMQ_POLLOUT) != 0);
    }

    void start_worker(const std::shared_ptr<Sub> &sub)
    {
        sub->worker = std::thread([this, sub] { work(*sub); });
    }

    void stop_worker(Sub &sub)
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

    int32_t deliver_item(const Sub &sub, const Item &it)
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

    /** Collects ack records and sends them in slices. */
    struct Acks {
        std::string recs;
        uint64_t session = 0;
    };

    void add_ack(Acks &a, const Item &it, int32_t v)
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

    void flush_acks(Acks &a, bool hold = false)
    {
        if (!a.recs.empty()) {
            link_ack(a.session, a.recs, hold);
            a.recs.clear();
        }
    }

    void work(Sub &sub)
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

    /**
     * The primary reader (agent I/O thread, server engine thread), with no
     * lock held: make the deliveries it collected. A stand-in reads the
     * link if one of them takes long (or a publisher needs its confirm).
     */
    bool deliver_inline(std::vector<Inline> &list)
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

    /**
     * The stand-in reader (and watchdog). Sleeps until a delivery made by
     * the primary reader is still running after a whole watchdog tick, or a
     * publisher needs confirmations read meanwhile; then serves the link
     * until the primary is back, so that publishing, other subscriptions and
     * heartbeats wait for a blocked host handler two ticks at most.
     */
    void rescue_run()
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

    /** Agent stand-in: one round of reading and timers. */
    void serve_once(Frames &in)
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

    void start_rescue()
    {
        rescue_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (rescue_fd_ < 0 || timer_fd_ < 0)
            throw Error(TODD_COMMS_E_INTERNAL,
                        std::string("eventfd/timerfd: ") +
                            std::strerror(errno));
        rescue_ = std::thread([this] { rescue_run(); });
    }

    void stop_rescue()
    {
        if (rescue_.joinable()) {
            stop_rescue_.store(true);
            eventfd_kick(rescue_fd_);
            rescue_.join();
        }
        close_fd(rescue_fd_);
        close_fd(timer_fd_);
    }

    // Server: the engine thread collects deliveries while it reads...
    void batch_begin() override { tl_collect = &inline_; }
    // ... and makes them once it has let go of the engine.
    bool batch_end() override
    {
        tl_collect = nullptr;
        return deliver_inline(inline_);
    }

    // ---- sockets ------------------------------------------------------------

    void open_sockets()
    {
        if (s_.server) {
            EngineSettings es;
            es.endpoint = s_.endpoint;
            es.max_held = s_.max_held;
            es.heartbeat_ms = s_.heartbeat_ms;
            es.heartbeat_timeout_ms = s_.heartbeat_timeout_ms;
            es.max_frame_bytes = s_.max_frame_bytes;
            LocalClient *self = this;
            engine_ = std::make_unique<Engine>(ctx_, es, host(), self);
            engine_->bind();
            return;
        }
        dealer_ = zmq_socket(ctx_, ZMQ_DEALER);
        if (dealer_ == nullptr)
            throw Error(TODD_COMMS_E_INTERNAL,
                        std::string("zmq_socket(DEALER): ") +
                            zmq_strerror(errno));
        zmq_setsockopt(dealer_, ZMQ_ROUTING_ID, rid_.data(), rid_.size());
        // Queue nothing on a connection that is not up: while the engine
        // is away publishes wait here, where they can time out.
        setopt_int(dealer_, ZMQ_IMMEDIATE, 1);
        setopt_int(dealer_, ZMQ_LINGER, 200);
        setopt_int(dealer_, ZMQ_SNDHWM, 100000);
        setopt_int(dealer_, ZMQ_RECONNECT_IVL, 100);
        setopt_int(dealer_, ZMQ_RECONNECT_IVL_MAX, 1000);
        setopt_int(dealer_, ZMQ_HEARTBEAT_IVL,
                   static_cast<int>(s_.heartbeat_ms));
        setopt_int(dealer_, ZMQ_HEARTBEAT_TIMEOUT,
                   static_cast<int>(s_.heartbeat_timeout_ms));
        set_max_message(dealer_, s_.max_frame_bytes);
        // Connection events let a reconnect be noticed at once.
        const char *mon = "inproc://todd-zeromq-monitor";
        if (zmq_socket_monitor(dealer_, mon,
                               ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                   ZMQ_EVENT_DISCONNECTED) == 0) {
            mon_ = zmq_socket(ctx_, ZMQ_PAIR);
            if (mon_ != nullptr && zmq_connect(mon_, mon) != 0) {
                zmq_close(mon_);
                mon_ = nullptr;
            }
        }
        if (zmq_connect(dealer_, s_.endpoint.c_str()) != 0)
            throw Error(TODD_COMMS_E_CONFIG, "cannot use endpoint '" +
                                                 s_.endpoint +
                                                 "': " + zmq_strerror(errno));
        evfd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (evfd_ < 0)
            throw Error(TODD_COMMS_E_INTERNAL,
                        std::string("eventfd: ") + std::strerror(errno));
    }

    void close_sockets()
    {
        {
            // A publish racing with stop finds dealer_ gone under lm_.
            std::lock_guard<std::mutex> lk(lm_);
            if (mon_ != nullptr) {
                zmq_socket_monitor(dealer_, nullptr, 0);
                zmq_close(mon_);
                mon_ = nullptr;
            }
            if (dealer_ != nullptr) {
                zmq_close(dealer_);
                dealer_ = nullptr;
            }
            close_fd(evfd_);
        }
        // The engine object stays until destroy: a racing client call finds
        // it stopped.
        if (engine_)
            engine_->stop();
        if (ctx_ != nullptr) {
            zmq_ctx_term(ctx_);
            ctx_ = nullptr;
        }
    }

    // ---- I/O thread -----------------------------------------------------

    /** Agent, lm_ held: send one message to the engine. */
    int link_send(const std::string_view *f, size_t n)
    {
        return send_frames(dealer_, f, n);
    }

    /** Send now, or queue behind earlier messages the socket refused. */
    void send_or_queue(const std::string_view *f, size_t n)
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

    /**
     * Agent, lm_ held: send the acks of deliveries made on the I/O thread.
     * They are held back for up to kAckHoldMs so that, in a request/reply
     * flow, they travel with the next message instead of waking the
     * engine (and libzmq's I/O threads) once more on their own.
     */
    void flush_held_acks()
    {
        if (held_acks_.empty())
            return;
        std::string recs;
        recs.swap(held_acks_);
        std::string_view f[2] = {kAck, recs};
        send_or_queue(f, 2);
    }

    void flush_sendq()
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

    void send_pub(const OutPub &p)
    {
        PubFrames f(p);
        send_or_queue(f.f.data(), f.f.size());
    }

    void send_sub(const Sub &s)
    {
        SubFrames f(s);
        send_or_queue(f.f.data(), f.f.size());
    }

    void send_hello()
    {
        last_hello_ = now_ms();
        char b[8];
        put_u64(b, session_.load());
        std::string_view f[2] = {kHello, std::string_view(b, 8)};
        link_send(f, 2); // EAGAIN: not connected, retried later
    }

    void lost(const std::string &why)
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
        host().state(TODD_COMMS_STATE_RECONNECTING, TODD_COMMS_E_UNAVAILABLE,
                     why);
        send_hello();
    }

    void complete_locked(uint64_t seq, todd_comms_status st,
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

    void on_welcome(std::string_view body)
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
                                               return pending_.count(p.seq) ==
                                                      0;
                                           }),
                            inflight_.end());
        }
        for (auto &p : inflight_)
            send_pub(p);
        host().state(TODD_COMMS_STATE_CONNECTED, TODD_COMMS_OK,
                     s_.server ? "engine on " + s_.endpoint : s_.endpoint);
    }

    /** Server: the engine's answers, under its lock, on any thread. */
    void on_engine_message(const Msgv &m) override
    {
        std::lock_guard<std::mutex> lk(lm_);
        on_message(m);
    }

    void on_message(const Msgv &in)
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
            lost("the engine at " + s_.endpoint +
                 " no longer knows this instance");
        }
        // kHeartbeat: last_heard_ is enough.
    }

    void on_monitor(Frames &in)
    {
        if (in.count() < 1 || in.size(0) < 6)
            return;
        const auto *p =
            reinterpret_cast<const unsigned char *>(in.view(0).data());
        uint16_t event = static_cast<uint16_t>(p[0] | (p[1] << 8));
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && !welcomed_)
            send_hello();
        else if (event == ZMQ_EVENT_DISCONNECTED)
            lost("lost the connection to the engine at " + s_.endpoint);
    }

    /** Agent: time until the next heartbeat or HELLO is due (lm_ held). */
    long next_timeout() const
    {
        int64_t due = welcomed_
                          ? std::min(last_hb_ + s_.heartbeat_ms,
                                     last_heard_ + s_.heartbeat_timeout_ms)
                          : last_hello_ + s_.heartbeat_ms;
        if (!held_acks_.empty())
            due = std::min(due, held_since_ + kAckHoldMs);
        long t = static_cast<long>(std::max<int64_t>(0, due - now_ms()));
        // Refused sends wait for room: look again soon even if the
        // notification was taken by a caller.
        return sendq_.empty() ? t : std::min(t, 10L);
    }

    /** Agent: timers after a round of input (lm_ held). */
    void on_timers()
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

    /**
     * Agent I/O thread: reads the DEALER and the monitor, reconnects, keeps
     * time. It polls the DEALER's notification fd rather than the socket so
     * that callers can send on the socket (under lm_) while it sleeps.
     */
    void io_run()
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
                more =
                    drain(dealer_, in, [this](const Msgv &m, const Frames &) {
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

    /** No engine any more: wake every waiting publisher. */
    void fail_pending()
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

    Settings s_;
    std::string rid_;
    void *ctx_ = nullptr;
    void *dealer_ = nullptr;
    void *mon_ = nullptr;
    int evfd_ = -1;
    std::unique_ptr<Engine> engine_;
    std::thread io_;
    std::atomic<bool> started_{false};
    bool stopped_ = false;

    // Publish waiters, under mu_ (taken after lm_, never before it).
    std::mutex mu_;
    bool io_done_ = false;
    uint64_t next_seq_ = 0;
    std::unordered_map<uint64_t, std::pair<Waiter *, uint32_t>> pending_;

    // Control thread only.
    std::map<uint64_t, std::shared_ptr<Sub>> subs_; // by cookie
    uint64_t next_sub_id_ = 0;

    // Current connection session; deliveries of older ones are stale.
    std::atomic<uint64_t> session_{1};
    std::atomic<bool> stop_io_{false};

    // Inline delivery by the primary reader, and its stand-in.
    std::vector<Inline> inline_; // primary reader only
    std::thread rescue_;
    int rescue_fd_ = -1; // wakes the stand-in
    int timer_fd_ = -1;  // the watchdog tick, while deliveries run inline
    int zfd_ = -1;       // agent: the DEALER's notification fd
    std::atomic<bool> primary_inline_{false};
    std::atomic<uint64_t> inline_seq_{0}; // inline delivery rounds begun
    std::mutex tick_m_;                   // guards ticking_ and arming
    bool ticking_ = false;
    std::atomic<bool> rescued_{false};
    std::atomic<bool> stop_rescue_{false};

    // The link, under lm_: the DEALER and what it carries (agent), the
    // subscriptions deliveries are routed to (both roles). Server: the
    // engine calls in with its own lock held, so lm_ is never held while
    // calling the engine.
    std::mutex lm_;
    std::unordered_map<uint64_t, std::shared_ptr<Sub>> io_subs_;
    std::deque<OutPub> inflight_; // sent, not yet confirmed, in seq order
    std::deque<OutPub> outbox_;   // waiting for a connection
    std::deque<std::vector<std::string>> sendq_;
    std::string held_acks_; // see flush_held_acks
    int64_t held_since_ = 0;
    bool welcomed_ = false;
    bool failed_reported_ = false;
    uint64_t engine_epoch_ = 0;
    int64_t last_heard_ = 0, last_hb_ = 0, last_hello_ = 0, lost_since_ = 0;
};

} // namespace
} // namespace todd_zmq

TODD_COMMS_PLUGIN(todd_zmq::ZmqTransport, "zeromq", "0.1.0", "Apache-2.0",
                  "Embedded brokerless transport (ZeroMQ): the server runs the "
                  "queues, agents connect",
                  TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL |
                      TODD_COMMS_CAP_CONFIRMS | TODD_COMMS_CAP_REMOTE |
                      TODD_COMMS_CAP_BATCH,
                  todd_zmq::kKeys)
