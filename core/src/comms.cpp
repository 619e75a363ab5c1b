// SPDX-License-Identifier: Apache-2.0
// The Comms facade: ToDD's operations (AdvertiseAgent, ListenForAgent,
// SendTask, ListenForTasks, WatchForGroup, SendResponse, ListenForResponses)
// written once over any Transport, so every plugin behaves the same.
#include <todd/core/comms.hpp>

#include <todd/core/log.hpp>

#include <algorithm>
#include <random>

namespace todd::core {
namespace {

constexpr std::string_view component = "comms";

// Depth of Comms handlers running on this thread: control calls made from
// inside one would deadlock on the transport's quiescence guarantees.
thread_local int handler_depth = 0;

struct HandlerScope {
    HandlerScope() { ++handler_depth; }
    ~HandlerScope() { --handler_depth; }
    HandlerScope(const HandlerScope &) = delete;
    HandlerScope &operator=(const HandlerScope &) = delete;
};

void refuse_in_handler(const char *op)
{
    if (handler_depth > 0)
        throw CommsError(TODD_COMMS_E_STATE,
                         std::string("Comms::") + op +
                             " called from inside a message handler: it "
                             "would wait for that handler to finish; call "
                             "it from another thread");
}

/** A DeliveryHandler that decodes, rejects what does not decode (logging
 *  the queue and the reason), and passes the rest to the user's handler. */
template <class Msg, class Decode, class Handler>
DeliveryHandler decoding(std::string queue, Decode decode, Handler handler,
                         size_t max_bytes, const char *key,
                         std::shared_ptr<Comms::Refusals> refused)
{
    return [queue = std::move(queue), decode, handler = std::move(handler),
            max_bytes, key,
            refused = std::move(refused)](const Delivery &d) -> Verdict {
        HandlerScope scope;
        // Before decoding: a huge message is never parsed nor kept.
        if (d.payload.size() > max_bytes) {
            ++refused->oversized;
            log::warn(component,
                      "queue \"" + queue + "\": rejecting a message of " +
                          std::to_string(d.payload.size()) +
                          " bytes: over the bound of " +
                          std::to_string(max_bytes) + " bytes (" + key + ")");
            return Verdict::reject;
        }
        std::optional<Msg> m;
        try {
            m.emplace(decode(d.payload));
        } catch (const msg::DecodeError &e) {
            ++refused->undecodable;
            log::warn(component, "queue \"" + queue +
                                     "\": rejecting an undecodable message (" +
                                     std::to_string(d.payload.size()) +
                                     " bytes): " + e.what());
            return Verdict::reject;
        }
        return handler(*m);
    };
}

std::string group_queue(const std::string &group)
{
    return group.empty() ? queue_no_group : group;
}

} // namespace

Comms::Comms(std::unique_ptr<Transport> transport, SendPolicy policy,
             MessageLimits limits)
    : transport_(std::move(transport)), policy_(policy), limits_(limits)
{
    if (!transport_)
        throw CommsError(TODD_COMMS_E_INVAL, "Comms needs a transport");
}

Comms::~Comms()
{
    try {
        group_sub_.reset();
        transport_->stop();
    } catch (const std::exception &e) {
        log::error(component,
                   std::string("stopping the transport: ") + e.what());
    }
}

void Comms::start()
{
    transport_->start();
}

void Comms::cancel_sends()
{
    {
        std::lock_guard lk(cancel_mu_);
        cancelled_ = true;
    }
    cancel_cv_.notify_all();
}

void Comms::stop()
{
    refuse_in_handler("stop");
    cancel_sends();
    std::lock_guard lk(control_mu_);
    group_sub_.reset();
    transport_->stop();
}

void Comms::advertise_agent(const msg::AgentAdvert &advert)
{
    PublishOptions opts;
    opts.ttl = advert_ttl;
    send_raw(queue_agentadvert, msg::encode(advert), opts);
}

Subscription Comms::listen_for_tasks(const std::string &uuid,
                                     TaskHandler handler)
{
    refuse_in_handler("listen_for_tasks");
    if (uuid.empty())
        throw CommsError(TODD_COMMS_E_INVAL,
                         "listen_for_tasks: empty agent UUID");
    return transport_->subscribe(
        uuid, decoding<msg::Task>(uuid, msg::decode_task, std::move(handler),
                                  limits_.max_message_bytes,
                                  "max_message_bytes", refused_));
}

void Comms::watch_for_group(TaskHandler handler)
{
    refuse_in_handler("watch_for_group");
    std::lock_guard lk(control_mu_);
    group_handler_ = std::move(handler);
    group_sub_.reset();
    const std::string q = group_queue(group());
    group_sub_ = transport_->subscribe(
        q, decoding<msg::Task>(q, msg::decode_task, group_handler_,
                               limits_.max_message_bytes, "max_message_bytes",
                               refused_));
}

void Comms::set_group(const std::string &group)
{
    refuse_in_handler("set_group");
    std::lock_guard lk(control_mu_);
    {
        std::lock_guard g(group_mu_);
        if (group == group_ && (group_sub_.active() || !group_handler_))
            return;
        group_ = group;
    }
    if (!group_handler_)
        return; // watch_for_group will subscribe to it
    // Old queue first: messages for the new group wait in its queue.
    group_sub_.reset();
    const std::string q = group_queue(group);
    log::info(component,
              "moving the group subscription to queue \"" + q + "\"");
    group_sub_ = transport_->subscribe(
        q, decoding<msg::Task>(q, msg::decode_task, group_handler_,
                               limits_.max_message_bytes, "max_message_bytes",
                               refused_));
}

std::string Comms::group() const
{
    std::lock_guard g(group_mu_);
    return group_;
}

void Comms::send_response(const msg::Response &response)
{
    send_raw(queue_agentresponses, msg::encode(response));
}

Subscription Comms::listen_for_agent(AdvertHandler handler)
{
    refuse_in_handler("listen_for_agent");
    return transport_->subscribe(
        queue_agentadvert,
        decoding<msg::AgentAdvert>(
            queue_agentadvert, msg::decode_advert, std::move(handler),
            limits_.max_message_bytes, "max_message_bytes", refused_));
}

void Comms::send_task(const std::string &queue, const msg::Task &task)
{
    // The Go server sent to "" when an advert had no UUID, which a broker
    // turns into a queue nobody reads: refuse instead.
    if (queue.empty())
        throw CommsError(TODD_COMMS_E_INVAL,
                         "send_task: empty queue name (agent UUID or group)");
    send_raw(queue, msg::encode(task));
}

Subscription Comms::listen_for_responses(ResponseHandler handler)
{
    refuse_in_handler("listen_for_responses");
    return transport_->subscribe(
        queue_agentresponses,
        decoding<msg::Response>(queue_agentresponses, msg::decode_response,
                                std::move(handler), limits_.max_response_bytes,
                                "max_response_bytes", refused_));
}

void Comms::send_raw(const std::string &queue, std::string_view payload,
                     const PublishOptions &opts)
{
    using clock = std::chrono::steady_clock;
    using std::chrono::milliseconds;
    const auto begin = clock::now();
    const auto deadline = begin + policy_.retry_for;
    milliseconds backoff = std::max(policy_.initial_backoff, milliseconds(1));
    const milliseconds max_backoff = std::max(policy_.max_backoff, backoff);
    thread_local std::minstd_rand rng(std::random_device{}());
    const auto cancelled = [&] {
        return CommsError(TODD_COMMS_E_STATE,
                          "send to queue \"" + queue +
                              "\" failed: cancelled, stopping");
    };
    for (int attempt = 1;; ++attempt) {
        {
            std::lock_guard lk(cancel_mu_);
            if (cancelled_)
                throw cancelled();
        }
        try {
            transport_->publish(queue, payload, opts);
            if (attempt > 1)
                log::info(component, "sent to queue \"" + queue + "\" after " +
                                         std::to_string(attempt) + " attempts");
            return;
        } catch (const CommsError &e) {
            const bool transient = e.status() == TODD_COMMS_E_UNAVAILABLE ||
                                   e.status() == TODD_COMMS_E_TIMEOUT;
            if (!transient)
                throw CommsError(e.status(), "send to queue \"" + queue +
                                                 "\" failed: " + e.what());
            const auto now = clock::now();
            if (now >= deadline) {
                const auto spent =
                    std::chrono::duration_cast<milliseconds>(now - begin);
                throw CommsError(
                    e.status(),
                    "send to queue \"" + queue + "\" gave up after " +
                        std::to_string(attempt) + " attempt(s) in " +
                        std::to_string(spent.count()) + " ms (retry limit " +
                        std::to_string(policy_.retry_for.count()) +
                        " ms): " + e.what());
            }
            // Jitter in [backoff/2, backoff] spreads out many senders that
            // lost the same broker at the same moment.
            std::uniform_int_distribution<long long> jitter(backoff.count() / 2,
                                                            backoff.count());
            auto pause = milliseconds(jitter(rng));
            pause = std::min(pause, std::chrono::duration_cast<milliseconds>(
                                        deadline - now) +
                                        milliseconds(1));
            if (attempt == 1)
                log::warn(component,
                          "send to queue \"" + queue +
                              "\" failed, retrying for up to " +
                              std::to_string(policy_.retry_for.count()) +
                              " ms: " + e.what());
            std::unique_lock lk(cancel_mu_);
            if (cancel_cv_.wait_for(lk, pause, [&] { return cancelled_; }))
                throw cancelled();
            backoff = std::min(backoff * 2, max_backoff);
        }
    }
}

} // namespace todd::core
