// SPDX-License-Identifier: Apache-2.0
// The NATS transport's instance. How ToDD's destinations map onto JetStream
// is docs/nats.md; in short:
//  - one stream (`stream`, work-queue retention) holds the messages of every
//    destination, each on its own subject <subject_prefix>.<encoded name>;
//    a message stays until a subscriber acknowledges or terminates it, or
//    until retention_ms;
//  - the subscribers of a destination share one durable push consumer
//    filtered on its subject, delivering to a queue group: each message
//    reaches one of them, and one that is not acknowledged within
//    ack_wait_ms (a subscriber died) comes again;
//  - verdicts: ACK is an ack, REQUEUE a nak (delivered again at once,
//    flagged), REJECT a term; the time-to-live is a header checked against
//    the stored message's time on delivery.
// The definitions are by job: nats.cpp (lifecycle, connection and state,
// the stream, the descriptor), publish.cpp, consumer.cpp (subscriptions).
#pragma once

#include "settings.hpp"

#include <todd/comms/sdk.hpp>

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace todd_nats {

using Clock = std::chrono::steady_clock;
using todd::comms::sdk::Config;
using todd::comms::sdk::Host;

/** A message without a content-type header has this one. */
inline constexpr const char *default_content_type = "text/plain";

class NatsTransport final : public todd::comms::sdk::Transport {
  public:
    NatsTransport(const Host &host, const Config &config);
    ~NatsTransport() override { stop(); }

    void start() override;
    void stop() override;

    void publish(const char *destination, const uint8_t *payload, uint64_t len,
                 const todd_comms_publish_opts *opts) override;
    todd_comms_status publish_batch(const todd_comms_outgoing *msgs,
                                    uint32_t count,
                                    todd_comms_status *statuses) override;
    /** The acks of publish_batch's messages, on nats.c's thread. */
    static void batch_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa,
                          jsPubAckErr *pae, void *closure);

    void subscribe(const char *destination, uint64_t cookie,
                   const todd_comms_subscribe_opts *opts) override;
    void unsubscribe(uint64_t cookie) override;

    /**
     * What nats.c's connection callbacks get as closure. They run on
     * nats.c's callback thread, and the closed callback (the last one of a
     * connection) may come after stop gave up waiting for it, or from a
     * connection that an abandoned connector made after stop: so they
     * reach the transport only through this link, which stop cuts. Its
     * holders are the transport, each connector thread and each
     * connection (until its closed callback); the last one frees it.
     */
    struct Link {
        std::mutex mu;
        NatsTransport *owner = nullptr;
        bool closed = false;
        int refs = 1;
        void hold()
        {
            std::lock_guard<std::mutex> g(mu);
            ++refs;
        }
        static void release(Link *l)
        {
            bool last;
            {
                std::lock_guard<std::mutex> g(l->mu);
                last = --l->refs == 0;
            }
            if (last)
                delete l;
        }
    };
    void on_connected();
    void on_disconnected();
    void on_closed();
    void on_async_error(natsStatus st);

  private:
    // --------------------------------------------------------------
    // Connection, state and the stream (nats.cpp)
    void report(int32_t state, todd_comms_status st, const std::string &why);
    void service_loop();
    /** Connect, retrying until a server accepts (nats.c reconnects by
     *  itself from then on); false
     *  when stopping first. */
    bool connect();
    /** One natsConnection_Connect on a thread of its own (see nats.cpp). */
    struct Connector;
    /** nats.c options with this instance's callbacks. */
    OptionsPtr connection_options();
    /** Make or check the stream; false with why when it cannot be used. */
    bool ensure_stream(std::string &why, todd_comms_status &st);
    /** The connection's last error text, "" when none. */
    std::string last_error() const;
    /** Wait (bounded by deadline) until the stream is usable; false when
     *  stopping or past the deadline. */
    bool wait_ready(Clock::time_point deadline);
    /** Sleep up to d, returning early (true) when stopping. */
    bool pause(Clock::duration d);

    // --------------------------------------------------------------
    // Publishing (publish.cpp)
    /** Publish one message and wait for JetStream's ack; OK or a status
     *  with error set. */
    todd_comms_status send(const char *destination, const uint8_t *payload,
                           uint64_t len, const todd_comms_publish_opts *opts,
                           std::string &error);

    /** One publish message with our headers and options; nullptr with
     *  error set when nats.c cannot make it. */
    natsMsg *make_msg(const std::string &subject, const uint8_t *payload,
                      uint64_t len, const todd_comms_publish_opts *opts,
                      std::string &error);
    /** Enter / leave the publishers that stop waits for; false (error
     *  set) before start or once stopping. */
    bool enter_publish(std::string &error);
    void leave_publish();
    /** The batch under way (one at a time, batch_mu_): its messages'
     *  results by the sequence part of their message ids. */
    struct Batch {
        uint64_t first = 0; // sequence of msgs[0]
        std::vector<todd_comms_status> status;
        std::vector<std::string> error;
        std::vector<bool> resend; // no answer: send again
    };
    std::mutex batch_mu_;  // one batch at a time
    std::mutex batch_res_; // batch_ and its results
    Batch *batch_ = nullptr;

    // --------------------------------------------------------------
    // Subscriptions (consumer.cpp)
    struct Sub {
        std::string destination, subject, consumer, deliver;
        uint64_t cookie = 0;
        int max_ack_pending = 0;
        natsSubscription *sub = nullptr; // consumer thread only
        uint64_t epoch = 0;              // ready_epoch_ when it was last bound
        std::thread thread;
        std::atomic<bool> stop{false};
    };
    void launch(Sub &s);
    void consume(Sub &s);
    /** Make (or find) the destination's consumer and subscribe to it. */
    bool bind(Sub &s);
    void handle(Sub &s, natsMsg *m);
    /** End the subscription: nothing it holds is kept from the others. */
    void release(Sub &s);
    void finish(Sub &s);

    Settings s_;
    std::string instance_id_; // message ids: <instance>-<sequence>
    std::atomic<uint64_t> next_msg_{1};

    std::mutex control_mu_; // control calls (HOST-1 serialises; belt)
    std::atomic<bool> started_{false}; // read by publishers too
    bool stopped_ = false;
    std::atomic<bool> stopping_{false};

    std::mutex state_mu_;
    int32_t state_ = 0;
    std::string state_why_; // the detail state_ was reported with

    // The connection: made by the service thread, closed by stop.
    natsConnection *nc_ = nullptr;
    jsCtx *js_ = nullptr;
    jsCtx *jsa_ = nullptr; // asynchronous publishes: publish_batch
    std::thread service_thread_;

    // What the service thread and the others wait on.
    std::mutex svc_mu_;
    std::condition_variable svc_cv_;
    bool linked_ = false;      // nats.c has a connection to a server
    bool ready_ = false;       // ... and the stream is usable
    uint64_t ready_epoch_ = 0; // +1 each time ready_ becomes true
    bool recheck_ = false;     // (re)connected: look at the stream again
    Link *link_ = nullptr;     // made by start, cut by stop
    bool connecting_ = false;  // natsConnection_Connect has not returned
    int publishers_ = 0;       // threads inside publish

    std::map<uint64_t, std::unique_ptr<Sub>> subs_;
};

} // namespace todd_nats
