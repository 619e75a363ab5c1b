// SPDX-License-Identifier: Apache-2.0
// C++ view of one plugin instance: validated configuration, RAII
// subscriptions, exceptions instead of status codes. Knows nothing of ToDD.
#pragma once

#include <todd/core/plugin_registry.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace todd::core {

/** A transport call failed; status() is the TODD_COMMS_E_* code. */
class CommsError : public std::runtime_error {
  public:
    CommsError(int32_t status, const std::string &what)
        : std::runtime_error(what), status_(status)
    {
    }
    int32_t status() const noexcept { return status_; }

  private:
    int32_t status_;
};

/** Plugin configuration: key -> text value, before validation. */
using Options = std::map<std::string, std::string>;

/** Check options against the plugin's keys and fill defaults. Throws
 *  CommsError(TODD_COMMS_E_CONFIG) naming the key and the reason. */
Options validate_options(const PluginInfo &info, const Options &given);

enum class Verdict { ack = 0, requeue = 1, reject = 2 };

/** A delivered message; views valid only during the handler call. */
struct Delivery {
    std::string_view destination;
    std::string_view payload;
    std::string_view content_type;
    bool redelivered = false;
};

using DeliveryHandler = std::function<Verdict(const Delivery &)>;

enum class LinkState {
    idle = 0,
    connecting = 1,
    connected = 2,
    reconnecting = 3,
    failed = 4,
    stopped = 5
};
std::string_view to_string(LinkState s);

using StateHandler =
    std::function<void(LinkState, int32_t status, const std::string &detail)>;

struct PublishOptions {
    std::chrono::milliseconds ttl{0}; // 0 = never expires
    std::string content_type = "text/plain";
};

/**
 * What the host saw of one transport instance since create. Counted in the
 * host around every plugin call and callback, so every transport reports
 * the same figures whatever its plugin does (docs/observability.md).
 */
struct TransportCounters {
    uint64_t published = 0;      ///< publishes the plugin accepted
    uint64_t publish_failed = 0; ///< publishes it refused or failed
    uint64_t delivered = 0;      ///< deliveries a handler settled
    uint64_t acked = 0;          ///< ... answered ack
    uint64_t requeued = 0;       ///< ... answered requeue (or that threw)
    uint64_t rejected = 0;       ///< ... answered reject, and deliveries
                                 ///< refused before any handler
    uint64_t redelivered = 0;    ///< deliveries flagged redelivered
    uint64_t connects = 0;       ///< changes to connected, the first too
    uint64_t disconnects = 0;    ///< changes from connected to another state
};

class Transport;

/** Ends its subscription when destroyed or reset(). Move-only. */
class Subscription {
  public:
    Subscription() = default;
    Subscription(Subscription &&) noexcept;
    Subscription &operator=(Subscription &&) noexcept;
    ~Subscription();
    /** Unsubscribe now; quiescent on return. Idempotent. */
    void reset();
    bool active() const { return transport_ != nullptr; }
    uint64_t cookie() const { return cookie_; }

  private:
    friend class Transport;
    Subscription(Transport *t, uint64_t cookie) : transport_(t), cookie_(cookie)
    {
    }
    Transport *transport_ = nullptr;
    uint64_t cookie_ = 0;
};

/** One instance of a plugin. Methods are thread-safe. */
class Transport {
  public:
    /** Create an instance; options are validated first. Throws CommsError. */
    static std::unique_ptr<Transport>
    create(std::shared_ptr<const Plugin> plugin, const Options &options);
    ~Transport(); // stops and destroys the instance

    Transport(const Transport &) = delete;
    Transport &operator=(const Transport &) = delete;

    /** Start connecting (returns at once). */
    void start();
    /** Stop; no handler runs after this returns. */
    void stop();

    /** Publish; throws CommsError with the plugin's last error text. */
    void publish(std::string_view destination, std::string_view payload,
                 const PublishOptions &opts = {});

    /** Publish many and wait for all; returns each one's status. */
    std::vector<int32_t> publish_batch(
        const std::vector<std::pair<std::string, std::string>> &messages,
        const PublishOptions &opts = {});

    /** Deliver a destination's messages to handler until the Subscription
     *  ends. Handler exceptions count as Verdict::requeue and are logged. */
    Subscription subscribe(const std::string &destination,
                           DeliveryHandler handler, uint32_t prefetch = 0);

    /** Called on every connection state change (from plugin threads). */
    void on_state(StateHandler handler);
    LinkState state() const;

    /** Messages this host answered with Verdict::reject (poison: they did
     *  not decode, or a handler refused them), per destination, since
     *  create. Each one is also logged with the running count. */
    std::map<std::string, uint64_t> rejected() const;
    uint64_t rejected(std::string_view destination) const;

    /** A consistent-enough snapshot (each field read atomically).
     *  Thread-safe, cheap: one relaxed load per field. */
    TransportCounters counters() const;

    const PluginInfo &plugin() const;

  private:
    friend class Subscription;
    Transport();
    void unsubscribe(uint64_t cookie) noexcept;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace todd::core
