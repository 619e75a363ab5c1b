// SPDX-License-Identifier: Apache-2.0
// The ZeroMQ transport's instance (docs/zeromq.md). Its definitions are by
// job: zeromq.cpp (configuration, lifecycle, sockets, the plugin
// descriptor), publish.cpp (the caller side of publish and its
// confirmations), delivery.cpp (subscriptions, their workers, inline
// delivery and its stand-in reader, acks), link.cpp (the link to the engine:
// the agent's DEALER and I/O thread, and the engine's answers). The engine
// the server role runs is engine.cpp.
#pragma once

#include "engine.hpp"
#include "keys.hpp"
#include "wire.hpp"

#include <todd/comms/sdk.hpp>

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace todd_zmq {

using todd::comms::sdk::Config;
using todd::comms::sdk::Error;
using todd::comms::sdk::Host;

inline constexpr todd_comms_status kPendingStatus = 1; // not a valid status

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
inline thread_local std::vector<Inline> *tl_collect = nullptr;
// Set while this thread makes those deliveries.
inline thread_local bool tl_inline = false;

// While deliveries run on the reading thread, a watchdog ticks this often;
// a delivery still running after a whole tick hands the link to the
// stand-in reader (so within one to two ticks). Arming a timer for each
// delivery would cost more than the hop it saves (on a VM, ~20 us), and
// a shorter tick shows in the round trip's p99 (20 ms: +20-30 us).
inline constexpr long kWatchdogTickNs = 100'000'000;

// How long acks of deliveries made on the agent's I/O thread may wait for a
// message to travel with (flush_held_acks).
inline constexpr int64_t kAckHoldMs = 1;

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

class ZmqTransport : public todd::comms::sdk::Transport, private LocalClient {
  public:
    ZmqTransport(const Host &host, const Config &cfg);
    ~ZmqTransport() override;
    void start() override;
    void stop() override;
    std::string oversized(uint64_t len) const;
    void publish(const char *destination, const uint8_t *payload, uint64_t len,
                 const todd_comms_publish_opts *opts) override;
    todd_comms_status publish_batch(const todd_comms_outgoing *msgs,
                                    uint32_t count,
                                    todd_comms_status *statuses) override;
    void subscribe(const char *destination, uint64_t cookie,
                   const todd_comms_subscribe_opts *opts) override;
    void unsubscribe(uint64_t cookie) override;

  private:
    // ---- caller side -----------------------------------------------------

    std::string unavailable(const char *dest) const;
    void check_running_locked();

    /**
     * Hand publishes to the engine: over the DEALER, or (server) a direct
     * call that also confirms them. False when the link is already closed.
     * Called without mu_ or lm_ held.
     */
    bool link_publish(OutPub *pubs, size_t n);

    /**
     * Agent: a publisher is about to wait for its confirmation. Made from
     * inside a delivery on the I/O thread, nobody would read it until the
     * watchdog's next ticks: wake the stand-in now. (Other threads wait for
     * the I/O thread to be back, or for the watchdog.)
     */
    void need_reader();

    /** Settle deliveries: records of (tag u64, verdict u8). hold: made on
     *  the agent's I/O thread, which sends them by kAckHoldMs. */
    void link_ack(uint64_t session, const std::string &records,
                  bool hold = false);

    /** Server: subscribe the engine's local client (lm_ not held). */
    void engine_sub(const Sub &sub);

    /**
     * Agent, lm_ held, after using the DEALER: that may have consumed the
     * notification the I/O thread sleeps on, so pass it on when input
     * waits (or output can go).
     */
    void wake_if_readable();

    /** Agent, lm_ held: input waits, or refused sends can go now. */
    bool link_needs_reader();
    void start_worker(const std::shared_ptr<Sub> &sub);
    void stop_worker(Sub &sub);
    int32_t deliver_item(const Sub &sub, const Item &it);

    /** Collects ack records and sends them in slices. */
    struct Acks {
        std::string recs;
        uint64_t session = 0;
    };

    void add_ack(Acks &a, const Item &it, int32_t v);
    void flush_acks(Acks &a, bool hold = false);
    void work(Sub &sub);

    /**
     * The primary reader (agent I/O thread, server engine thread), with no
     * lock held: make the deliveries it collected. A stand-in reads the
     * link if one of them takes long (or a publisher needs its confirm).
     */
    bool deliver_inline(std::vector<Inline> &list);

    /**
     * The stand-in reader (and watchdog). Sleeps until a delivery made by
     * the primary reader is still running after a whole watchdog tick, or a
     * publisher needs confirmations read meanwhile; then serves the link
     * until the primary is back, so that publishing, other subscriptions and
     * heartbeats wait for a blocked host handler two ticks at most.
     */
    void rescue_run();

    /** Agent stand-in: one round of reading and timers. */
    void serve_once(Frames &in);
    void start_rescue();
    void stop_rescue();

    // Server: the engine thread collects deliveries while it reads...
    void batch_begin() override { tl_collect = &inline_; }
    // ... and makes them once it has let go of the engine.
    bool batch_end() override;

    // ---- sockets ------------------------------------------------------------

    void open_sockets();
    void close_sockets();

    // ---- I/O thread -----------------------------------------------------

    /** Agent, lm_ held: send one message to the engine. */
    int link_send(const std::string_view *f, size_t n);

    /** Send now, or queue behind earlier messages the socket refused. */
    void send_or_queue(const std::string_view *f, size_t n);

    /**
     * Agent, lm_ held: send the acks of deliveries made on the I/O thread.
     * They are held back for up to kAckHoldMs so that, in a request/reply
     * flow, they travel with the next message instead of waking the
     * engine (and libzmq's I/O threads) once more on their own.
     */
    void flush_held_acks();
    void flush_sendq();
    void send_pub(const OutPub &p);
    void send_sub(const Sub &s);
    void send_hello();
    void lost(const std::string &why);
    void complete_locked(uint64_t seq, todd_comms_status st,
                         std::string_view text);
    void on_welcome(std::string_view body);

    /** Server: the engine's answers, under its lock, on any thread. */
    void on_engine_message(const Msgv &m) override;
    void on_message(const Msgv &in);
    void on_monitor(Frames &in);

    /** Agent: time until the next heartbeat or HELLO is due (lm_ held). */
    long next_timeout() const;

    /** Agent: timers after a round of input (lm_ held). */
    void on_timers();

    /**
     * Agent I/O thread: reads the DEALER and the monitor, reconnects, keeps
     * time. It polls the DEALER's notification fd rather than the socket so
     * that callers can send on the socket (under lm_) while it sleeps.
     */
    void io_run();

    /** No engine any more: wake every waiting publisher. */
    void fail_pending();
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

} // namespace todd_zmq
