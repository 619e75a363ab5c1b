// SPDX-License-Identifier: Apache-2.0
// The Comms facade: ToDD's comms operations, implemented once on top of any
// transport plugin, so every transport behaves the same.
#pragma once

#include <todd/core/messages.hpp>
#include <todd/core/transport.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace todd::core {

/** Queue names of ToDD's topology. */
inline constexpr const char *queue_agentadvert = "agentadvert";
inline constexpr const char *queue_agentresponses = "agentresponses";
/** The group queue of an agent without a group, as the Go agent uses. */
inline constexpr const char *queue_no_group = "null";
/** Adverts expire unconsumed after this (as the Go agent). */
inline constexpr std::chrono::milliseconds advert_ttl{5000};

/** How sends behave while the transport is unavailable. */
struct SendPolicy {
    /** Keep retrying a send that failed as unavailable/timeout this long. */
    std::chrono::milliseconds retry_for{30000};
    /** First backoff step; doubles with jitter up to max_backoff. */
    std::chrono::milliseconds initial_backoff{50};
    std::chrono::milliseconds max_backoff{2000};
};

/** The largest payload the facade decodes; bigger deliveries are rejected
 *  unread. Config keys [Comms] max_message_bytes / max_response_bytes. */
struct MessageLimits {
    /** Adverts and tasks: ToDD's are a few KiB. */
    size_t max_message_bytes = size_t{1} << 20;
    /** Responses: TestData carries a testlet's output (at most 1 MiB per
     *  target at the agent) for every target of the run. */
    size_t max_response_bytes = size_t{4} << 20;
};

/**
 * Handlers return a Verdict: ack when processed, requeue to see the message
 * again, reject for poison. Messages that do not decode are logged with the
 * reason and rejected without reaching the handler.
 */
using AdvertHandler = std::function<Verdict(const msg::AgentAdvert &)>;
using TaskHandler = std::function<Verdict(const msg::Task &)>;
using ResponseHandler = std::function<Verdict(const msg::Response &)>;

class Comms {
  public:
    /** Take a created (not necessarily started) transport. */
    explicit Comms(std::unique_ptr<Transport> transport, SendPolicy policy = {},
                   MessageLimits limits = {});
    ~Comms(); // stops the transport

    /** Start the transport (returns at once; connection in background). */
    void start();
    /** Stop: no handler runs after this returns. Cancels sends first. */
    void stop();
    /** Wake every send_raw waiting to retry and make it fail at once with
     *  E_STATE, as every later send does: a thread blocked in a send can be
     *  joined at once. Thread-safe; stop calls it. */
    void cancel_sends();

    // Agent side -----------------------------------------------------------

    /** Publish an advert to "agentadvert" with a 5 s time-to-live. */
    void advertise_agent(const msg::AgentAdvert &advert);
    /** Receive the tasks of queue <uuid>. */
    Subscription listen_for_tasks(const std::string &uuid, TaskHandler handler);
    /**
     * Receive the tasks of the agent's group queue ("null" until a group is
     * set). The subscription moves whenever set_group is called.
     */
    void watch_for_group(TaskHandler handler);
    /** Move the group subscription to this group's queue ("" = none):
     *  the old queue is unsubscribed before the new one is subscribed.
     *  From inside a Comms handler it throws CommsError(E_STATE), as do
     *  watch_for_group, listen_* and stop. */
    void set_group(const std::string &group);
    /** Current group ("" = none). */
    std::string group() const;
    /** Publish a response to "agentresponses". */
    void send_response(const msg::Response &response);

    // Server side ----------------------------------------------------------

    /** Receive adverts from "agentadvert". */
    Subscription listen_for_agent(AdvertHandler handler);
    /** Publish a task to queue (an agent UUID or a group name). */
    void send_task(const std::string &queue, const msg::Task &task);
    /** Receive responses from "agentresponses". */
    Subscription listen_for_responses(ResponseHandler handler);

    /** Publish raw bytes with the send policy (used by the above):
     *  E_UNAVAILABLE/E_TIMEOUT are retried with backoff for
     *  policy.retry_for, other failures throw at once; the CommsError
     *  names the queue and the cause. */
    void send_raw(const std::string &queue, std::string_view payload,
                  const PublishOptions &opts = {});

    Transport &transport() { return *transport_; }

    const MessageLimits &limits() const { return limits_; }
    /** Deliveries rejected unread for being over a MessageLimits bound. */
    uint64_t oversized_rejected() const { return refused_->oversized.load(); }
    /** Deliveries rejected because they did not decode as ToDD JSON. */
    uint64_t undecodable_rejected() const
    {
        return refused_->undecodable.load();
    }

    /** Deliveries the facade rejects before any handler, by reason; shared
     *  with the decoding handlers, which may outlive a moved subscription. */
    struct Refusals {
        std::atomic<uint64_t> oversized{0}, undecodable{0};
    };

  private:
    std::unique_ptr<Transport> transport_;
    SendPolicy policy_;
    MessageLimits limits_;
    std::shared_ptr<Refusals> refused_ = std::make_shared<Refusals>();
    std::mutex control_mu_; // serialises group moves and stop
    std::mutex cancel_mu_;  // guards cancelled_ for cancel_cv_
    std::condition_variable cancel_cv_;
    bool cancelled_ = false;
    mutable std::mutex group_mu_; // guards group_ only, never held in I/O
    std::string group_;
    TaskHandler group_handler_;
    Subscription group_sub_;
};

} // namespace todd::core
