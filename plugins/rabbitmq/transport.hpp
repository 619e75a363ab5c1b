// SPDX-License-Identifier: Apache-2.0
// The RabbitMQ transport's instance: its two links and their threads. The
// definitions are by job: rabbitmq.cpp (lifecycle, state, topology, the
// plugin descriptor), publisher.cpp (the publishing link), consumer.cpp (the
// consuming link); connect.cpp opens and closes connections.
#pragma once

#include "connect.hpp"
#include "settings.hpp"

#include <todd/comms/sdk.hpp>

#include <amqp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace todd_rabbitmq {

using Clock = std::chrono::steady_clock;
using todd::comms::sdk::Config;
using todd::comms::sdk::Host;

class RabbitTransport final : public todd::comms::sdk::Transport {
  public:
    RabbitTransport(const Host &host, const Config &config);
    ~RabbitTransport() override { stop(); }

    void start() override;
    void stop() override;

    // ------------------------------------------------------------------
    // Publishing

    void publish(const char *destination, const uint8_t *payload, uint64_t len,
                 const todd_comms_publish_opts *opts) override;
    todd_comms_status publish_batch(const todd_comms_outgoing *msgs,
                                    uint32_t count,
                                    todd_comms_status *statuses) override;

    // ------------------------------------------------------------------
    // Subscribing

    void subscribe(const char *destination, uint64_t cookie,
                   const todd_comms_subscribe_opts *opts) override;
    void unsubscribe(uint64_t cookie) override;

  private:
    // How long stop() lets a live connection close cleanly.
    static constexpr milliseconds stop_grace{1000};
    // How long subscribe waits for a first connection that is not up yet.
    static constexpr milliseconds first_connect_grace{1000};

    void thread_done();

    // ------------------------------------------------------------------
    // State reporting: one state for the instance, from both links.

    enum class Link { pub = 0, con = 1 };

    void report(Link link, int32_t state, todd_comms_status st,
                const std::string &detail);

    // A connect attempt failed on one link: FAILED for errors a retry will
    // not fix by itself (credentials, TLS), otherwise (re)connecting.
    void report_failure(Link link, bool was_up, const Outcome &o);
    void check_destination(const char *d);

    // Sleep for the backoff delay unless stopping; true when stopping.
    bool backoff_wait(std::mutex &mu, std::condition_variable &cv, Backoff &bo);

    // ------------------------------------------------------------------
    // Publishing link

    struct Item {
        Item(const char *d, const uint8_t *p, uint64_t l,
             const todd_comms_publish_opts *o)
            : dest(d), payload(p), len(l), opts(o)
        {
        }
        const char *dest;
        const uint8_t *payload;
        uint64_t len;
        const todd_comms_publish_opts *opts;
        todd_comms_status status = 1; // 1: not sent yet
        std::string error;
        // In flight (under pub_mu_):
        bool in_flight = false, returned = false, lost = false;
        uint64_t seq = 0, hash = 0;
    };

    static constexpr todd_comms_status pending = 1;

    void publish_items(Item *items, size_t n);

    // Wait until none of items is in flight. One waiting publisher at a
    // time reads the socket itself (no hop through the I/O thread on the
    // latency path); the others sleep until it or the I/O thread settles.
    bool wait_confirms(std::unique_lock<std::mutex> &lk, Item *items, size_t n,
                       Clock::time_point deadline);
    void fail_pending(Item *items, size_t n, todd_comms_status st,
                      const std::string &why);

    // Publish every pending item (pub_mu_ held, link up).
    void send_items(Item *items, size_t n);

    // Declare exchange, queue and binding once per connection and
    // destination, on a separate channel so a refusal (406) cannot take
    // the publishing channel and its pending confirms with it.
    Outcome declare_for_publish(const char *dest);

    // exchange.declare + queue.declare + queue.bind on channel ch (opened
    // here if needed). Returns E_PROTOCOL naming the queue on a refusal;
    // E_UNAVAILABLE means the connection is gone (already torn down for
    // the publishing link).
    Outcome declare_topology(amqp_connection_state_t c, amqp_channel_t ch,
                             const std::string &queue, bool publisher);
    Outcome declare_failed(amqp_connection_state_t c, amqp_channel_t ch,
                           bool publisher, const std::string &what,
                           const std::string &queue);

    // The publishing connection failed (pub_mu_ held): fail in-flight
    // messages as lost (their publishers resend) and let the I/O thread
    // reconnect.
    void pub_link_lost(const std::string &why);

    // Frames may have been buffered by a publish or an RPC: make sure the
    // I/O thread looks at them rather than sleeping in poll.
    void kick_io_locked();
    void pub_loop();

    // Read every available frame of the publishing link (pub_mu_ held).
    void pub_drain();
    void settle(uint64_t tag, bool multiple, bool ack);

    // basic.return: the broker could not route a mandatory message. Match
    // it to the oldest in-flight message with the same key and body.
    void on_return(const amqp_frame_t &f);

    // ------------------------------------------------------------------
    // Consuming link

    struct Sub {
        enum class Phase { wanted, consuming, failed };
        std::string dest;
        uint64_t cookie = 0;
        uint32_t prefetch = 0;
        Phase phase = Phase::wanted;
        bool removing = false;
        amqp_channel_t channel = 0;
        todd_comms_status status = TODD_COMMS_OK;
        std::string error;
    };

    void con_loop();

    // Bring the broker in line with subs_: consume new subscriptions,
    // cancel removed ones. False when the connection died.
    bool reconcile(amqp_connection_state_t c, std::string *why);

    // Fresh numbers: frames of a closed channel may still be buffered and
    // must not be mistaken for the new one's (wraps only after 2000).
    amqp_channel_t alloc_channel();
    void free_channel(amqp_channel_t ch) { used_channels_.erase(ch); }

    Outcome start_consumer(amqp_connection_state_t c, Sub &sub);

    // Deliver everything that is readable now. False when the connection
    // died.
    bool con_drain(amqp_connection_state_t c, std::string *why);
    bool dirty();
    bool handle_con_frame(amqp_connection_state_t c, const amqp_frame_t &f,
                          std::string *why);
    void handle_delivery(amqp_connection_state_t c, amqp_envelope_t &env);

    // ------------------------------------------------------------------

    Settings s_;
    std::mutex control_mu_;
    std::atomic<bool> stopping_{false};
    std::atomic<bool> started_{false}, stopped_{false};
    std::atomic<bool> ever_up_{false};
    Clock::time_point started_at_;
    Waker stop_line_; // written once by stop(), never drained
    SocketGuard pub_guard_, con_guard_;
    std::mutex exit_mu_;
    std::condition_variable exit_cv_;
    int threads_done_ = 0;

    std::mutex state_mu_;
    int32_t link_state_[2] = {TODD_COMMS_STATE_CONNECTING,
                              TODD_COMMS_STATE_CONNECTING};
    int32_t reported_ = 0;
    std::string last_failure_;

    // Publishing link (all under pub_mu_ unless noted).
    std::mutex pub_mu_;
    std::condition_variable pub_cv_;
    Waker pub_wake_, reader_wake_;
    std::thread pub_thread_;
    Backoff pub_backoff_;        // pub thread only
    size_t pub_next_broker_ = 0; // pub thread only
    amqp_connection_state_t pub_conn_ = nullptr;
    bool pub_up_ = false;
    uint64_t pub_gen_ = 0, pub_seq_ = 0;
    std::string pub_down_reason_, pub_last_error_ = "not connected yet";
    std::map<uint64_t, Item *> inflight_;
    std::set<std::string, std::less<>> declared_;
    bool exchange_declared_ = false, decl_open_ = false;
    bool reader_active_ = false; // a publisher is reading confirms
    bool con_decl_dummy_ = true;

    // Consuming link: subs_ and flags under con_mu_; connection and
    // used_channels_ touched by the consumer thread only.
    std::mutex con_mu_;
    std::condition_variable con_cv_;
    Waker con_wake_;
    std::thread con_thread_;
    Backoff con_backoff_;
    size_t con_next_broker_ = 0;
    bool con_up_ = false, con_exited_ = false, con_attempted_ = false;
    std::map<uint64_t, std::shared_ptr<Sub>> subs_;
    std::map<amqp_channel_t, uint64_t> chan_subs_;
    std::set<amqp_channel_t> used_channels_;
    amqp_channel_t next_channel_ = 2;
};

} // namespace todd_rabbitmq
