// SPDX-License-Identifier: Apache-2.0
// todd::core::Transport: one plugin instance behind a C++ interface. Owns the
// host API table the plugin calls back into; rule IDs are docs/plugin-abi.md.
#include <todd/core/log.hpp>
#include <todd/core/transport.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

namespace todd::core {
namespace {

/** The plugin's last error line on this thread, attached to CommsError so the
 *  caller sees why (plugins log the detail just before returning). */
struct LastError {
    const void *owner = nullptr;
    std::string text;
};
thread_local LastError tl_last_error;

/** Instances whose callbacks are running on this thread (HOST-1). */
thread_local std::vector<const void *> tl_in_callback;

struct CallbackScope {
    explicit CallbackScope(const void *owner)
    {
        tl_in_callback.push_back(owner);
    }
    ~CallbackScope() { tl_in_callback.pop_back(); }
    CallbackScope(const CallbackScope &) = delete;
    CallbackScope &operator=(const CallbackScope &) = delete;
};

bool in_callback_of(const void *owner)
{
    return std::find(tl_in_callback.begin(), tl_in_callback.end(), owner) !=
           tl_in_callback.end();
}

bool parses_int(const std::string &v)
{
    if (v.empty())
        return false;
    errno = 0;
    char *end = nullptr;
    (void)std::strtoll(v.c_str(), &end, 10);
    return errno == 0 && end != v.c_str() && *end == '\0';
}

bool parses_bool(const std::string &v)
{
    static const char *ok[] = {"true", "false", "yes", "no",
                               "on",   "off",   "1",   "0"};
    return std::any_of(std::begin(ok), std::end(ok),
                       [&](const char *s) { return v == s; });
}

log::Level clamp_level(int32_t level)
{
    if (level < TODD_COMMS_LOG_ERROR)
        level = TODD_COMMS_LOG_ERROR;
    if (level > TODD_COMMS_LOG_TRACE)
        level = TODD_COMMS_LOG_TRACE;
    return static_cast<log::Level>(level);
}

} // namespace

std::string_view to_string(LinkState s)
{
    switch (s) {
    case LinkState::idle: return "idle";
    case LinkState::connecting: return "connecting";
    case LinkState::connected: return "connected";
    case LinkState::reconnecting: return "reconnecting";
    case LinkState::failed: return "failed";
    case LinkState::stopped: return "stopped";
    }
    return "unknown";
}

Options validate_options(const PluginInfo &info, const Options &given)
{
    auto find = [&](const std::string &k) -> const ConfigKeyInfo * {
        for (const auto &key : info.keys)
            if (key.name == k)
                return &key;
        return nullptr;
    };
    Options out;
    for (const auto &[k, v] : given) {
        const ConfigKeyInfo *key = find(k);
        if (key == nullptr) {
            std::string known;
            for (const auto &key : info.keys)
                known += (known.empty() ? "" : ", ") + key.name;
            throw CommsError(
                TODD_COMMS_E_CONFIG,
                "unknown configuration key '" + k + "' for plugin '" +
                    info.name +
                    "' (known keys: " + (known.empty() ? "none" : known) + ")");
        }
        if (key->type == TODD_COMMS_CFG_INT && !parses_int(v))
            throw CommsError(TODD_COMMS_E_CONFIG,
                             "configuration key '" + k + "' of plugin '" +
                                 info.name + "' must be an integer, got '" + v +
                                 "'");
        if (key->type == TODD_COMMS_CFG_BOOL && !parses_bool(v))
            throw CommsError(TODD_COMMS_E_CONFIG,
                             "configuration key '" + k + "' of plugin '" +
                                 info.name +
                                 "' must be a boolean (true/false, yes/no, "
                                 "on/off, 1/0), got '" +
                                 v + "'");
        out[k] = v;
    }
    for (const auto &key : info.keys) {
        if (out.count(key.name) != 0)
            continue;
        if (key.default_value)
            out[key.name] = *key.default_value;
        else if (key.required)
            throw CommsError(TODD_COMMS_E_CONFIG,
                             "missing required configuration key '" + key.name +
                                 "' of plugin '" + info.name + "'" +
                                 (key.description.empty()
                                      ? ""
                                      : " (" + key.description + ")"));
    }
    return out;
}

struct Transport::Impl {
    std::shared_ptr<const Plugin> plugin;
    const todd_comms_plugin_descriptor *d = nullptr;
    std::string component; // log component: the plugin name
    todd_comms_host_api api{};
    todd_comms_instance *inst = nullptr;

    std::mutex control; // serialises Control calls (HOST-1)
    bool started = false;
    std::atomic<bool> stopped{false};
    std::atomic<bool> late_callback_logged{false};
    std::atomic<int> state{static_cast<int>(LinkState::idle)};

    /** A subscription's handler and what its deliveries were answered. */
    struct Sub {
        explicit Sub(DeliveryHandler f) : fn(std::move(f)) {}
        DeliveryHandler fn;
        // The ABI serialises one subscription's deliveries, so each count
        // has one writer: a plain add, no locked instruction on the path
        // of every message. counters() reads them under `handlers`.
        std::atomic<uint64_t> acked{0}, requeued{0}, rejected{0},
            redelivered{0};
        static void add(std::atomic<uint64_t> &c)
        {
            c.store(c.load(std::memory_order_relaxed) + 1,
                    std::memory_order_relaxed);
        }
    };
    mutable std::mutex handlers; // guards subs, detached, on_state, ended
    std::map<uint64_t, std::shared_ptr<Sub>> subs;
    // Unsubscribed from inside a handler, plugin side pending: no more
    // calls to the handler, counted until the plugin side is done.
    std::map<uint64_t, std::shared_ptr<Sub>> detached;
    std::shared_ptr<StateHandler> on_state;
    std::atomic<uint64_t> next_cookie{1};
    std::vector<std::thread> unsubscribers;

    mutable std::mutex counts; // guards rejected
    std::map<std::string, uint64_t, std::less<>> rejected;

    // TransportCounters. Publishes are counted here, as relaxed atomics on
    // a cache line of their own (publishing threads write it, delivering
    // threads do not); deliveries in their Sub. `ended` keeps the verdicts
    // of the subscriptions that are gone; `refused` the deliveries rejected
    // before any handler.
    struct Counts {
        alignas(64) std::atomic<uint64_t> published{0}, publish_failed{0};
        alignas(64) std::atomic<uint64_t> refused{0}, connects{0},
            disconnects{0};
    } tally;
    struct Verdicts {
        uint64_t acked = 0, requeued = 0, rejected = 0, redelivered = 0;
        void add(const Sub &s)
        {
            acked += s.acked.load(std::memory_order_relaxed);
            requeued += s.requeued.load(std::memory_order_relaxed);
            rejected += s.rejected.load(std::memory_order_relaxed);
            redelivered += s.redelivered.load(std::memory_order_relaxed);
        }
    } ended; // guarded by `handlers`
    /** Forget a subscription, keeping its counts; caller holds handlers.
     *  Its deliveries are over: the plugin side is unsubscribed. */
    void end_sub(std::map<uint64_t, std::shared_ptr<Sub>> &from,
                 uint64_t cookie)
    {
        auto it = from.find(cookie);
        if (it == from.end())
            return;
        ended.add(*it->second);
        from.erase(it);
    }
    static void bump(std::atomic<uint64_t> &c, uint64_t by = 1)
    {
        c.fetch_add(by, std::memory_order_relaxed);
    }
    void count_batch(const std::vector<int32_t> &statuses)
    {
        uint64_t ok = 0;
        for (int32_t st : statuses)
            ok += st == TODD_COMMS_OK;
        bump(tally.published, ok);
        bump(tally.publish_failed, statuses.size() - ok);
    }

    /** A REJECT verdict for destination: count it there, log the running
     *  count (TransportCounters counts it where it was decided). */
    void count_reject(std::string_view destination)
    {
        uint64_t n;
        {
            std::lock_guard lock(counts);
            auto it = rejected.find(destination);
            if (it == rejected.end())
                it = rejected.emplace(std::string(destination), 0).first;
            n = ++it->second;
        }
        log::info(component, "rejected a message from '" +
                                 std::string(destination) + "' (" +
                                 std::to_string(n) + " rejected there so far)");
    }

    todd_comms_host_ctx *ctx()
    {
        return reinterpret_cast<todd_comms_host_ctx *>(this);
    }
    static Impl *self(todd_comms_host_ctx *c)
    {
        return reinterpret_cast<Impl *>(c);
    }

    void begin_call() { tl_last_error.owner = nullptr; }

    /** "<plugin>: <what> failed: <status text> (<last error line>)" */
    std::string failure(const std::string &what, int32_t status) const
    {
        std::string msg = component + ": " + what +
                          " failed: " + todd_comms_status_str(status);
        if (tl_last_error.owner == this && !tl_last_error.text.empty())
            msg += " (" + tl_last_error.text + ")";
        return msg;
    }

    void check_not_in_callback(const char *what) const
    {
        if (in_callback_of(this))
            throw CommsError(TODD_COMMS_E_STATE,
                             component + ": " + what +
                                 " called from inside a delivery or state "
                                 "handler of the same "
                                 "transport; not allowed (HOST-1)");
    }

    void late_callback(const char *what)
    {
        if (!late_callback_logged.exchange(true))
            log::error(component, std::string("plugin broke ABI-8: ") + what +
                                      " callback after stop returned; ignored");
    }

    // Host API callbacks: noexcept, never let an exception reach the plugin.
    static int32_t cb_log_enabled(todd_comms_host_ctx *, int32_t level) noexcept
    {
        return log::enabled(clamp_level(level)) ? 1 : 0;
    }

    static void cb_log(todd_comms_host_ctx *c, int32_t level,
                       const char *message) noexcept
    {
        try {
            Impl *s = self(c);
            std::string_view m = message ? message : "(null)";
            if (level <= TODD_COMMS_LOG_ERROR) {
                tl_last_error.owner = s;
                tl_last_error.text.assign(m);
            }
            log::write(clamp_level(level), s->component, m);
        } catch (...) {
        }
    }

    static int32_t cb_deliver(todd_comms_host_ctx *c, uint64_t cookie,
                              const todd_comms_message *m) noexcept
    {
        Impl *s = self(c);
        try {
            if (s->stopped.load(std::memory_order_relaxed)) {
                s->late_callback("deliver");
                return TODD_COMMS_VERDICT_REQUEUE;
            }
            if (m == nullptr ||
                !TODD_COMMS_HAS_FIELD(m, todd_comms_message, content_type)) {
                log::error(
                    s->component,
                    "deliver with a NULL or truncated message; rejected");
                bump(s->tally.refused);
                return TODD_COMMS_VERDICT_REJECT;
            }
            std::shared_ptr<Sub> h;
            {
                std::lock_guard lock(s->handlers);
                auto it = s->subs.find(cookie);
                if (it == s->subs.end()) {
                    // Unsubscribed from inside a handler: let another consumer
                    // have it.
                    if (s->detached.count(cookie) != 0)
                        return TODD_COMMS_VERDICT_REQUEUE;
                    log::warn(s->component,
                              "deliver for unknown subscription " +
                                  std::to_string(cookie) + "; rejected");
                    s->count_reject(m->destination ? m->destination : "");
                    bump(s->tally.refused);
                    return TODD_COMMS_VERDICT_REJECT;
                }
                h = it->second;
            }
            Delivery dv;
            dv.destination = m->destination ? m->destination : "";
            dv.payload =
                std::string_view(reinterpret_cast<const char *>(m->payload),
                                 m->payload ? m->payload_len : 0);
            dv.content_type = m->content_type ? m->content_type : "";
            dv.redelivered = (m->flags & TODD_COMMS_MSG_REDELIVERED) != 0;
            if (dv.redelivered)
                Sub::add(h->redelivered);
            CallbackScope scope(s);
            try {
                Verdict v = h->fn(dv);
                if (v == Verdict::reject) {
                    Sub::add(h->rejected);
                    s->count_reject(dv.destination);
                } else {
                    Sub::add(v == Verdict::ack ? h->acked : h->requeued);
                }
                return static_cast<int32_t>(v);
            } catch (const std::exception &e) {
                log::warn(s->component,
                          "handler for '" + std::string(dv.destination) +
                              "' threw: " + e.what() + "; message requeued");
            } catch (...) {
                log::warn(
                    s->component,
                    "handler for '" + std::string(dv.destination) +
                        "' threw a non-standard exception; message requeued");
            }
            Sub::add(h->requeued);
            return TODD_COMMS_VERDICT_REQUEUE;
        } catch (...) {
            return TODD_COMMS_VERDICT_REQUEUE;
        }
    }

    static void cb_state(todd_comms_host_ctx *c, int32_t state,
                         todd_comms_status status, const char *detail) noexcept
    {
        Impl *s = self(c);
        try {
            if (s->stopped.load()) {
                s->late_callback("state");
                return;
            }
            if (state < TODD_COMMS_STATE_CONNECTING ||
                state > TODD_COMMS_STATE_STOPPED) {
                log::warn(s->component,
                          "unknown connection state " + std::to_string(state));
                return;
            }
            int before = s->state.exchange(state);
            if (state == TODD_COMMS_STATE_CONNECTED &&
                before != TODD_COMMS_STATE_CONNECTED)
                bump(s->tally.connects);
            else if (before == TODD_COMMS_STATE_CONNECTED &&
                     state != TODD_COMMS_STATE_CONNECTED)
                bump(s->tally.disconnects);
            std::string text = detail ? detail : "";
            log::write(
                state == TODD_COMMS_STATE_FAILED ? log::Level::warn
                                                 : log::Level::debug,
                s->component,
                "link " +
                    std::string(to_string(static_cast<LinkState>(state))) +
                    (status != TODD_COMMS_OK
                         ? std::string(": ") + todd_comms_status_str(status)
                         : std::string()) +
                    (text.empty() ? "" : " (" + text + ")"));
            std::shared_ptr<StateHandler> h;
            {
                std::lock_guard lock(s->handlers);
                h = s->on_state;
            }
            if (h && *h) {
                CallbackScope scope(s);
                (*h)(static_cast<LinkState>(state), status, text);
            }
        } catch (const std::exception &e) {
            log::warn(s->component,
                      std::string("state handler threw: ") + e.what());
        } catch (...) {
        }
    }

    /** Plugin-side unsubscribe; caller holds `control`. */
    void unsubscribe_locked(uint64_t cookie) noexcept
    {
        if (!stopped.load()) {
            begin_call();
            int32_t st = d->unsubscribe(inst, cookie);
            if (st != TODD_COMMS_OK)
                log::error(
                    component,
                    failure("unsubscribe " + std::to_string(cookie), st));
        }
        std::lock_guard lock(handlers);
        end_sub(subs, cookie);
        end_sub(detached, cookie);
    }

    void join_unsubscribers()
    {
        std::vector<std::thread> ts;
        {
            std::lock_guard lock(handlers);
            ts.swap(unsubscribers);
        }
        for (auto &t : ts)
            t.join();
    }
};

Transport::Transport() : impl_(std::make_unique<Impl>()) {}

std::unique_ptr<Transport>
Transport::create(std::shared_ptr<const Plugin> plugin, const Options &options)
{
    if (!plugin)
        throw CommsError(TODD_COMMS_E_INVAL, "Transport::create: no plugin");
    Options opts = validate_options(plugin->info(), options);

    std::unique_ptr<Transport> t(new Transport());
    Impl &i = *t->impl_;
    i.plugin = std::move(plugin);
    i.d = &i.plugin->descriptor();
    i.component = i.plugin->info().name;
    i.api.struct_size = sizeof i.api;
    i.api.abi_minor = TODD_COMMS_ABI_MINOR;
    i.api.log_enabled = &Impl::cb_log_enabled;
    i.api.log = &Impl::cb_log;
    i.api.deliver = &Impl::cb_deliver;
    i.api.state = &Impl::cb_state;

    std::vector<todd_comms_kv> kv;
    kv.reserve(opts.size());
    for (const auto &[k, v] : opts)
        kv.push_back({k.c_str(), v.c_str()});
    todd_comms_config cfg{sizeof(todd_comms_config),
                          static_cast<uint32_t>(kv.size()), kv.data()};

    i.begin_call();
    todd_comms_instance *inst = nullptr;
    int32_t st = i.d->create(&i.api, i.ctx(), &cfg, &inst);
    if (st != TODD_COMMS_OK)
        throw CommsError(st, i.failure("create", st));
    if (inst == nullptr)
        throw CommsError(TODD_COMMS_E_INTERNAL,
                         i.component + ": create returned OK but no instance");
    i.inst = inst;
    return t;
}

Transport::~Transport()
{
    Impl &i = *impl_;
    if (i.inst == nullptr)
        return;
    if (in_callback_of(&i)) {
        // Destroying it here would wait for ourselves; leak it instead.
        log::error(i.component,
                   "transport destroyed from inside its own handler; instance "
                   "leaked to avoid a deadlock");
        (void)impl_.release();
        return;
    }
    try {
        stop();
    } catch (const std::exception &e) {
        log::error(i.component, e.what());
    }
    i.join_unsubscribers();
    i.d->destroy(i.inst);
    i.inst = nullptr;
}

void Transport::start()
{
    Impl &i = *impl_;
    i.check_not_in_callback("start");
    std::lock_guard lock(i.control);
    if (i.stopped.load())
        throw CommsError(TODD_COMMS_E_STATE,
                         i.component + ": start after stop");
    if (i.started)
        return;
    i.begin_call();
    int32_t st = i.d->start(i.inst);
    if (st != TODD_COMMS_OK)
        throw CommsError(st, i.failure("start", st));
    i.started = true;
}

void Transport::stop()
{
    Impl &i = *impl_;
    i.check_not_in_callback("stop");
    {
        std::lock_guard lock(i.control);
        if (i.stopped.load())
            return;
        i.begin_call();
        int32_t st = i.d->stop(i.inst);
        // Final either way: the ABI allows only destroy after stop.
        i.stopped.store(true);
        i.state.store(static_cast<int>(LinkState::stopped));
        if (st != TODD_COMMS_OK)
            log::error(i.component, i.failure("stop", st));
    }
    i.join_unsubscribers();
    std::lock_guard lock(i.handlers);
    for (auto *m : {&i.subs, &i.detached})
        for (const auto &[cookie, sub] : *m)
            i.ended.add(*sub);
    i.subs.clear();
    i.detached.clear();
}

void Transport::publish(std::string_view destination, std::string_view payload,
                        const PublishOptions &opts)
{
    Impl &i = *impl_;
    if (i.stopped.load(std::memory_order_relaxed))
        throw CommsError(TODD_COMMS_E_STATE,
                         i.component + ": publish after stop");
    // The ABI takes NUL-terminated destinations: copy, on the stack when short.
    char small[128];
    std::string big;
    const char *dest;
    if (destination.size() < sizeof small) {
        std::memcpy(small, destination.data(), destination.size());
        small[destination.size()] = '\0';
        dest = small;
    } else {
        big.assign(destination);
        dest = big.c_str();
    }
    todd_comms_publish_opts o{
        sizeof(todd_comms_publish_opts), 0,
        static_cast<int64_t>(opts.ttl.count()),
        opts.content_type.empty() ? nullptr : opts.content_type.c_str()};
    i.begin_call();
    int32_t st = i.d->publish(i.inst, dest,
                              reinterpret_cast<const uint8_t *>(payload.data()),
                              payload.size(), &o);
    Impl::bump(st == TODD_COMMS_OK ? i.tally.published
                                   : i.tally.publish_failed);
    if (st != TODD_COMMS_OK)
        throw CommsError(
            st, i.failure("publish to '" + std::string(destination) + "'", st));
}

std::vector<int32_t> Transport::publish_batch(
    const std::vector<std::pair<std::string, std::string>> &messages,
    const PublishOptions &opts)
{
    Impl &i = *impl_;
    if (i.stopped.load())
        throw CommsError(TODD_COMMS_E_STATE,
                         i.component + ": publish after stop");
    std::vector<int32_t> statuses(messages.size(), TODD_COMMS_OK);
    if (messages.empty())
        return statuses;
    todd_comms_publish_opts o{
        sizeof(todd_comms_publish_opts), 0,
        static_cast<int64_t>(opts.ttl.count()),
        opts.content_type.empty() ? nullptr : opts.content_type.c_str()};
    if (i.d->publish_batch == nullptr) {
        for (size_t n = 0; n < messages.size(); ++n) {
            const auto &[dest, payload] = messages[n];
            i.begin_call();
            statuses[n] =
                i.d->publish(i.inst, dest.c_str(),
                             reinterpret_cast<const uint8_t *>(payload.data()),
                             payload.size(), &o);
            if (statuses[n] != TODD_COMMS_OK)
                log::error(i.component,
                           i.failure("publish to '" + dest + "'", statuses[n]));
        }
        i.count_batch(statuses);
        return statuses;
    }
    // A status the plugin leaves untouched is caught below (ABI-11).
    constexpr int32_t unset = INT32_MIN;
    std::fill(statuses.begin(), statuses.end(), unset);
    std::vector<todd_comms_outgoing> out;
    out.reserve(messages.size());
    for (const auto &[dest, payload] : messages)
        out.push_back({dest.c_str(),
                       reinterpret_cast<const uint8_t *>(payload.data()),
                       payload.size(), &o});
    i.begin_call();
    int32_t st = i.d->publish_batch(
        i.inst, out.data(), static_cast<uint32_t>(out.size()), statuses.data());
    bool unfilled = false;
    for (auto &s : statuses) {
        if (s == unset) {
            unfilled = true;
            s = st != TODD_COMMS_OK ? st : TODD_COMMS_E_INTERNAL;
        }
    }
    if (unfilled)
        log::error(i.component, "publish_batch left statuses unset (ABI-11)" +
                                    (st != TODD_COMMS_OK
                                         ? ": " + i.failure("publish_batch", st)
                                         : std::string()));
    i.count_batch(statuses);
    return statuses;
}

Subscription Transport::subscribe(const std::string &destination,
                                  DeliveryHandler handler, uint32_t prefetch)
{
    Impl &i = *impl_;
    i.check_not_in_callback("subscribe");
    if (!handler)
        throw CommsError(TODD_COMMS_E_INVAL,
                         i.component + ": subscribe without a handler");
    if (destination.empty())
        throw CommsError(TODD_COMMS_E_INVAL,
                         i.component + ": subscribe to an empty destination");
    std::lock_guard lock(i.control);
    if (i.stopped.load())
        throw CommsError(TODD_COMMS_E_STATE,
                         i.component + ": subscribe after stop");
    const uint64_t cookie = i.next_cookie.fetch_add(1);
    {
        std::lock_guard hl(i.handlers);
        i.subs.emplace(cookie, std::make_shared<Impl::Sub>(std::move(handler)));
    }
    todd_comms_subscribe_opts o{sizeof(todd_comms_subscribe_opts), 0, prefetch,
                                0};
    i.begin_call();
    int32_t st = i.d->subscribe(i.inst, destination.c_str(), cookie, &o);
    if (st != TODD_COMMS_OK) {
        std::lock_guard hl(i.handlers);
        i.subs.erase(cookie);
        throw CommsError(st,
                         i.failure("subscribe to '" + destination + "'", st));
    }
    return Subscription(this, cookie);
}

void Transport::unsubscribe(uint64_t cookie) noexcept
{
    Impl &i = *impl_;
    try {
        if (in_callback_of(&i)) {
            // The plugin's unsubscribe would wait for the very handler that
            // runs this. Detach now (no more calls to the handler), finish on
            // a helper thread once this delivery has returned.
            std::lock_guard hl(i.handlers);
            auto it = i.subs.find(cookie);
            if (it == i.subs.end())
                return;
            i.detached.emplace(cookie, std::move(it->second));
            i.subs.erase(it);
            Impl *ip = &i;
            i.unsubscribers.emplace_back([ip, cookie] {
                std::lock_guard lock(ip->control);
                ip->unsubscribe_locked(cookie);
            });
            return;
        }
        std::lock_guard lock(i.control);
        i.unsubscribe_locked(cookie);
    } catch (const std::exception &e) {
        log::error(i.component, std::string("unsubscribe: ") + e.what());
    }
}

void Transport::on_state(StateHandler handler)
{
    Impl &i = *impl_;
    std::lock_guard lock(i.handlers);
    i.on_state = std::make_shared<StateHandler>(std::move(handler));
}

std::map<std::string, uint64_t> Transport::rejected() const
{
    std::lock_guard lock(impl_->counts);
    return {impl_->rejected.begin(), impl_->rejected.end()};
}

uint64_t Transport::rejected(std::string_view destination) const
{
    std::lock_guard lock(impl_->counts);
    auto it = impl_->rejected.find(destination);
    return it == impl_->rejected.end() ? 0 : it->second;
}

TransportCounters Transport::counters() const
{
    const Impl &i = *impl_;
    auto get = [](const std::atomic<uint64_t> &a) {
        return a.load(std::memory_order_relaxed);
    };
    TransportCounters t;
    t.published = get(i.tally.published);
    t.publish_failed = get(i.tally.publish_failed);
    t.connects = get(i.tally.connects);
    t.disconnects = get(i.tally.disconnects);
    Impl::Verdicts v;
    {
        std::lock_guard lock(i.handlers);
        v = i.ended;
        for (const auto *m : {&i.subs, &i.detached})
            for (const auto &[cookie, sub] : *m)
                v.add(*sub);
    }
    t.acked = v.acked;
    t.requeued = v.requeued;
    t.rejected = v.rejected + get(i.tally.refused);
    t.redelivered = v.redelivered;
    t.delivered = v.acked + v.requeued + v.rejected;
    return t;
}

LinkState Transport::state() const
{
    return static_cast<LinkState>(impl_->state.load());
}

const PluginInfo &Transport::plugin() const
{
    return impl_->plugin->info();
}

// Subscription ---------------------------------------------------------------

Subscription::Subscription(Subscription &&o) noexcept
    : transport_(std::exchange(o.transport_, nullptr)),
      cookie_(std::exchange(o.cookie_, 0))
{
}

Subscription &Subscription::operator=(Subscription &&o) noexcept
{
    if (this != &o) {
        reset();
        transport_ = std::exchange(o.transport_, nullptr);
        cookie_ = std::exchange(o.cookie_, 0);
    }
    return *this;
}

Subscription::~Subscription()
{
    reset();
}

void Subscription::reset()
{
    if (transport_ != nullptr)
        std::exchange(transport_, nullptr)->unsubscribe(cookie_);
}

} // namespace todd::core
