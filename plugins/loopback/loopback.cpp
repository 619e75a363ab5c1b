// SPDX-License-Identifier: Apache-2.0
// The loopback transport: the smallest complete ToDD comms plugin. It moves
// messages between instances in the same process through one shared Broker
// (broker.hpp), with the semantics a RabbitMQ queue gives. Built only against
// the plugin SDK, as a third party would build a plugin.
#include "broker.hpp"

#include <todd/comms/sdk.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>

namespace {

using todd::comms::sdk::Config;
using todd::comms::sdk::Error;
using todd::comms::sdk::Host;

const todd_comms_config_key loopback_keys[] = {
    {"max_queue_length", TODD_COMMS_CFG_INT, 0, "100000",
     "publish fails with 'limit reached' when a queue holds this many ready "
     "messages (0 = unbounded)"},
    {"prefetch", TODD_COMMS_CFG_INT, 0, "1",
     "unsettled deliveries per subscription when the subscriber asks for 0"},
};

long long non_negative(const Config &cfg, const char *key)
{
    long long v = cfg.integer(key);
    if (v < 0)
        throw Error(TODD_COMMS_E_CONFIG, std::string("configuration key '") +
                                             key + "' must be >= 0, got " +
                                             std::to_string(v));
    return v;
}

class Loopback : public todd::comms::sdk::Transport {
  public:
    Loopback(const Host &host, const Config &cfg)
        : Transport(host, cfg),
          max_queue_length_(non_negative(cfg, "max_queue_length")),
          default_prefetch_(
              static_cast<uint32_t>(non_negative(cfg, "prefetch")))
    {
    }

    ~Loopback() override { stop(); }

    void start() override
    {
        std::lock_guard lock(mutex_);
        if (stopped_)
            throw Error(TODD_COMMS_E_STATE, "start after stop");
        if (started_)
            return;
        host().state(TODD_COMMS_STATE_CONNECTING);
        started_ = true;
        for (auto &[cookie, sub] : subs_)
            activate(cookie, sub);
        host().state(TODD_COMMS_STATE_CONNECTED);
    }

    void stop() override
    {
        std::lock_guard lock(mutex_);
        if (stopped_)
            return;
        stopped_ = true;
        publish_stopped_.store(true);
        for (auto &[cookie, sub] : subs_)
            sub.consumer.reset(); // joins: quiescent
        subs_.clear();
        if (started_)
            host().state(TODD_COMMS_STATE_STOPPED);
    }

    void publish(const char *destination, const uint8_t *payload, uint64_t len,
                 const todd_comms_publish_opts *opts) override
    {
        if (publish_stopped_.load(std::memory_order_relaxed))
            throw Error(TODD_COMMS_E_STATE, "publish after stop");
        if (*destination == '\0')
            throw Error(TODD_COMMS_E_INVAL, "empty destination");
        todd_comms_status st = loopback::Broker::shared().publish(
            destination, payload, len, todd::comms::sdk::content_type(opts),
            todd::comms::sdk::ttl_ms(opts), max_queue_length_);
        if (st == TODD_COMMS_E_FULL)
            throw Error(st, "queue '" + std::string(destination) + "' holds " +
                                std::to_string(max_queue_length_) +
                                " messages (max_queue_length)");
    }

    void subscribe(const char *destination, uint64_t cookie,
                   const todd_comms_subscribe_opts *opts) override
    {
        std::lock_guard lock(mutex_);
        if (stopped_)
            throw Error(TODD_COMMS_E_STATE, "subscribe after stop");
        if (subs_.count(cookie) != 0)
            throw Error(TODD_COMMS_E_INVAL,
                        "subscription " + std::to_string(cookie) + " exists");
        uint32_t prefetch = todd::comms::sdk::prefetch(opts);
        Sub &sub = subs_[cookie];
        sub.destination = destination;
        sub.prefetch = prefetch != 0 ? prefetch : default_prefetch_;
        if (started_)
            activate(cookie, sub);
    }

    void unsubscribe(uint64_t cookie) override
    {
        std::lock_guard lock(mutex_);
        auto it = subs_.find(cookie);
        if (it == subs_.end())
            throw Error(TODD_COMMS_E_INVAL,
                        "no subscription " + std::to_string(cookie));
        it->second.consumer.reset(); // joins: quiescent for the cookie
        subs_.erase(it);
    }

  private:
    struct Sub {
        std::string destination;
        uint32_t prefetch = 1;
        std::unique_ptr<loopback::Consumer> consumer;
    };

    /** Start delivering a subscription's messages to the host. */
    void activate(uint64_t cookie, Sub &sub)
    {
        const Host h = host();
        sub.consumer = loopback::Broker::shared().consume(
            sub.destination, sub.prefetch,
            [h, cookie](const loopback::Message &m) {
                todd_comms_message msg{};
                msg.struct_size = sizeof msg;
                msg.flags = m.redelivered ? TODD_COMMS_MSG_REDELIVERED : 0;
                msg.destination = m.destination.c_str();
                msg.payload = m.payload.data();
                msg.payload_len = m.payload.size();
                msg.content_type = m.content_type.c_str();
                return h.deliver(cookie, msg);
            });
    }

    const uint64_t max_queue_length_;
    const uint32_t default_prefetch_;
    std::mutex mutex_; // guards the control state below
    bool started_ = false;
    bool stopped_ = false;
    std::atomic<bool> publish_stopped_{false};
    std::map<uint64_t, Sub> subs_;
};

} // namespace

TODD_COMMS_PLUGIN(Loopback, "loopback", "1.0.0", "Apache-2.0",
                  "In-process reference transport: named queues shared by "
                  "every instance in the process",
                  TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL |
                      TODD_COMMS_CAP_BATCH,
                  loopback_keys)
