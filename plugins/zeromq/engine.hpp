// SPDX-License-Identifier: Apache-2.0
// The queue engine run by the server-role instance: one thread owning a
// ROUTER socket, holding named queues with RabbitMQ-like semantics (held
// messages, TTL, competing consumers, ack / requeue / reject, requeue of a
// lost consumer's unacknowledged messages).
#ifndef TODD_ZEROMQ_ENGINE_HPP
#define TODD_ZEROMQ_ENGINE_HPP

#include "keys.hpp"
#include "wire.hpp"

#include <todd/comms/sdk.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace todd_zmq {

/** What the engine needs from the instance configuration. */
struct EngineSettings {
    std::string endpoint; // where agents connect (bound here)
    // undelivered messages per destination
    long long max_held = key_default_int("max_held");
    // ZMTP heartbeat interval
    long long heartbeat_ms = key_default_int("heartbeat_ms");
    // a silent peer is gone after this
    long long heartbeat_timeout_ms = key_default_int("heartbeat_timeout_ms");
    long long max_frame_bytes = key_default_int("max_frame_bytes");
};

/**
 * The server-role instance's own client side. It calls the engine directly
 * (Engine::client_send) from its own threads instead of through a socket, so
 * a server-side publish, ack or subscribe costs no thread hand-off.
 */
class LocalClient {
  public:
    virtual ~LocalClient() = default;
    /** A message from the engine to the client. Called with the engine's
     *  lock held, on whichever thread is running the engine at that moment:
     *  it must not call back into the engine. */
    virtual void on_engine_message(const Msgv &m) = 0;
    /** Engine thread, lock held: a batch of input is about to be read. */
    virtual void batch_begin() {}
    /** Engine thread, lock released: the batch is done (the client may
     *  now deliver what it collected). True when it did any work. */
    virtual bool batch_end() { return false; }
};

class Engine {
  public:
    /** ctx: the instance's ZeroMQ context (outlives the engine); local:
     *  the server instance's client side, or nullptr. */
    Engine(void *ctx, EngineSettings settings,
           const todd::comms::sdk::Host &host, LocalClient *local = nullptr);
    ~Engine();
    Engine(const Engine &) = delete;
    Engine &operator=(const Engine &) = delete;

    /** Bind the endpoint. Throws sdk::Error naming the endpoint when
     *  binding fails. */
    void bind();
    /** The endpoint as bound: port 0 (or *) replaced by the port got. */
    const std::string &endpoint() const { return s_.endpoint; }
    /** Start the thread (binds first if bind was not called). */
    void start();
    /** Stop the thread and close the socket; held messages are dropped. */
    void stop();
    /**
     * Any thread: run commands of the local client (frames without the
     * routing id) on the caller's thread, under the engine's lock; the
     * confirmations they earn reach LocalClient::on_engine_message before
     * this returns. False when the engine is not running.
     */
    bool client_send(const Msgv *msgs, size_t n);
    /**
     * Any thread but the engine's: read and handle one batch of input, for
     * a stand-in while the engine thread is busy in a delivery. Waits up to
     * timeout_ms for input or for extra_fd to become readable.
     */
    void poll_once(long timeout_ms, int extra_fd);

  private:
    friend struct EngineFuzz; // tests/fuzz/fuzz_zmq_engine.cpp drives handle()
    struct Msg {
        std::string payload;
        std::string ctype;
        int64_t expires = 0; // monotonic ms, 0 = never
        bool redelivered = false;
    };
    struct Queue;
    struct Peer;
    struct Consumer {
        Peer *peer = nullptr;
        uint64_t sub_id = 0;
        Queue *queue = nullptr;
        uint32_t prefetch = 1;
        uint32_t inflight = 0;
    };
    struct Queue {
        std::string name;
        std::deque<Msg> ready;
        std::vector<Consumer *> consumers;
        size_t rr = 0;       // round-robin position
        size_t unacked = 0;  // deliveries referring to this queue
        size_t with_ttl = 0; // ready messages that can expire (approx.)
    };
    struct Pending {
        Msg msg;
        Queue *queue = nullptr;
        uint64_t sub_id = 0;
    };
    struct Peer {
        std::string rid;
        uint64_t session = 0;
        int64_t last_seen = 0;
        bool dead = false;
        bool local = false; // the server instance's own client
        std::unordered_map<uint64_t, std::unique_ptr<Consumer>> consumers;
        std::unordered_map<uint64_t, Pending> unacked; // by delivery tag
        std::vector<uint64_t> confirms;                // not yet sent
    };

    void run();
    void handle(const Msgv &in, int64_t now);
    void on_pub(Peer &p, const Msgv &in);
    void on_sub(Peer &p, const Msgv &in);
    void on_unsub(Peer &p, const Msgv &in);
    void on_ack(Peer &p, const Msgv &in);
    void dispatch(Queue &q);
    Consumer *next_consumer(Queue &q);
    void requeue(Pending &&pd);
    void release_consumer(Peer &p, Consumer *c, bool requeue_unacked);
    void reset_peer(Peer &p);
    void drop_peer(const std::string &rid, const char *why);
    void reap_dead();
    void flush_confirms();
    void flush_confirms(Peer &p);
    void sweep(int64_t now);
    void purge_expired(Queue &q, int64_t now);
    void send_to(const std::string &rid, const std::string_view *frames,
                 size_t n);
    Queue &queue(std::string_view name);
    bool send(Peer &p, const std::string_view *frames, size_t n);

    void wake_if_readable();
    bool drain_locked(); // true when input is left to read

    // em_ guards the ROUTER socket and every field below it: the engine
    // thread takes it for each batch it reads, client_send for its call.
    // ZeroMQ sockets may change threads behind a full barrier, which the
    // mutex gives.
    std::mutex em_;
    bool running_ = false;
    int kick_fd_ = -1; // wakes the engine thread when the ROUTER has input
    int zfd_ = -1;     // the ROUTER's notification fd

    void *ctx_;
    EngineSettings s_;
    todd::comms::sdk::Host host_;
    void *router_ = nullptr;
    int stop_fd_ = -1;
    std::thread thread_;
    uint64_t epoch_ = 0;
    uint64_t next_tag_ = 0;

    Frames in_; // current message
    LocalClient *local_ = nullptr;
    std::unordered_map<std::string, std::unique_ptr<Peer>> peers_;
    std::unordered_map<std::string, std::unique_ptr<Queue>> queues_;
    std::vector<Peer *> dirty_; // peers with confirms to send
    bool any_dead_ = false;
    std::string key_; // scratch
    int64_t now_ = 0; // time of the current batch
};

} // namespace todd_zmq

#endif
