// SPDX-License-Identifier: Apache-2.0
#include "engine.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

namespace todd_zmq {

using todd::comms::sdk::Error;

namespace {

void setopt_int(void *s, int opt, int v)
{
    zmq_setsockopt(s, opt, &v, sizeof v);
}

/** A routing id for log lines: ours are printable, libzmq's are binary. */
std::string printable(const std::string &rid)
{
    if (rid.empty())
        return "(server instance)";
    std::string out;
    for (unsigned char c : rid) {
        if (c >= 0x21 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            char b[5];
            std::snprintf(b, sizeof b, "\\x%02x", c);
            out += b;
        }
    }
    return out;
}

} // namespace

Engine::Engine(void *ctx, EngineSettings settings,
               const todd::comms::sdk::Host &host, LocalClient *local)
    : ctx_(ctx), s_(std::move(settings)), host_(host), local_(local)
{
    std::random_device rd;
    epoch_ = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
             static_cast<uint64_t>(now_ms());
}

Engine::~Engine()
{
    stop();
}

void Engine::start()
{
    if (router_ == nullptr)
        bind();
    host_.logf(TODD_COMMS_LOG_INFO,
               "engine %016llx listening on %s (max_held=%lld)",
               static_cast<unsigned long long>(epoch_), s_.endpoint.c_str(),
               s_.max_held);
    {
        std::lock_guard<std::mutex> lk(em_);
        size_t len = sizeof zfd_;
        zmq_getsockopt(router_, ZMQ_FD, &zfd_, &len);
        running_ = true;
    }
    thread_ = std::thread([this] { run(); });
}

void Engine::bind()
{
    router_ = zmq_socket(ctx_, ZMQ_ROUTER);
    if (router_ == nullptr)
        throw Error(TODD_COMMS_E_INTERNAL,
                    std::string("zmq_socket(ROUTER): ") + zmq_strerror(errno));
    // Fail sends to vanished peers instead of dropping them silently, and
    // let a reconnecting peer take over its routing id at once.
    setopt_int(router_, ZMQ_ROUTER_MANDATORY, 1);
    setopt_int(router_, ZMQ_ROUTER_HANDOVER, 1);
    // Deliveries are bounded by prefetch and confirms are batched, so a peer
    // that lets this many messages pile up does not read: it is dropped
    // (send fails, its unacked messages are requeued) instead of growing
    // the engine's memory without bound.
    setopt_int(router_, ZMQ_SNDHWM, 100000);
    setopt_int(router_, ZMQ_LINGER, 0);
    setopt_int(router_, ZMQ_HEARTBEAT_IVL, static_cast<int>(s_.heartbeat_ms));
    setopt_int(router_, ZMQ_HEARTBEAT_TIMEOUT,
               static_cast<int>(s_.heartbeat_timeout_ms));
    set_max_message(router_, s_.max_frame_bytes);
    // A listener this process (or a server restarted a moment ago) just
    // closed may take a little while to be released: retry briefly.
    int rc = zmq_bind(router_, s_.endpoint.c_str());
    for (int i = 0; rc != 0 && errno == EADDRINUSE && i < 20; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        rc = zmq_bind(router_, s_.endpoint.c_str());
    }
    if (rc != 0) {
        int e = errno;
        zmq_close(router_);
        router_ = nullptr;
        bool config =
            e == EINVAL || e == EPROTONOSUPPORT || e == ENOCOMPATPROTO;
        throw Error(config ? TODD_COMMS_E_CONFIG : TODD_COMMS_E_UNAVAILABLE,
                    "role=server cannot bind endpoint '" + s_.endpoint +
                        "': " + zmq_strerror(e) +
                        (e == EADDRINUSE
                             ? " (is another todd-server running? set "
                               "endpoint to another address)"
                             : ""));
    }
    // With port 0 the kernel chose one: agents need the real endpoint.
    char bound[256];
    size_t bound_len = sizeof bound;
    if (zmq_getsockopt(router_, ZMQ_LAST_ENDPOINT, bound, &bound_len) == 0)
        s_.endpoint = bound;
    if (local_ != nullptr) {
        // Routing ids are never empty: "" is the local client.
        auto p = std::make_unique<Peer>();
        p->local = true;
        peers_.emplace(std::string(), std::move(p));
    }
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    kick_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0 || kick_fd_ < 0) {
        int e = errno;
        zmq_close(router_);
        router_ = nullptr;
        close_fd(stop_fd_);
        close_fd(kick_fd_);
        throw Error(TODD_COMMS_E_INTERNAL,
                    std::string("eventfd: ") + std::strerror(e));
    }
}

void Engine::stop()
{
    if (thread_.joinable()) {
        eventfd_kick(stop_fd_);
        thread_.join();
    }
    // Clients may still call in (a publish racing with stop): they find the
    // engine stopped instead of a closed socket.
    std::lock_guard<std::mutex> lk(em_);
    running_ = false;
    if (router_ != nullptr) {
        zmq_close(router_);
        router_ = nullptr;
    }
    close_fd(stop_fd_);
    close_fd(kick_fd_);
    size_t held = 0;
    for (auto &q : queues_)
        held += q.second->ready.size();
    if (held > 0)
        host_.logf(TODD_COMMS_LOG_WARN,
                   "engine stopped with %zu undelivered messages "
                   "(not durable: they are lost)",
                   held);
    peers_.clear();
    queues_.clear();
    dirty_.clear();
}

void Engine::run()
{
    const int64_t tick =
        std::max<int64_t>(50, std::min<int64_t>(s_.heartbeat_ms, 250));
    int64_t next_timer = now_ms() + tick;
    // The ROUTER is polled through its notification fd, not as a socket,
    // so that clients may use the socket (under em_) while this thread
    // sleeps. That fd only says "look again": the socket is drained until
    // EAGAIN, and ZMQ_EVENTS is checked after every use of the socket.
    zmq_pollitem_t items[3] = {{nullptr, zfd_, ZMQ_POLLIN, 0},
                               {nullptr, stop_fd_, ZMQ_POLLIN, 0},
                               {nullptr, kick_fd_, ZMQ_POLLIN, 0}};
    bool more = true; // input may be waiting already
    for (;;) {
        int64_t now = now_ms();
        long timeout =
            more ? 0
                 : static_cast<long>(std::max<int64_t>(0, next_timer - now));
        int rc = zmq_poll(items, 3, timeout);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            host_.logf(TODD_COMMS_LOG_ERROR, "engine poll failed: %s",
                       zmq_strerror(errno));
            return;
        }
        if (items[1].revents != 0)
            return;
        if (items[2].revents != 0)
            eventfd_drain(kick_fd_);
        {
            std::lock_guard<std::mutex> lk(em_);
            if (local_ != nullptr)
                local_->batch_begin();
            more = drain_locked();
            now = now_ms();
            if (now >= next_timer) {
                sweep(now);
                reap_dead();
                next_timer = now + tick;
            }
        }
        // Deliveries the local client collected run here, unlocked; a
        // stand-in may read the ROUTER meanwhile, so look again after.
        if (local_ != nullptr && local_->batch_end())
            more = true;
    }
}

bool Engine::drain_locked()
{
    now_ = now_ms();
    bool more = drain(router_, in_, [this](const Msgv &m, const Frames &in) {
        if (m.n == 0)
            host_.logf(TODD_COMMS_LOG_WARN,
                       "engine dropped a malformed message (%zu frames)",
                       in.count());
        else
            handle(m, now_);
    });
    flush_confirms();
    reap_dead();
    return more || (socket_events(router_) & ZMQ_POLLIN) != 0;
}

void Engine::poll_once(long timeout_ms, int extra_fd)
{
    zmq_pollitem_t items[3] = {{nullptr, zfd_, ZMQ_POLLIN, 0},
                               {nullptr, kick_fd_, ZMQ_POLLIN, 0},
                               {nullptr, extra_fd, ZMQ_POLLIN, 0}};
    {
        std::lock_guard<std::mutex> lk(em_);
        if (!running_)
            return;
    }
    if (zmq_poll(items, 3, timeout_ms) < 0)
        return;
    std::lock_guard<std::mutex> lk(em_);
    if (!running_)
        return;
    if (items[1].revents != 0)
        eventfd_drain(kick_fd_);
    if (drain_locked())
        eventfd_kick(kick_fd_); // the rest at the next call, or the engine's
}

void Engine::send_to(const std::string &rid, const std::string_view *frames,
                     size_t n)
{
    std::string_view all[Frames::kMax];
    all[0] = rid;
    for (size_t i = 0; i < n && i + 1 < Frames::kMax; ++i)
        all[i + 1] = frames[i];
    send_frames(router_, all, n + 1);
}

bool Engine::client_send(const Msgv *msgs, size_t n)
{
    std::lock_guard<std::mutex> lk(em_);
    if (!running_)
        return false;
    now_ = now_ms();
    std::string_view all[Frames::kMax];
    all[0] = std::string_view(); // "" is the local client's routing id
    for (size_t k = 0; k < n; ++k) {
        const Msgv &m = msgs[k];
        if (m.n + 1 > Frames::kMax)
            continue;
        for (size_t i = 0; i < m.n; ++i)
            all[i + 1] = m.f[i];
        handle(Msgv{all, m.n + 1}, now_);
    }
    flush_confirms();
    reap_dead();
    wake_if_readable();
    return true;
}

void Engine::wake_if_readable()
{
    // Using the socket here may have consumed the notification the engine
    // thread sleeps on: hand it on if input is waiting.
    if ((socket_events(router_) & ZMQ_POLLIN) != 0)
        eventfd_kick(kick_fd_);
}

bool Engine::send(Peer &p, const std::string_view *frames, size_t n)
{
    if (p.dead)
        return false;
    if (p.local) {
        local_->on_engine_message(Msgv{frames, n});
        return true;
    }
    std::string_view all[Frames::kMax];
    all[0] = p.rid;
    for (size_t i = 0; i < n && i + 1 < Frames::kMax; ++i)
        all[i + 1] = frames[i];
    int e = send_frames(router_, all, n + 1);
    if (e == 0)
        return true;
    // EHOSTUNREACH: the connection is gone, so is everything in flight.
    host_.logf(TODD_COMMS_LOG_DEBUG, "engine cannot reach peer %s: %s",
               printable(p.rid).c_str(), zmq_strerror(e));
    p.dead = true;
    any_dead_ = true;
    return false;
}

void Engine::handle(const Msgv &in, int64_t now)
{
    now_ = now;
    size_t n = in.count();
    if (n < 2 || n > Frames::kMax) {
        host_.logf(TODD_COMMS_LOG_WARN,
                   "engine dropped a malformed message (%zu frames)", n);
        return;
    }
    key_.assign(in.view(0));
    std::string_view cmd = in.view(1);
    auto it = peers_.find(key_);
    if (cmd == kHello) {
        if (n != 3 || in.size(2) != 8) {
            host_.log(TODD_COMMS_LOG_WARN, "engine dropped a malformed HELLO");
            return;
        }
        uint64_t session = get_u64(in.view(2).data());
        Peer *p;
        if (it == peers_.end()) {
            auto np = std::make_unique<Peer>();
            np->rid = key_;
            p = np.get();
            peers_.emplace(key_, std::move(np));
            host_.logf(TODD_COMMS_LOG_DEBUG, "engine: peer %s joined",
                       printable(p->rid).c_str());
        } else {
            p = it->second.get();
            if (p->dead || p->session != session) {
                // The peer lost its connection: whatever was in flight to it
                // may be lost, so requeue it; it subscribes again.
                p->dead = true;
                reset_peer(*p);
            }
        }
        p->session = session;
        p->last_seen = now;
        p->dead = false;
        char body[16];
        put_u64(body, epoch_);
        put_u64(body + 8, session);
        std::string_view f[2] = {kWelcome, std::string_view(body, 16)};
        send(*p, f, 2);
        return;
    }
    if (it == peers_.end()) {
        // Unknown peer (engine restarted, or it went silent too long): it
        // must say HELLO and subscribe again before anything else.
        if (cmd != kBye) {
            std::string_view f[1] = {kWho};
            send_to(key_, f, 1);
        }
        return;
    }
    Peer &p = *it->second;
    p.last_seen = now;
    if (cmd == kHeartbeat) {
        std::string_view f[1] = {kHeartbeat};
        send(p, f, 1);
    } else if (cmd == kPub) {
        on_pub(p, in);
    } else if (cmd == kAck) {
        on_ack(p, in);
    } else if (cmd == kSub) {
        on_sub(p, in);
    } else if (cmd == kUnsub) {
        on_unsub(p, in);
    } else if (cmd == kBye) {
        flush_confirms(p);
        drop_peer(key_, "said goodbye");
    } else {
        host_.logf(TODD_COMMS_LOG_WARN,
                   "engine: unknown command '%.*s' from %s",
                   static_cast<int>(std::min<size_t>(cmd.size(), 16)),
                   cmd.data(), printable(p.rid).c_str());
    }
}

Engine::Queue &Engine::queue(std::string_view name)
{
    key_.assign(name);
    auto it = queues_.find(key_);
    if (it != queues_.end())
        return *it->second;
    auto q = std::make_unique<Queue>();
    q->name = key_;
    Queue &ref = *q;
    queues_.emplace(key_, std::move(q));
    return ref;
}

void Engine::on_pub(Peer &p, const Msgv &in)
{
    if (in.count() != 6 || in.size(2) != 16) {
        host_.logf(TODD_COMMS_LOG_WARN,
                   "engine dropped a malformed PUB from %s",
                   printable(p.rid).c_str());
        return;
    }
    const char *h = in.view(2).data();
    uint64_t seq = get_u64(h);
    int64_t ttl = static_cast<int64_t>(get_u64(h + 8));
    std::string_view dest = in.view(3);
    auto nack = [&](todd_comms_status st, const std::string &text) {
        flush_confirms(p); // keep confirmations in publish order
        char b[12];
        put_u64(b, seq);
        put_u32(b + 8, static_cast<uint32_t>(st));
        std::string_view f[3] = {kNack, std::string_view(b, 12), text};
        send(p, f, 3);
    };
    if (dest.empty()) {
        nack(TODD_COMMS_E_INVAL, "empty destination name");
        return;
    }
    Queue &q = queue(dest);
    if (static_cast<long long>(q.ready.size()) >= s_.max_held) {
        purge_expired(q, now_);
        if (static_cast<long long>(q.ready.size()) >= s_.max_held) {
            nack(TODD_COMMS_E_FULL, "destination '" + q.name +
                                        "' already holds " +
                                        std::to_string(q.ready.size()) +
                                        " undelivered messages (max_held=" +
                                        std::to_string(s_.max_held) +
                                        "): nobody consumes it, or too slowly");
            return;
        }
    }
    Msg m;
    m.payload.assign(in.view(5));
    m.ctype.assign(in.view(4));
    if (ttl > 0) {
        m.expires = now_ + ttl;
        ++q.with_ttl;
    }
    q.ready.push_back(std::move(m));
    if (p.confirms.empty())
        dirty_.push_back(&p);
    p.confirms.push_back(seq);
    dispatch(q);
}

void Engine::on_sub(Peer &p, const Msgv &in)
{
    if (in.count() != 4 || in.size(2) != 12 || in.size(3) == 0) {
        host_.logf(TODD_COMMS_LOG_WARN,
                   "engine dropped a malformed SUB from %s",
                   printable(p.rid).c_str());
        return;
    }
    const char *h = in.view(2).data();
    uint64_t id = get_u64(h);
    uint32_t prefetch = std::max<uint32_t>(1, get_u32(h + 8));
    if (p.consumers.count(id) != 0)
        return; // already subscribed: SUB is idempotent
    Queue &q = queue(in.view(3));
    auto c = std::make_unique<Consumer>();
    c->peer = &p;
    c->sub_id = id;
    c->queue = &q;
    c->prefetch = prefetch;
    q.consumers.push_back(c.get());
    p.consumers.emplace(id, std::move(c));
    dispatch(q);
}

void Engine::on_unsub(Peer &p, const Msgv &in)
{
    if (in.count() != 3 || in.size(2) != 8)
        return;
    auto it = p.consumers.find(get_u64(in.view(2).data()));
    if (it == p.consumers.end())
        return;
    Queue *q = it->second->queue;
    // The instance settled everything it handed to its host before
    // sending UNSUB: the rest never reached the host.
    release_consumer(p, it->second.get(), true);
    p.consumers.erase(it);
    dispatch(*q);
}

void Engine::on_ack(Peer &p, const Msgv &in)
{
    if (in.count() != 3 || in.size(2) % 9 != 0)
        return;
    std::string_view recs = in.view(2);
    Queue *touched[8];
    size_t ntouched = 0;
    bool overflow = false;
    for (size_t off = 0; off < recs.size(); off += 9) {
        uint64_t tag = get_u64(recs.data() + off);
        int verdict = static_cast<unsigned char>(recs[off + 8]);
        auto it = p.unacked.find(tag);
        if (it == p.unacked.end())
            continue; // already requeued (reconnect, unsubscribe)
        Pending pd = std::move(it->second);
        p.unacked.erase(it);
        Queue *q = pd.queue;
        --q->unacked;
        auto ci = p.consumers.find(pd.sub_id);
        if (ci != p.consumers.end() && ci->second->inflight > 0)
            --ci->second->inflight;
        if (verdict == TODD_COMMS_VERDICT_REQUEUE)
            requeue(std::move(pd));
        if (std::find(touched, touched + ntouched, q) == touched + ntouched) {
            if (ntouched < 8)
                touched[ntouched++] = q;
            else
                overflow = true;
        }
    }
    for (size_t i = 0; i < ntouched; ++i)
        dispatch(*touched[i]);
    if (overflow)
        for (auto &c : p.consumers)
            dispatch(*c.second->queue);
}

void Engine::requeue(Pending &&pd)
{
    // Back to the head, as RabbitMQ does, flagged as possibly seen.
    pd.msg.redelivered = true;
    if (pd.msg.expires != 0)
        ++pd.queue->with_ttl;
    pd.queue->ready.push_front(std::move(pd.msg));
}

Engine::Consumer *Engine::next_consumer(Queue &q)
{
    size_t n = q.consumers.size();
    for (size_t i = 0; i < n; ++i) {
        size_t idx = (q.rr + i) % n;
        Consumer *c = q.consumers[idx];
        if (!c->peer->dead && c->inflight < c->prefetch) {
            q.rr = idx + 1;
            return c;
        }
    }
    return nullptr;
}

void Engine::dispatch(Queue &q)
{
    if (q.consumers.empty())
        return;
    while (!q.ready.empty()) {
        Msg &m = q.ready.front();
        if (m.expires != 0 && m.expires <= now_) {
            q.ready.pop_front();
            --q.with_ttl;
            continue;
        }
        Consumer *c = next_consumer(q);
        if (c == nullptr)
            return;
        uint64_t tag = ++next_tag_;
        char hdr[20];
        put_u64(hdr, c->sub_id);
        put_u64(hdr + 8, tag);
        put_u32(hdr + 16, m.redelivered ? TODD_COMMS_MSG_REDELIVERED : 0u);
        std::string_view f[4] = {kDeliver, std::string_view(hdr, 20), m.ctype,
                                 m.payload};
        if (!send(*c->peer, f, 4))
            continue; // peer marked dead; try the next consumer
        Pending pd;
        pd.msg = std::move(m);
        pd.queue = &q;
        pd.sub_id = c->sub_id;
        q.ready.pop_front();
        if (pd.msg.expires != 0)
            --q.with_ttl;
        ++c->inflight;
        ++q.unacked;
        c->peer->unacked.emplace(tag, std::move(pd));
    }
}

void Engine::release_consumer(Peer &p, Consumer *c, bool requeue_unacked)
{
    Queue &q = *c->queue;
    auto pos = std::find(q.consumers.begin(), q.consumers.end(), c);
    if (pos != q.consumers.end())
        q.consumers.erase(pos);
    if (!requeue_unacked)
        return;
    std::vector<uint64_t> tags;
    for (auto &u : p.unacked)
        if (u.second.sub_id == c->sub_id)
            tags.push_back(u.first);
    // Newest first onto the head, so the oldest ends up first.
    std::sort(tags.rbegin(), tags.rend());
    for (uint64_t t : tags) {
        auto it = p.unacked.find(t);
        --it->second.queue->unacked;
        requeue(std::move(it->second));
        p.unacked.erase(it);
    }
}

void Engine::reset_peer(Peer &p)
{
    std::vector<Queue *> touched;
    for (auto &c : p.consumers) {
        touched.push_back(c.second->queue);
        release_consumer(p, c.second.get(), false);
    }
    std::vector<uint64_t> tags;
    for (auto &u : p.unacked)
        tags.push_back(u.first);
    std::sort(tags.rbegin(), tags.rend());
    for (uint64_t t : tags) {
        auto it = p.unacked.find(t);
        Queue *q = it->second.queue;
        --q->unacked;
        requeue(std::move(it->second));
        p.unacked.erase(it);
        touched.push_back(q);
    }
    if (!tags.empty())
        host_.logf(TODD_COMMS_LOG_INFO,
                   "engine requeued %zu unacknowledged messages of "
                   "peer %s",
                   tags.size(), printable(p.rid).c_str());
    p.consumers.clear();
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (Queue *q : touched)
        dispatch(*q);
}

void Engine::drop_peer(const std::string &rid, const char *why)
{
    auto it = peers_.find(rid);
    if (it == peers_.end())
        return;
    std::unique_ptr<Peer> p = std::move(it->second);
    peers_.erase(it);
    host_.logf(TODD_COMMS_LOG_DEBUG, "engine: peer %s left (%s)",
               printable(p->rid).c_str(), why);
    dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), p.get()),
                 dirty_.end());
    p->dead = true; // nothing is dispatched to it while requeueing
    reset_peer(*p);
}

void Engine::reap_dead()
{
    if (!any_dead_)
        return;
    any_dead_ = false;
    std::vector<std::string> dead;
    for (auto &p : peers_)
        if (p.second->dead)
            dead.push_back(p.first);
    for (auto &rid : dead)
        drop_peer(rid, "connection lost");
}

void Engine::flush_confirms(Peer &p)
{
    if (p.confirms.empty())
        return;
    std::string buf(p.confirms.size() * 8, '\0');
    for (size_t i = 0; i < p.confirms.size(); ++i)
        put_u64(&buf[i * 8], p.confirms[i]);
    p.confirms.clear();
    std::string_view f[2] = {kConfirm, buf};
    send(p, f, 2);
}

void Engine::flush_confirms()
{
    for (Peer *p : dirty_)
        flush_confirms(*p);
    dirty_.clear();
}

void Engine::purge_expired(Queue &q, int64_t now)
{
    if (q.with_ttl == 0)
        return;
    size_t before = q.ready.size();
    q.ready.erase(std::remove_if(q.ready.begin(), q.ready.end(),
                                 [now](const Msg &m) {
                                     return m.expires != 0 && m.expires <= now;
                                 }),
                  q.ready.end());
    size_t with_ttl = 0;
    for (auto &m : q.ready)
        if (m.expires != 0)
            ++with_ttl;
    q.with_ttl = with_ttl;
    if (before != q.ready.size())
        host_.logf(TODD_COMMS_LOG_DEBUG, "engine: %zu messages of '%s' expired",
                   before - q.ready.size(), q.name.c_str());
}

void Engine::sweep(int64_t now)
{
    now_ = now;
    std::vector<std::string> silent;
    for (auto &p : peers_)
        if (!p.second->local &&
            now - p.second->last_seen > s_.heartbeat_timeout_ms)
            silent.push_back(p.first);
    for (auto &rid : silent)
        drop_peer(rid, "heartbeat timeout");
    for (auto it = queues_.begin(); it != queues_.end();) {
        Queue &q = *it->second;
        purge_expired(q, now);
        if (q.ready.empty() && q.consumers.empty() && q.unacked == 0)
            it = queues_.erase(it);
        else
            ++it;
    }
}

} // namespace todd_zmq
