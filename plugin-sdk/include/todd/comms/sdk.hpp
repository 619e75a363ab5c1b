// SPDX-License-Identifier: Apache-2.0
//
// Header-only C++17 helper for writing ToDD comms plugins.
//
//   class MyTransport : public todd::comms::sdk::Transport { ... };
//   static const todd_comms_config_key my_keys[] = { ... };
//   TODD_COMMS_PLUGIN(MyTransport, "mine", "1.0.0", "Apache-2.0",
//                     "What it does", TODD_COMMS_CAP_ACK, my_keys)
//
// The macro generates the exported todd_comms_plugin_entry_v1, a static
// descriptor, and noexcept trampolines that turn every escaping exception
// into a status code plus an error log line. Everything here is compiled into
// the plugin; nothing C++ crosses the ABI (see plugin.h for the rules).
#ifndef TODD_COMMS_SDK_HPP
#define TODD_COMMS_SDK_HPP

#include <todd/comms/plugin.h>

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <map>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace todd::comms::sdk {

/** Thrown by plugin code to fail a call with a specific status. */
class Error : public std::runtime_error {
  public:
    /** Fail with status (a TODD_COMMS_E_* code) and a message. */
    Error(todd_comms_status status, const std::string &what)
        : std::runtime_error(what), status_(status)
    {
    }
    /** The status the trampoline returns. */
    todd_comms_status status() const noexcept { return status_; }

  private:
    todd_comms_status status_;
};

/** The host's services for one instance. Safe to use from any thread. */
class Host {
  public:
    Host(const todd_comms_host_api *api, todd_comms_host_ctx *ctx) noexcept
        : api_(api), ctx_(ctx)
    {
    }

    /** True when the host keeps messages at this level. */
    bool log_enabled(int32_t level) const noexcept
    {
        return api_->log_enabled == nullptr ||
               api_->log_enabled(ctx_, level) != 0;
    }

    /** Log a plain message. */
    void log(int32_t level, const std::string &message) const noexcept
    {
        if (api_->log != nullptr && log_enabled(level))
            api_->log(ctx_, level, message.c_str());
    }

    /** Log a printf-style message; formatting is skipped when filtered. */
    void logf(int32_t level, const char *fmt, ...) const noexcept
        __attribute__((format(printf, 3, 4)))
    {
        if (api_->log == nullptr || !log_enabled(level))
            return;
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        api_->log(ctx_, level, buf);
    }

    /** Hand a message to the host; returns its TODD_COMMS_VERDICT_*. */
    int32_t deliver(uint64_t cookie,
                    const todd_comms_message &msg) const noexcept
    {
        return api_->deliver(ctx_, cookie, &msg);
    }

    /** Report a connection state change. */
    void state(int32_t state, todd_comms_status status = TODD_COMMS_OK,
               const std::string &detail = {}) const noexcept
    {
        if (api_->state != nullptr)
            api_->state(ctx_, state, status,
                        detail.empty() ? nullptr : detail.c_str());
    }

    /** The raw table, for fields added in later minors. */
    const todd_comms_host_api *api() const noexcept { return api_; }

  private:
    const todd_comms_host_api *api_;
    todd_comms_host_ctx *ctx_;
};

/**
 * Configuration as the host validated it, with defaults filled in.
 * Accessors throw Error(TODD_COMMS_E_CONFIG) on a missing required value.
 */
class Config {
  public:
    Config() = default;
    /** Copy the borrowed C configuration. */
    explicit Config(const todd_comms_config *c)
    {
        if (c == nullptr)
            return;
        for (uint32_t i = 0; i < c->count; ++i)
            if (c->items[i].key != nullptr && c->items[i].value != nullptr)
                values_[c->items[i].key] = c->items[i].value;
    }

    /** True when the key has a value (given or default). */
    bool has(const std::string &key) const { return values_.count(key) != 0; }

    /** The value, or fallback when absent. */
    std::string str(const std::string &key,
                    const std::string &fallback = {}) const
    {
        auto it = values_.find(key);
        return it == values_.end() ? fallback : it->second;
    }

    /** Integer value, or fallback when absent. */
    long long integer(const std::string &key, long long fallback = 0) const
    {
        auto it = values_.find(key);
        if (it == values_.end())
            return fallback;
        errno = 0;
        char *end = nullptr;
        long long v = std::strtoll(it->second.c_str(), &end, 10);
        if (errno != 0 || end == it->second.c_str() || *end != '\0')
            throw Error(TODD_COMMS_E_CONFIG, "configuration key '" + key +
                                                 "' is not an integer: '" +
                                                 it->second + "'");
        return v;
    }

    /** Boolean value, or fallback when absent. */
    bool boolean(const std::string &key, bool fallback = false) const
    {
        auto it = values_.find(key);
        if (it == values_.end())
            return fallback;
        const std::string &v = it->second;
        if (v == "true" || v == "yes" || v == "on" || v == "1")
            return true;
        if (v == "false" || v == "no" || v == "off" || v == "0")
            return false;
        throw Error(TODD_COMMS_E_CONFIG, "configuration key '" + key +
                                             "' is not a boolean: '" + v + "'");
    }

    /** Comma-separated list, items trimmed, empty items dropped. */
    std::vector<std::string> list(const std::string &key) const
    {
        std::vector<std::string> out;
        auto it = values_.find(key);
        if (it == values_.end())
            return out;
        std::string_view s = it->second;
        while (!s.empty()) {
            auto comma = s.find(',');
            std::string_view item = s.substr(0, comma);
            while (!item.empty() &&
                   (item.front() == ' ' || item.front() == '\t'))
                item.remove_prefix(1);
            while (!item.empty() && (item.back() == ' ' || item.back() == '\t'))
                item.remove_suffix(1);
            if (!item.empty())
                out.emplace_back(item);
            if (comma == std::string_view::npos)
                break;
            s.remove_prefix(comma + 1);
        }
        return out;
    }

  private:
    std::map<std::string, std::string> values_;
};

/**
 * Base class of a transport. The SDK calls these through noexcept
 * trampolines; throw Error to fail with a specific status, anything else
 * becomes TODD_COMMS_E_INTERNAL. Threading classes as in plugin.h.
 */
class Transport {
  public:
    Transport(const Host &host, const Config &) : host_(host) {}
    virtual ~Transport() = default;
    Transport(const Transport &) = delete;
    Transport &operator=(const Transport &) = delete;

    /** Begin connecting; do not wait for the service. */
    virtual void start() = 0;
    /** Become quiescent: join threads, no callbacks after return. */
    virtual void stop() = 0;
    /** Publish one message (thread-safe). */
    virtual void publish(const char *destination, const uint8_t *payload,
                         uint64_t len, const todd_comms_publish_opts *opts) = 0;
    /** Subscribe a destination under a host cookie. */
    virtual void subscribe(const char *destination, uint64_t cookie,
                           const todd_comms_subscribe_opts *opts) = 0;
    /** End a subscription; quiescent for the cookie on return. */
    virtual void unsubscribe(uint64_t cookie) = 0;
    /**
     * Publish several messages. The default publishes them one by one;
     * override it to overlap confirmations. Fill statuses[i] for each.
     */
    virtual todd_comms_status publish_batch(const todd_comms_outgoing *msgs,
                                            uint32_t count,
                                            todd_comms_status *statuses)
    {
        todd_comms_status first = TODD_COMMS_OK;
        for (uint32_t i = 0; i < count; ++i) {
            statuses[i] = TODD_COMMS_OK;
            // Same argument checks as the publish trampoline.
            if (msgs[i].destination == nullptr ||
                (msgs[i].payload == nullptr && msgs[i].payload_len != 0)) {
                statuses[i] = TODD_COMMS_E_INVAL;
                if (first == TODD_COMMS_OK)
                    first = statuses[i];
                continue;
            }
            try {
                publish(msgs[i].destination, msgs[i].payload,
                        msgs[i].payload_len, msgs[i].opts);
            } catch (const Error &e) {
                statuses[i] = e.status();
                host_.log(TODD_COMMS_LOG_ERROR, e.what());
            } catch (const std::bad_alloc &) {
                statuses[i] = TODD_COMMS_E_NOMEM;
            } catch (const std::exception &e) {
                statuses[i] = TODD_COMMS_E_INTERNAL;
                host_.log(TODD_COMMS_LOG_ERROR, e.what());
            } catch (...) {
                statuses[i] = TODD_COMMS_E_INTERNAL;
            }
            if (first == TODD_COMMS_OK)
                first = statuses[i];
        }
        return first;
    }

    /** The host services of this instance. */
    const Host &host() const noexcept { return host_; }

  private:
    Host host_;
};

/** Convenience: TTL of possibly-NULL options, 0 when none. */
inline int64_t ttl_ms(const todd_comms_publish_opts *o) noexcept
{
    return TODD_COMMS_HAS_FIELD(o, todd_comms_publish_opts, ttl_ms) ? o->ttl_ms
                                                                    : 0;
}

/** Convenience: content type of possibly-NULL options. */
inline const char *content_type(const todd_comms_publish_opts *o) noexcept
{
    return TODD_COMMS_HAS_FIELD(o, todd_comms_publish_opts, content_type) &&
                   o->content_type != nullptr
               ? o->content_type
               : "text/plain";
}

/** Convenience: prefetch of possibly-NULL options, 0 when none. */
inline uint32_t prefetch(const todd_comms_subscribe_opts *o) noexcept
{
    return TODD_COMMS_HAS_FIELD(o, todd_comms_subscribe_opts, prefetch)
               ? o->prefetch
               : 0;
}

/**
 * Convenience: the default text of key name in a plugin's key table, nullptr
 * when the table has no such key or it has no default. Lets the plugin's
 * code fall back on its table, the one place each default is stated.
 */
template <size_t N>
constexpr const char *key_default(const todd_comms_config_key (&keys)[N],
                                  std::string_view name) noexcept
{
    for (const auto &k : keys)
        if (name == k.name)
            return k.default_value;
    return nullptr;
}

/**
 * Reads a configuration through the plugin's key table: a value the user did
 * not give falls back on the table's default (the one place each default is
 * stated), and every refusal is an Error(TODD_COMMS_E_CONFIG) whose text names
 * the key, as ABI-1 asks. Use it in create, before anything connects.
 *
 *   KeyReader r(config, my_keys);
 *   int n = int(r.ranged("partitions", 1, 1000));
 */
class KeyReader {
  public:
    /** keys must outlive the reader (a static table does). */
    template <size_t N>
    KeyReader(const Config &config, const todd_comms_config_key (&keys)[N])
        : config_(config), keys_(keys), count_(N)
    {
    }

    /** Throw Error(E_CONFIG): "configuration key '<key>' <why>". */
    [[noreturn]] static void refuse(const char *key, const std::string &why)
    {
        throw Error(TODD_COMMS_E_CONFIG,
                    std::string("configuration key '") + key + "' " + why);
    }

    /** The key's default in the table, "" when it has none. */
    std::string fallback(const char *key) const
    {
        for (size_t i = 0; i < count_; ++i)
            if (std::strcmp(keys_[i].name, key) == 0)
                return keys_[i].default_value ? keys_[i].default_value : "";
        return "";
    }
    /** The value as given, else the default. */
    std::string text(const char *key) const
    {
        return config_.str(key, fallback(key));
    }
    /** A boolean value (true/false, yes/no, on/off, 1/0). */
    bool flag(const char *key) const
    {
        return config_.has(key) ? config_.boolean(key)
                                : defaults(key).boolean(key);
    }
    /** An integer value within [lo, hi]. */
    long long ranged(const char *key, long long lo, long long hi) const
    {
        long long v = config_.integer(
            key, std::strtoll(fallback(key).c_str(), nullptr, 10));
        if (v < lo || v > hi)
            refuse(key, "= " + std::to_string(v) + " is out of range [" +
                            std::to_string(lo) + ", " + std::to_string(hi) +
                            "]");
        return v;
    }
    /** A value that must be one of allowed. */
    std::string one_of(const char *key,
                       std::initializer_list<const char *> allowed) const
    {
        std::string v = text(key), names;
        for (const char *a : allowed) {
            if (v == a)
                return v;
            names += std::string(names.empty() ? "" : ", ") + a;
        }
        refuse(key, "= '" + v + "' is not one of " + names);
    }
    /** A list value (comma-separated), the default's items when absent. */
    std::vector<std::string> list(const char *key) const
    {
        return config_.has(key) ? config_.list(key) : defaults(key).list(key);
    }
    /** A file name that is empty or names a file this process can read. */
    std::string readable_file(const char *key) const
    {
        std::string path = text(key);
        if (!path.empty()) {
            FILE *f = std::fopen(path.c_str(), "rb");
            if (f == nullptr)
                refuse(key, "names '" + path + "', which cannot be read: " +
                                std::strerror(errno));
            std::fclose(f);
        }
        return path;
    }

  private:
    /** A configuration holding only key's default, parsed as a value. */
    Config defaults(const char *key) const
    {
        const std::string d = fallback(key);
        const todd_comms_kv item{key, d.c_str()};
        const todd_comms_config one{sizeof(todd_comms_config), 1, &item};
        return Config(&one);
    }

    const Config &config_;
    const todd_comms_config_key *keys_;
    size_t count_;
};

namespace detail {

/** True when s is a valid plugin name: [a-z0-9_-]+. */
constexpr bool valid_name(const char *s)
{
    if (s == nullptr || *s == '\0')
        return false;
    for (; *s != '\0'; ++s) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

/** An instance as the host sees it: the object plus its host table. */
struct Box {
    Transport *impl;
    Host host;
};

/** Run f, mapping any exception to a status and a log line. */
template <class F>
todd_comms_status guard(const Host *host, const char *what, F &&f) noexcept
{
    try {
        f();
        return TODD_COMMS_OK;
    } catch (const Error &e) {
        if (host)
            host->logf(TODD_COMMS_LOG_ERROR, "%s: %s", what, e.what());
        return e.status();
    } catch (const std::bad_alloc &) {
        if (host)
            host->logf(TODD_COMMS_LOG_ERROR, "%s: out of memory", what);
        return TODD_COMMS_E_NOMEM;
    } catch (const std::exception &e) {
        if (host)
            host->logf(TODD_COMMS_LOG_ERROR, "%s: unexpected exception: %s",
                       what, e.what());
        return TODD_COMMS_E_INTERNAL;
    } catch (...) {
        if (host)
            host->logf(TODD_COMMS_LOG_ERROR, "%s: unknown exception", what);
        return TODD_COMMS_E_INTERNAL;
    }
}

inline Box *box(todd_comms_instance *self) noexcept
{
    return reinterpret_cast<Box *>(self);
}

template <class T>
todd_comms_status
create(const todd_comms_host_api *api, todd_comms_host_ctx *ctx,
       const todd_comms_config *config, todd_comms_instance **out) noexcept
{
    if (api == nullptr || out == nullptr || api->deliver == nullptr)
        return TODD_COMMS_E_INVAL;
    *out = nullptr;
    Host host(api, ctx);
    Box *b = nullptr;
    todd_comms_status st = guard(&host, "create", [&] {
        Config cfg(config);
        b = new Box{nullptr, host};
        try {
            b->impl = new T(host, cfg);
        } catch (...) {
            delete b;
            b = nullptr;
            throw;
        }
    });
    if (st == TODD_COMMS_OK)
        *out = reinterpret_cast<todd_comms_instance *>(b);
    return st;
}

inline void destroy(todd_comms_instance *self) noexcept
{
    if (self == nullptr)
        return;
    Box *b = box(self);
    guard(&b->host, "destroy", [&] { delete b->impl; });
    delete b;
}

inline todd_comms_status start(todd_comms_instance *self) noexcept
{
    if (self == nullptr)
        return TODD_COMMS_E_INVAL;
    Box *b = box(self);
    return guard(&b->host, "start", [&] { b->impl->start(); });
}

inline todd_comms_status stop(todd_comms_instance *self) noexcept
{
    if (self == nullptr)
        return TODD_COMMS_E_INVAL;
    Box *b = box(self);
    return guard(&b->host, "stop", [&] { b->impl->stop(); });
}

inline todd_comms_status publish(todd_comms_instance *self, const char *dest,
                                 const uint8_t *payload, uint64_t len,
                                 const todd_comms_publish_opts *opts) noexcept
{
    if (self == nullptr || dest == nullptr || (payload == nullptr && len != 0))
        return TODD_COMMS_E_INVAL;
    Box *b = box(self);
    return guard(&b->host, "publish",
                 [&] { b->impl->publish(dest, payload, len, opts); });
}

inline todd_comms_status publish_batch(todd_comms_instance *self,
                                       const todd_comms_outgoing *msgs,
                                       uint32_t count,
                                       todd_comms_status *statuses) noexcept
{
    if (self == nullptr ||
        (count != 0 && (msgs == nullptr || statuses == nullptr)))
        return TODD_COMMS_E_INVAL;
    Box *b = box(self);
    todd_comms_status result = TODD_COMMS_OK;
    todd_comms_status st = guard(&b->host, "publish_batch", [&] {
        result = b->impl->publish_batch(msgs, count, statuses);
    });
    return st != TODD_COMMS_OK ? st : result;
}

inline todd_comms_status
subscribe(todd_comms_instance *self, const char *dest, uint64_t cookie,
          const todd_comms_subscribe_opts *opts) noexcept
{
    if (self == nullptr || dest == nullptr || *dest == '\0')
        return TODD_COMMS_E_INVAL;
    Box *b = box(self);
    return guard(&b->host, "subscribe",
                 [&] { b->impl->subscribe(dest, cookie, opts); });
}

inline todd_comms_status unsubscribe(todd_comms_instance *self,
                                     uint64_t cookie) noexcept
{
    if (self == nullptr)
        return TODD_COMMS_E_INVAL;
    Box *b = box(self);
    return guard(&b->host, "unsubscribe",
                 [&] { b->impl->unsubscribe(cookie); });
}

} // namespace detail
} // namespace todd::comms::sdk

/**
 * Turn CLASS (derived from todd::comms::sdk::Transport, constructible from
 * (const Host&, const Config&)) into a plugin. NAME must equal <name> of the
 * file libtodd-comms-<name>.so. KEYS is a static array of
 * todd_comms_config_key (use TODD_COMMS_NO_KEYS for none). Place once, at
 * namespace scope, in one source file.
 */
#define TODD_COMMS_PLUGIN(CLASS, NAME, VERSION, LICENSE, DESCRIPTION, CAPS,    \
                          KEYS)                                                \
    static_assert(                                                             \
        std::is_base_of<::todd::comms::sdk::Transport, CLASS>::value,          \
        "TODD_COMMS_PLUGIN: class must derive from "                           \
        "todd::comms::sdk::Transport");                                        \
    static_assert(::todd::comms::sdk::detail::valid_name(NAME),                \
                  "TODD_COMMS_PLUGIN: name must match [a-z0-9_-]+");           \
    namespace {                                                                \
    const todd_comms_plugin_descriptor todd_comms_sdk_descriptor_ = {          \
        sizeof(todd_comms_plugin_descriptor),                                  \
        TODD_COMMS_ABI_MAJOR,                                                  \
        TODD_COMMS_ABI_MINOR,                                                  \
        TODD_COMMS_ABI_MINOR,                                                  \
        NAME,                                                                  \
        VERSION,                                                               \
        DESCRIPTION,                                                           \
        LICENSE,                                                               \
        nullptr,                                                               \
        (CAPS),                                                                \
        (KEYS),                                                                \
        static_cast<uint32_t>(sizeof(KEYS) / sizeof(todd_comms_config_key)) -  \
            ::todd::comms::sdk::detail::no_keys_adjust(KEYS),                  \
        0,                                                                     \
        &::todd::comms::sdk::detail::create<CLASS>,                            \
        &::todd::comms::sdk::detail::destroy,                                  \
        &::todd::comms::sdk::detail::start,                                    \
        &::todd::comms::sdk::detail::stop,                                     \
        &::todd::comms::sdk::detail::publish,                                  \
        &::todd::comms::sdk::detail::subscribe,                                \
        &::todd::comms::sdk::detail::unsubscribe,                              \
        &::todd::comms::sdk::detail::publish_batch,                            \
    };                                                                         \
    }                                                                          \
    extern "C" TODD_COMMS_EXPORT const todd_comms_plugin_descriptor *          \
    todd_comms_plugin_entry_v1(const todd_comms_host_info *host)               \
    {                                                                          \
        if (host == nullptr || host->abi_major != TODD_COMMS_ABI_MAJOR)        \
            return nullptr;                                                    \
        return &todd_comms_sdk_descriptor_;                                    \
    }

namespace todd::comms::sdk::detail {
/** Marker array for plugins without configuration keys. */
inline constexpr todd_comms_config_key no_keys[1] = {
    {"", 0, 0, nullptr, nullptr}};
/** 1 when KEYS is the no_keys marker (which then counts as empty). */
constexpr uint32_t no_keys_adjust(const todd_comms_config_key *k)
{
    return k == no_keys ? 1u : 0u;
}
} // namespace todd::comms::sdk::detail

/** Pass as KEYS to TODD_COMMS_PLUGIN for a plugin with no configuration. */
#define TODD_COMMS_NO_KEYS (::todd::comms::sdk::detail::no_keys)

#endif // TODD_COMMS_SDK_HPP
