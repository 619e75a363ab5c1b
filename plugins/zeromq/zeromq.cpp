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
#include "transport.hpp"

#include <sys/eventfd.h>

#include <cstdio>
#include <cstring>
#include <random>

namespace todd_zmq {
namespace {

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

} // namespace

ZmqTransport::ZmqTransport(const Host &host, const Config &cfg)
    : Transport(host, cfg), s_(parse(cfg)),
      rid_(random_id(s_.server ? 's' : 'a'))
{
}

ZmqTransport::~ZmqTransport()
{
    try {
        stop();
    } catch (...) {
    }
}

void ZmqTransport::start()
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

void ZmqTransport::stop()
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

void ZmqTransport::open_sockets()
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
        s_.endpoint = engine_->endpoint(); // port 0: the one bound
        return;
    }
    dealer_ = zmq_socket(ctx_, ZMQ_DEALER);
    if (dealer_ == nullptr)
        throw Error(TODD_COMMS_E_INTERNAL,
                    std::string("zmq_socket(DEALER): ") + zmq_strerror(errno));
    zmq_setsockopt(dealer_, ZMQ_ROUTING_ID, rid_.data(), rid_.size());
    // Queue nothing on a connection that is not up: while the engine
    // is away publishes wait here, where they can time out.
    setopt_int(dealer_, ZMQ_IMMEDIATE, 1);
    setopt_int(dealer_, ZMQ_LINGER, 200);
    setopt_int(dealer_, ZMQ_SNDHWM, 100000);
    setopt_int(dealer_, ZMQ_RECONNECT_IVL, 100);
    setopt_int(dealer_, ZMQ_RECONNECT_IVL_MAX, 1000);
    setopt_int(dealer_, ZMQ_HEARTBEAT_IVL, static_cast<int>(s_.heartbeat_ms));
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
        throw Error(TODD_COMMS_E_CONFIG, "cannot use endpoint '" + s_.endpoint +
                                             "': " + zmq_strerror(errno));
    evfd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (evfd_ < 0)
        throw Error(TODD_COMMS_E_INTERNAL,
                    std::string("eventfd: ") + std::strerror(errno));
}

void ZmqTransport::close_sockets()
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

} // namespace todd_zmq

TODD_COMMS_PLUGIN(todd_zmq::ZmqTransport, "zeromq", "0.1.0", "Apache-2.0",
                  "Embedded brokerless transport (ZeroMQ): the server runs the "
                  "queues, agents connect",
                  TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL |
                      TODD_COMMS_CAP_CONFIRMS | TODD_COMMS_CAP_REMOTE |
                      TODD_COMMS_CAP_BATCH,
                  todd_zmq::kKeys)
