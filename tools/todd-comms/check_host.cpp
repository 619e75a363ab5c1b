// SPDX-License-Identifier: Apache-2.0
// The conformance checker's instrumented host: the host table the plugin
// calls back through, which records deliveries and flags callbacks made
// when the contract forbids them; and the calls into the plugin, each under
// the watchdog.
#include "check_internal.hpp"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <thread>

namespace todd_check {

std::mutex g_mu;
std::condition_variable g_cv;
std::vector<std::string> g_abi8_violations;
std::vector<std::string> g_escaped;
const todd_comms_plugin_descriptor *g_d = nullptr;
std::string g_prefix;
std::atomic<uint64_t> g_cookie{0};
int g_timeout_ms = 5000;
int g_quiet_ms = 200;

namespace {

std::deque<std::unique_ptr<HostCtx>> g_hosts; // never freed: late callbacks
thread_local HostCtx *tl_control = nullptr;   // inside a control call
std::atomic<int> g_seq{0};

HostCtx *host_of(todd_comms_host_ctx *c)
{
    return reinterpret_cast<HostCtx *>(c);
}

void violation(HostCtx *h, const std::string &text, bool abi8)
{
    std::lock_guard l(g_mu);
    std::string t = h->label + ": " + text;
    auto add = [&](std::vector<std::string> &v) {
        if (v.size() < 20 && std::find(v.begin(), v.end(), t) == v.end())
            v.push_back(t);
    };
    add(h->violations);
    if (abi8)
        add(g_abi8_violations);
}

/** Book-keeping common to every callback. Callbacks made synchronously from
 *  inside a control call on the calling thread are the host's own thread and
 *  allowed at any time; any other callback after stop/destroy is not. */
struct CallbackScope {
    HostCtx *h;
    CallbackScope(HostCtx *host, const char *kind) : h(host)
    {
        h->inflight++;
        if (tl_control == h)
            return;
        if (h->destroyed)
            violation(h, std::string(kind) + " callback after destroy returned",
                      true);
        else if (h->stopped)
            violation(h, std::string(kind) + " callback after stop returned",
                      true);
    }
    ~CallbackScope()
    {
        h->inflight--;
        g_cv.notify_all();
    }
};

int32_t cb_log_enabled(todd_comms_host_ctx *c, int32_t) noexcept
{
    CallbackScope cs(host_of(c), "log_enabled");
    return 1; // keep everything: rules look for lines naming keys
}

void cb_log(todd_comms_host_ctx *c, int32_t level, const char *message) noexcept
{
    HostCtx *h = host_of(c);
    CallbackScope cs(h, "log");
    std::string m = message ? message : "(NULL)";
    if (g_verbose)
        std::fprintf(stderr, "[plugin %s] level %d: %s\n", h->label.c_str(),
                     level, m.c_str());
    std::lock_guard l(g_mu);
    if (h->logs.size() < 1000)
        h->logs.push_back(m);
}

void cb_state(todd_comms_host_ctx *c, int32_t state, todd_comms_status st,
              const char *detail) noexcept
{
    HostCtx *h = host_of(c);
    CallbackScope cs(h, "state");
    if (g_verbose)
        std::fprintf(stderr, "[plugin %s] state %d status %s: %s\n",
                     h->label.c_str(), state, status_name(st).c_str(),
                     detail ? detail : "");
}

int32_t cb_deliver(todd_comms_host_ctx *c, uint64_t cookie,
                   const todd_comms_message *m) noexcept
{
    HostCtx *h = host_of(c);
    CallbackScope cs(h, "deliver");
    if (m == nullptr ||
        !TODD_COMMS_HAS_FIELD(m, todd_comms_message, content_type)) {
        violation(h, "deliver with a NULL or truncated message", false);
        return TODD_COMMS_VERDICT_REJECT;
    }
    std::shared_ptr<Sub> s;
    {
        std::lock_guard l(g_mu);
        auto it = h->subs.find(cookie);
        if (it != h->subs.end())
            s = it->second;
    }
    if (!s) {
        violation(h, "deliver for unknown cookie " + std::to_string(cookie),
                  true);
        return TODD_COMMS_VERDICT_REJECT;
    }
    if (s->closed) {
        violation(h,
                  "deliver for cookie " + std::to_string(cookie) +
                      " after its unsubscribe returned",
                  true);
        return TODD_COMMS_VERDICT_REJECT;
    }
    s->inflight++;
    Msg msg;
    msg.destination = m->destination ? m->destination : "(NULL)";
    if (m->payload != nullptr)
        msg.payload.assign(reinterpret_cast<const char *>(m->payload),
                           m->payload_len);
    else if (m->payload_len != 0)
        msg.payload = "(NULL payload with nonzero length)";
    if (m->content_type != nullptr)
        msg.content_type = m->content_type;
    msg.flags = m->flags;
    int32_t verdict = TODD_COMMS_VERDICT_ACK;
    try {
        if (s->handler)
            verdict = s->handler(msg);
    } catch (...) {
        verdict = TODD_COMMS_VERDICT_REQUEUE;
    }
    {
        std::lock_guard l(g_mu);
        if (s->got.size() < 100000)
            s->got.push_back(std::move(msg));
    }
    s->inflight--;
    g_cv.notify_all();
    return verdict;
}

const todd_comms_host_api g_api = {
    sizeof(todd_comms_host_api),
    TODD_COMMS_ABI_MINOR,
    &cb_log_enabled,
    &cb_log,
    &cb_deliver,
    &cb_state,
};

} // namespace

// ---------------------------------------------------------------------------
// Calling the plugin

std::string new_dest(const char *tag)
{
    return g_prefix + "." + tag + "." + std::to_string(++g_seq);
}

HostCtx *new_host(const std::string &label)
{
    auto h = std::make_unique<HostCtx>();
    h->id = static_cast<int>(g_hosts.size()) + 1;
    h->label = label;
    g_hosts.push_back(std::move(h));
    return g_hosts.back().get();
}

/** create; returns the status, sets in.self on success. */
int32_t do_create(Inst &in, const Config &cfg, std::string *err)
{
    std::vector<todd_comms_kv> items;
    for (auto &[k, v] : cfg.kv)
        items.push_back({k.c_str(), v.c_str()});
    todd_comms_config c{};
    c.struct_size = sizeof c;
    c.count = static_cast<uint32_t>(items.size());
    c.items = items.empty() ? nullptr : items.data();
    todd_comms_instance *out = nullptr;
    tl_control = in.h;
    int32_t st = guarded("create", [&] {
        return g_d->create(
            &g_api, reinterpret_cast<todd_comms_host_ctx *>(in.h), &c, &out);
    });
    tl_control = nullptr;
    if (st == TODD_COMMS_OK && out == nullptr && err)
        *err = "create returned OK but no instance";
    if (st != TODD_COMMS_OK && out != nullptr && err)
        *err = "create failed with " + status_name(st) + " but still set *out";
    if (st == TODD_COMMS_OK)
        in.self = out;
    return st;
}

int32_t do_control(Inst &in, const char *what,
                   const std::function<int32_t()> &f)
{
    tl_control = in.h;
    int32_t st = guarded(what, f);
    tl_control = nullptr;
    return st;
}

int32_t do_start(Inst &in)
{
    int32_t st = do_control(in, "start", [&] { return g_d->start(in.self); });
    if (st == TODD_COMMS_OK)
        in.started = true;
    return st;
}

/** stop, then mark the host context stopped; returns the status. */
int32_t do_stop(Inst &in, std::string *not_quiet)
{
    int32_t st = do_control(in, "stop", [&] { return g_d->stop(in.self); });
    in.stopped = true;
    in.h->stopped = true;
    if (in.h->inflight.load() != 0 && not_quiet)
        *not_quiet = in.h->label + ": stop returned while " +
                     std::to_string(in.h->inflight.load()) +
                     " callback(s) were still running";
    return st;
}

void do_destroy(Inst &in)
{
    if (in.destroyed || in.self == nullptr)
        return;
    do_control(in, "destroy", [&] {
        g_d->destroy(in.self);
        return TODD_COMMS_OK;
    });
    in.destroyed = true;
    in.h->destroyed = true;
}

/** publish, retrying while the plugin is still connecting. */
int32_t do_publish(Inst &in, const std::string &dest, std::string_view payload,
                   const todd_comms_publish_opts *opts)
{
    auto deadline = Clock::now() + milliseconds(g_timeout_ms);
    for (;;) {
        int32_t st = guarded("publish", [&] {
            return g_d->publish(
                in.self, dest.c_str(),
                reinterpret_cast<const uint8_t *>(payload.data()),
                payload.size(), opts);
        });
        if (st != TODD_COMMS_E_UNAVAILABLE || Clock::now() > deadline)
            return st;
        std::this_thread::sleep_for(milliseconds(20));
    }
}

todd_comms_publish_opts popts(const char *content_type, int64_t ttl_ms)
{
    todd_comms_publish_opts o{};
    o.struct_size = sizeof o;
    o.ttl_ms = ttl_ms;
    o.content_type = content_type;
    return o;
}

/** Subscribe with a fresh cookie; returns NULL (and *st) on failure. */
std::shared_ptr<Sub> do_subscribe(Inst &in, const std::string &dest,
                                  Handler handler, int32_t *st_out)
{
    auto s = std::make_shared<Sub>();
    s->cookie = ++g_cookie;
    s->destination = dest;
    s->handler = std::move(handler);
    {
        std::lock_guard l(g_mu);
        in.h->subs[s->cookie] = s;
    }
    int32_t st = do_control(in, "subscribe", [&] {
        return g_d->subscribe(in.self, dest.c_str(), s->cookie, nullptr);
    });
    if (st_out)
        *st_out = st;
    if (st != TODD_COMMS_OK) {
        std::lock_guard l(g_mu);
        in.h->subs.erase(s->cookie);
        return nullptr;
    }
    return s;
}

/** unsubscribe; *not_quiet is set when a deliver was still running. */
int32_t do_unsubscribe(Inst &in, Sub &s, std::string *not_quiet)
{
    int32_t st = do_control(
        in, "unsubscribe", [&] { return g_d->unsubscribe(in.self, s.cookie); });
    if (st == TODD_COMMS_OK) {
        s.closed = true;
        if (s.inflight.load() != 0 && not_quiet)
            *not_quiet = "unsubscribe returned while a deliver for its cookie "
                         "was still running";
    }
    return st;
}

/** Let time pass to catch what must NOT happen (late or repeated
 *  deliveries); cannot make a conforming plugin fail. */
void quiet_period()
{
    std::this_thread::sleep_for(milliseconds(g_quiet_ms));
}

size_t got_count(const Sub &s)
{
    std::lock_guard l(g_mu);
    return s.got.size();
}

std::vector<Msg> got_copy(const Sub &s)
{
    std::lock_guard l(g_mu);
    return s.got;
}

std::string printable(std::string_view p)
{
    if (p.size() > 40)
        return "<" + std::to_string(p.size()) + " bytes>";
    std::string out = "'";
    for (unsigned char c : p)
        if (c >= 0x20 && c < 0x7f)
            out += static_cast<char>(c);
        else {
            char b[8];
            std::snprintf(b, sizeof b, "\\x%02x", c);
            out += b;
        }
    return out + "'";
}

} // namespace todd_check
