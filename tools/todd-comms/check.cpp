// SPDX-License-Identifier: Apache-2.0
//
// The conformance checker. The parent process forks a child that loads the
// plugin with core's PluginRegistry (so refusals are the host's own, LOAD-*)
// and drives it through the C ABI from an instrumented host table, which is
// how it sees callbacks after stop/unsubscribe/destroy. The child streams
// results over a pipe; the parent prints them in rule order, and turns a
// crash or a watchdog exit of the child into a FAIL of the rule in progress.
#include "check.hpp"

#include <todd/comms/plugin.h>
#include <todd/core/config.hpp>
#include <todd/core/exit_codes.hpp>
#include <todd/core/log.hpp>
#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <poll.h>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Every rule of docs/plugin-abi.md the checker reports on, in print order.
const char *const kRules[] = {
    "LOAD-1", "LOAD-2", "LOAD-3", "LOAD-4",  "LOAD-5",  "LOAD-6",
    "LOAD-7", "LOAD-8", "LOAD-9", "LOAD-10", "LOAD-11", "ABI-1",
    "ABI-2",  "ABI-3",  "ABI-4",  "ABI-5",   "ABI-6",   "ABI-7",
    "ABI-8",  "ABI-9",  "ABI-10", "ABI-11"};
constexpr size_t kRuleCount = sizeof kRules / sizeof kRules[0];

struct Args {
    std::string target;
    std::vector<std::string> plugin_dirs;
    std::vector<std::pair<std::string, std::string>> opts;
    int timeout_ms = 5000;
    bool verbose = false;
};

const char kUsage[] =
    "usage: todd-comms check PATH|NAME [--plugin-dir DIR]... "
    "[--comms-opt KEY=VALUE]...\n"
    "                        [--timeout-ms N] [--verbose]\n"
    "\n"
    "Load a transport plugin the way the host does and run the behaviour\n"
    "contract of docs/plugin-abi.md against it. Prints PASS/FAIL/SKIP per\n"
    "rule and exits non-zero when any rule fails.\n"
    "\n"
    "  --plugin-dir DIR       search DIR first for NAME (repeatable)\n"
    "  --comms-opt KEY=VALUE  plugin configuration key (repeatable)\n"
    "  --timeout-ms N         bound of every wait (default 5000)\n"
    "  --verbose              print the plugin's log lines on stderr\n";

std::string one_line(std::string s)
{
    for (char &c : s)
        if (c == '\n' || c == '\r' || c == '\t')
            c = ' ';
    return s;
}

std::string status_name(int32_t st)
{
    static const std::map<int32_t, const char *> names = {
        {TODD_COMMS_OK, "OK"},
        {TODD_COMMS_E_INVAL, "E_INVAL"},
        {TODD_COMMS_E_NOMEM, "E_NOMEM"},
        {TODD_COMMS_E_NOTSUP, "E_NOTSUP"},
        {TODD_COMMS_E_UNAVAILABLE, "E_UNAVAILABLE"},
        {TODD_COMMS_E_TIMEOUT, "E_TIMEOUT"},
        {TODD_COMMS_E_AUTH, "E_AUTH"},
        {TODD_COMMS_E_PROTOCOL, "E_PROTOCOL"},
        {TODD_COMMS_E_INTERNAL, "E_INTERNAL"},
        {TODD_COMMS_E_STATE, "E_STATE"},
        {TODD_COMMS_E_FULL, "E_FULL"},
        {TODD_COMMS_E_NOROUTE, "E_NOROUTE"},
        {TODD_COMMS_E_CONFIG, "E_CONFIG"},
    };
    auto it = names.find(st);
    return it != names.end() ? it->second : "status " + std::to_string(st);
}

// ---------------------------------------------------------------------------
// Child side: reporting

int g_report_fd = -1;
std::mutex g_report_mu;

void emit(const std::string &line)
{
    std::lock_guard l(g_report_mu);
    std::string s = one_line(line) + "\n";
    const char *p = s.data();
    size_t n = s.size();
    while (n > 0) {
        ssize_t w = ::write(g_report_fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= static_cast<size_t>(w);
    }
}
void begin_rule(const std::string &rule)
{
    emit("B " + rule);
}
void report(const std::string &rule, const char *verdict,
            const std::string &text)
{
    emit("R " + rule + " " + verdict + " " + text);
}

/** Collects the failures of one rule; PASS when there are none. */
struct Outcome {
    std::vector<std::string> failures;
    std::vector<std::string> notes;
    void fail(const std::string &s) { failures.push_back(s); }
    void note(const std::string &s) { notes.push_back(s); }
    void send(const std::string &rule, const std::string &pass_text)
    {
        if (failures.empty()) {
            std::string t = pass_text;
            for (auto &n : notes)
                t += "; " + n;
            report(rule, "PASS", t);
        } else {
            std::string t;
            for (auto &f : failures)
                t += (t.empty() ? "" : "; ") + f;
            report(rule, "FAIL", t);
        }
    }
};

// ---------------------------------------------------------------------------
// Child side: watchdog. Every call into the plugin is registered with a
// deadline; a call that overruns it ends the child with a FAIL line.

struct ActiveCall {
    Clock::time_point deadline;
    std::string what;
};
std::mutex g_calls_mu;
std::map<std::thread::id, ActiveCall> g_calls;
std::string g_current_rule = "LOAD-1";
int g_call_budget_ms = 11000;

struct CallScope {
    explicit CallScope(std::string what)
    {
        std::lock_guard l(g_calls_mu);
        g_calls[std::this_thread::get_id()] = {
            Clock::now() + milliseconds(g_call_budget_ms), std::move(what)};
    }
    ~CallScope()
    {
        std::lock_guard l(g_calls_mu);
        g_calls.erase(std::this_thread::get_id());
    }
};

const Clock::time_point g_t0 = Clock::now();
bool g_verbose = false;

void set_rule(const std::string &rule)
{
    if (g_verbose)
        std::fprintf(
            stderr, "[check] %s at +%lld ms\n", rule.c_str(),
            static_cast<long long>(
                std::chrono::duration_cast<milliseconds>(Clock::now() - g_t0)
                    .count()));
    {
        std::lock_guard l(g_calls_mu);
        g_current_rule = rule;
    }
    begin_rule(rule);
}

void watchdog()
{
    for (;;) {
        std::this_thread::sleep_for(milliseconds(50));
        std::lock_guard l(g_calls_mu);
        auto now = Clock::now();
        for (auto &[id, c] : g_calls) {
            if (now > c.deadline) {
                report(g_current_rule, "FAIL",
                       c.what + " did not return within " +
                           std::to_string(g_call_budget_ms) +
                           " ms (hang; rules after this one were not run)");
                ::_exit(3);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Child side: the instrumented host

struct Msg {
    std::string destination;
    std::string payload;
    std::optional<std::string> content_type;
    uint32_t flags = 0;
};

using Handler = std::function<int32_t(const Msg &)>;

struct Sub {
    uint64_t cookie = 0;
    std::string destination;
    Handler handler;      // NULL: ACK
    std::vector<Msg> got; // under g_mu
    std::atomic<int> inflight{0};
    std::atomic<bool> closed{false}; // unsubscribe returned
};

struct HostCtx {
    int id = 0;
    std::string label;
    std::atomic<bool> stopped{false};
    std::atomic<bool> destroyed{false};
    std::atomic<int> inflight{0};
    std::map<uint64_t, std::shared_ptr<Sub>> subs; // under g_mu
    std::vector<std::string> logs;                 // under g_mu
    std::vector<std::string> violations;           // under g_mu
};

std::mutex g_mu;
std::condition_variable g_cv;
std::deque<std::unique_ptr<HostCtx>> g_hosts; // never freed: late callbacks
std::vector<std::string> g_abi8_violations;   // under g_mu
std::vector<std::string> g_escaped;           // under g_mu (ABI-10)
thread_local HostCtx *tl_control = nullptr;   // inside a control call

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

// ---------------------------------------------------------------------------
// Child side: calling the plugin

const todd_comms_plugin_descriptor *g_d = nullptr;
std::string g_prefix; // unique per run: brokers may be shared
std::atomic<int> g_seq{0};
std::atomic<uint64_t> g_cookie{0};
int g_timeout_ms = 5000;
int g_quiet_ms = 200;

std::string new_dest(const char *tag)
{
    return g_prefix + "." + tag + "." + std::to_string(++g_seq);
}

/** Call into the plugin under the watchdog, containing escaped exceptions. */
template <class F> int32_t guarded(const std::string &what, F &&f)
{
    CallScope cs(what);
    try {
        return f();
    } catch (const std::exception &e) {
        std::lock_guard l(g_mu);
        g_escaped.push_back(what + " let an exception escape: " + e.what());
    } catch (...) {
        std::lock_guard l(g_mu);
        g_escaped.push_back(what + " let an exception escape");
    }
    return TODD_COMMS_E_INTERNAL;
}

struct Config {
    std::vector<std::pair<std::string, std::string>> kv;
};

struct Inst {
    HostCtx *h = nullptr;
    todd_comms_instance *self = nullptr;
    bool started = false, stopped = false, destroyed = false;
};

HostCtx *new_host(const std::string &label)
{
    auto h = std::make_unique<HostCtx>();
    h->id = static_cast<int>(g_hosts.size()) + 1;
    h->label = label;
    g_hosts.push_back(std::move(h));
    return g_hosts.back().get();
}

/** create; returns the status, sets in.self on success. */
int32_t do_create(Inst &in, const Config &cfg, std::string *err = nullptr)
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
int32_t do_stop(Inst &in, std::string *not_quiet = nullptr)
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

todd_comms_publish_opts popts(const char *content_type, int64_t ttl_ms = 0)
{
    todd_comms_publish_opts o{};
    o.struct_size = sizeof o;
    o.ttl_ms = ttl_ms;
    o.content_type = content_type;
    return o;
}

/** Subscribe with a fresh cookie; returns NULL (and *st) on failure. */
std::shared_ptr<Sub> do_subscribe(Inst &in, const std::string &dest,
                                  Handler handler, int32_t *st_out = nullptr)
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
int32_t do_unsubscribe(Inst &in, Sub &s, std::string *not_quiet = nullptr)
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

template <class P> bool wait_for(P pred, int ms)
{
    std::unique_lock l(g_mu);
    return g_cv.wait_until(l, Clock::now() + milliseconds(ms), pred);
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

// ---------------------------------------------------------------------------
// Child side: the rules

struct Env {
    const todd::core::PluginInfo *info = nullptr;
    Config base; // validated configuration, defaults filled
    bool has_role = false;
    bool remote = false;
    Inst main;
    std::optional<Inst> second; // another instance, for remote plugins
    bool main_ok = false;
};

Config config_for(const Env &env, const char *role)
{
    Config c = env.base;
    if (env.has_role) {
        bool given = false;
        for (auto &[k, v] : c.kv)
            if (k == "role")
                given = true;
        // The user's role is for the first instance only.
        if (!given || std::string(role) != "server") {
            c.kv.erase(
                std::remove_if(c.kv.begin(), c.kv.end(),
                               [](auto &kv) { return kv.first == "role"; }),
                c.kv.end());
            c.kv.emplace_back("role", role);
        }
    }
    return c;
}

Inst make_inst(const std::string &label)
{
    Inst in;
    in.h = new_host(label);
    return in;
}

std::string last_log(const HostCtx *h)
{
    std::lock_guard l(g_mu);
    return h->logs.empty() ? std::string("(no log line)") : h->logs.back();
}

void rule_abi1(Env &env)
{
    set_rule("ABI-1");
    Outcome o;
    env.main =
        make_inst(env.has_role ? "instance 1 (role=server)" : "instance 1");
    std::string err;
    int32_t st = do_create(env.main, config_for(env, "server"), &err);
    if (st != TODD_COMMS_OK) {
        o.fail("create with a valid configuration returned " + status_name(st) +
               ": " + last_log(env.main.h));
        o.send("ABI-1", "");
        return;
    }
    if (!err.empty()) {
        o.fail(err);
        o.send("ABI-1", "");
        return;
    }
    env.main_ok = true;

    // Configurations the host would refuse, given straight to create: the
    // plugin may accept them (HOST-2: the host validates) or refuse them,
    // but only with E_CONFIG/E_INVAL and a log line naming the key.
    struct Bad {
        std::string key, value, what;
    };
    std::vector<Bad> bad = {{"todd_check_no_such_key", "1", "an unknown key"}};
    for (auto &k : env.info->keys) {
        if (k.type == TODD_COMMS_CFG_INT) {
            bad.push_back({k.name, "not-a-number",
                           "a non-integer value for int key '" + k.name + "'"});
            break;
        }
    }
    for (auto &k : env.info->keys) {
        if (k.type == TODD_COMMS_CFG_BOOL) {
            bad.push_back(
                {k.name, "maybe",
                 "a non-boolean value for bool key '" + k.name + "'"});
            break;
        }
    }
    int accepted = 0, refused = 0;
    for (auto &b : bad) {
        Config c = config_for(env, "agent");
        c.kv.erase(std::remove_if(c.kv.begin(), c.kv.end(),
                                  [&](auto &kv) { return kv.first == b.key; }),
                   c.kv.end());
        c.kv.emplace_back(b.key, b.value);
        Inst bi = make_inst("instance (" + b.what + ")");
        std::string e2;
        int32_t bst = do_create(bi, c, &e2);
        if (!e2.empty())
            o.fail(e2);
        if (bst == TODD_COMMS_OK) {
            ++accepted;
            do_destroy(bi);
            continue;
        }
        ++refused;
        if (bst != TODD_COMMS_E_CONFIG && bst != TODD_COMMS_E_INVAL) {
            o.fail("create with " + b.what + " returned " + status_name(bst) +
                   ", expected E_CONFIG or E_INVAL (" + last_log(bi.h) + ")");
            continue;
        }
        bool named = false;
        {
            std::lock_guard l(g_mu);
            for (auto &line : bi.h->logs)
                if (line.find(b.key) != std::string::npos)
                    named = true;
        }
        if (!named)
            o.fail("create with " + b.what + " returned " + status_name(bst) +
                   " but logged no line naming '" + b.key + "'");
    }
    o.send("ABI-1", "create with a valid configuration succeeded; " +
                        std::to_string(refused) +
                        " bad configuration(s) refused with E_CONFIG/E_INVAL "
                        "naming the key, " +
                        std::to_string(accepted) +
                        " accepted (left to the host's validation)");
}

void rule_abi2(Env &env)
{
    set_rule("ABI-2");
    Outcome o;
    // create, start, stop, start again (E_STATE), destroy.
    Inst a = make_inst("lifecycle instance");
    int32_t st = do_create(a, config_for(env, "agent"));
    if (st != TODD_COMMS_OK) {
        o.fail("create returned " + status_name(st));
    } else {
        if ((st = do_start(a)) != TODD_COMMS_OK)
            o.fail("start returned " + status_name(st) + ": " + last_log(a.h));
        std::string nq;
        if ((st = do_stop(a, &nq)) != TODD_COMMS_OK)
            o.fail("stop returned " + status_name(st));
        if (!nq.empty())
            o.fail(nq);
        st = do_control(a, "start", [&] { return g_d->start(a.self); });
        if (st != TODD_COMMS_E_STATE)
            o.fail("start after stop returned " + status_name(st) +
                   ", expected E_STATE");
        quiet_period();
        do_destroy(a);
        std::lock_guard l(g_mu);
        for (auto &v : a.h->violations)
            o.fail(v);
    }

    // destroy without stop, with a subscription and messages in flight.
    Inst b = make_inst("instance destroyed without stop");
    if ((st = do_create(b, config_for(env, "agent"))) != TODD_COMMS_OK) {
        o.fail("create returned " + status_name(st));
    } else {
        do_start(b);
        std::string d = new_dest("abi2");
        auto s = do_subscribe(b, d, nullptr);
        for (int i = 0; i < 3; ++i)
            do_publish(b, d, "lifecycle-" + std::to_string(i), nullptr);
        if (s)
            wait_for([&] { return s->got.size() >= 1; }, g_timeout_ms);
        do_destroy(b);
        quiet_period();
        std::lock_guard l(g_mu);
        for (auto &v : b.h->violations)
            o.fail(v);
    }

    // create then destroy, never started.
    Inst c = make_inst("instance never started");
    if ((st = do_create(c, config_for(env, "agent"))) != TODD_COMMS_OK)
        o.fail("create returned " + status_name(st));
    else
        do_destroy(c);

    o.send("ABI-2", "create/start/stop/destroy ok, start after stop is "
                    "E_STATE, destroy without stop and without start safe");
}

/** Start the main (and, for remote plugins, a second) instance. */
std::string start_instances(Env &env)
{
    int32_t st = do_start(env.main);
    if (st != TODD_COMMS_OK)
        return "start of the main instance returned " + status_name(st) + ": " +
               last_log(env.main.h);
    if (env.remote) {
        Inst s =
            make_inst(env.has_role ? "instance 2 (role=agent)" : "instance 2");
        st = do_create(s, config_for(env, "agent"));
        if (st != TODD_COMMS_OK)
            return "create of a second instance returned " + status_name(st) +
                   ": " + last_log(s.h);
        st = do_start(s);
        if (st != TODD_COMMS_OK)
            return "start of a second instance returned " + status_name(st) +
                   ": " + last_log(s.h);
        env.second = s;
    }
    return {};
}

struct Expect {
    std::string payload;
    const char *content_type; // NULL: default (NULL or text/plain)
};

void rule_abi3(Env &env)
{
    set_rule("ABI-3");
    Outcome o;
    std::string binary;
    for (int i = 0; i < 256; ++i)
        binary += static_cast<char>(i);
    binary += std::string("\0\0tail", 6);
    std::string big(65536, '\0');
    for (size_t i = 0; i < big.size(); ++i)
        big[i] = static_cast<char>((i * 131 + 7) & 0xff);

    struct Route {
        Inst *pub;
        Inst *sub;
        std::string dest;
        std::vector<Expect> msgs;
        std::shared_ptr<Sub> s;
    };
    std::vector<Route> routes;
    routes.push_back(
        {&env.main,
         &env.main,
         new_dest("abi3-binary"),
         {{binary, "application/octet-stream"}, {"hello", nullptr}},
         nullptr});
    routes.push_back(
        {&env.main,
         &env.main,
         new_dest("abi3-empty"),
         {{"", "application/x-empty"}, {big, "application/x-todd-check"}},
         nullptr});
    routes.push_back({&env.main,
                      &env.main,
                      new_dest("abi3-json"),
                      {{"{\"type\":\"check\",\"n\":1}", "application/json"}},
                      nullptr});
    if (env.second) {
        routes.push_back({&env.main,
                          &*env.second,
                          new_dest("abi3-to-second"),
                          {{"from the first instance", "text/plain"}},
                          nullptr});
        routes.push_back({&*env.second,
                          &env.main,
                          new_dest("abi3-from-second"),
                          {{binary, "application/octet-stream"}},
                          nullptr});
    }
    size_t expected = 0;
    for (auto &r : routes) {
        int32_t st;
        r.s = do_subscribe(*r.sub, r.dest, nullptr, &st);
        if (!r.s)
            o.fail("subscribe '" + r.dest + "' returned " + status_name(st));
    }
    for (auto &r : routes) {
        for (auto &m : r.msgs) {
            auto opts = popts(m.content_type);
            int32_t st = do_publish(*r.pub, r.dest, m.payload,
                                    m.content_type ? &opts : nullptr);
            if (st != TODD_COMMS_OK)
                o.fail("publish to '" + r.dest + "' returned " +
                       status_name(st) + ": " + last_log(r.pub->h));
            else
                ++expected;
        }
    }
    wait_for(
        [&] {
            size_t n = 0;
            for (auto &r : routes)
                n += r.s ? r.s->got.size() : 0;
            return n >= expected;
        },
        g_timeout_ms);
    for (auto &r : routes) {
        if (!r.s)
            continue;
        auto got = got_copy(*r.s);
        for (auto &m : r.msgs) {
            int seen = 0;
            for (auto &g : got) {
                if (g.payload != m.payload)
                    continue;
                ++seen;
                if (g.destination != r.dest)
                    o.fail("message on '" + r.dest +
                           "' delivered with destination '" + g.destination +
                           "'");
                if (m.content_type != nullptr &&
                    g.content_type.value_or("(NULL)") != m.content_type)
                    o.fail("content type '" + std::string(m.content_type) +
                           "' delivered as '" +
                           g.content_type.value_or("(NULL)") + "'");
                if (m.content_type == nullptr && g.content_type &&
                    *g.content_type != "text/plain")
                    o.fail("default content type delivered as '" +
                           *g.content_type + "', expected text/plain or NULL");
            }
            if (seen == 0)
                o.fail("payload " + printable(m.payload) + " on '" + r.dest +
                       "' not delivered intact within " +
                       std::to_string(g_timeout_ms) + " ms");
            else if (seen > 1)
                o.fail("payload " + printable(m.payload) + " delivered " +
                       std::to_string(seen) + " times");
        }
        for (auto &g : got) {
            bool known = false;
            for (auto &m : r.msgs)
                known = known || g.payload == m.payload;
            if (!known)
                o.fail("unexpected payload " + printable(g.payload) + " on '" +
                       r.dest + "' (corrupted?)");
        }
        do_unsubscribe(*r.sub, *r.s);
    }
    o.send("ABI-3", std::to_string(expected) + " messages on " +
                        std::to_string(routes.size()) +
                        " destinations round-tripped intact (binary, empty, "
                        "64 KiB), destination and content type preserved" +
                        (env.second ? ", across two instances" : ""));
}

void rule_abi4(Env &env)
{
    set_rule("ABI-4");
    Outcome o;
    std::string d = new_dest("abi4-held");
    const int n = 3;
    for (int i = 0; i < n; ++i) {
        int32_t st =
            do_publish(env.main, d, "held-" + std::to_string(i), nullptr);
        if (st != TODD_COMMS_OK)
            o.fail("publish before any subscriber returned " + status_name(st) +
                   ": " + last_log(env.main.h));
    }
    Inst &subscriber = env.second ? *env.second : env.main;
    int32_t st;
    auto s = do_subscribe(subscriber, d, nullptr, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
    } else {
        wait_for([&] { return s->got.size() >= n; }, g_timeout_ms);
        auto got = got_copy(*s);
        for (int i = 0; i < n; ++i) {
            std::string p = "held-" + std::to_string(i);
            if (std::none_of(got.begin(), got.end(),
                             [&](auto &g) { return g.payload == p; }))
                o.fail("message '" + p +
                       "' published before the subscription was not "
                       "delivered within " +
                       std::to_string(g_timeout_ms) + " ms");
        }
        do_unsubscribe(subscriber, *s);
    }
    o.send("ABI-4", std::to_string(n) +
                        " messages published before subscribe were held and "
                        "delivered");
}

void rule_abi5(Env &env)
{
    set_rule("ABI-5");
    Outcome o;
    std::string d = new_dest("abi5-compete");
    int32_t st;
    auto s1 = do_subscribe(env.main, d, nullptr, &st);
    Inst &other = env.second ? *env.second : env.main;
    auto s2 = do_subscribe(other, d, nullptr, &st);
    if (!s1 || !s2) {
        o.fail("subscribe returned " + status_name(st));
        o.send("ABI-5", "");
        return;
    }
    const int n = 20;
    for (int i = 0; i < n; ++i)
        if ((st = do_publish(env.main, d, "compete-" + std::to_string(i),
                             nullptr)) != TODD_COMMS_OK)
            o.fail("publish returned " + status_name(st));
    wait_for([&] { return s1->got.size() + s2->got.size() >= n; },
             g_timeout_ms);
    quiet_period();
    std::map<std::string, int> count;
    for (auto *s : {s1.get(), s2.get()})
        for (auto &g : got_copy(*s))
            count[g.payload]++;
    int missing = 0, dup = 0;
    for (int i = 0; i < n; ++i) {
        int c = count["compete-" + std::to_string(i)];
        missing += c == 0;
        dup += c > 1;
    }
    if (missing)
        o.fail(std::to_string(missing) + " of " + std::to_string(n) +
               " messages reached no subscriber within " +
               std::to_string(g_timeout_ms) + " ms");
    if (dup)
        o.fail(std::to_string(dup) + " of " + std::to_string(n) +
               " messages reached more than one competing subscriber");
    size_t a = got_count(*s1), b = got_count(*s2);
    do_unsubscribe(env.main, *s1);
    do_unsubscribe(other, *s2);
    o.send("ABI-5", std::to_string(n) +
                        " messages to 2 competing subscribers, each delivered "
                        "exactly once (" +
                        std::to_string(a) + "/" + std::to_string(b) + ")");
}

void rule_abi6(Env &env)
{
    set_rule("ABI-6");
    if (!(g_d->capabilities & TODD_COMMS_CAP_ACK)) {
        report("ABI-6", "SKIP", "no TODD_COMMS_CAP_ACK");
        return;
    }
    Outcome o;
    std::string d = new_dest("abi6-verdicts");
    std::atomic<int> requeue_seen{0};
    auto handler = [&](const Msg &m) -> int32_t {
        if (m.payload == "requeue-me")
            return ++requeue_seen == 1 ? TODD_COMMS_VERDICT_REQUEUE
                                       : TODD_COMMS_VERDICT_ACK;
        if (m.payload == "reject-me")
            return TODD_COMMS_VERDICT_REJECT;
        return TODD_COMMS_VERDICT_ACK;
    };
    int32_t st;
    auto s = do_subscribe(env.main, d, handler, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
        o.send("ABI-6", "");
        return;
    }
    for (const char *p : {"requeue-me", "reject-me", "ack-me"})
        if ((st = do_publish(env.main, d, p, nullptr)) != TODD_COMMS_OK)
            o.fail("publish returned " + status_name(st));
    auto count = [&](const std::vector<Msg> &got, const std::string &p) {
        return std::count_if(got.begin(), got.end(),
                             [&](auto &g) { return g.payload == p; });
    };
    wait_for(
        [&] {
            return count(s->got, "requeue-me") >= 2 &&
                   count(s->got, "reject-me") >= 1 &&
                   count(s->got, "ack-me") >= 1;
        },
        g_timeout_ms);
    // A sentinel behind them, then time for anything wrongly redelivered.
    do_publish(env.main, d, "sentinel", nullptr);
    wait_for([&] { return count(s->got, "sentinel") >= 1; }, g_timeout_ms);
    quiet_period();
    auto got = got_copy(*s);
    auto rq = count(got, "requeue-me");
    if (rq < 2)
        o.fail("a message answered REQUEUE was not delivered again within " +
               std::to_string(g_timeout_ms) + " ms");
    else if (rq > 2)
        o.fail("a requeued message acknowledged on redelivery came back " +
               std::to_string(rq - 2) + " more time(s)");
    if (rq >= 2) {
        int n = 0;
        for (auto &g : got)
            if (g.payload == "requeue-me" && ++n == 2 &&
                !(g.flags & TODD_COMMS_MSG_REDELIVERED))
                o.fail("the redelivered message lacks "
                       "TODD_COMMS_MSG_REDELIVERED");
    }
    auto rj = count(got, "reject-me");
    if (rj == 0)
        o.fail("message 'reject-me' was never delivered");
    else if (rj > 1)
        o.fail("a message answered REJECT was delivered again (" +
               std::to_string(rj) + " times)");
    auto ak = count(got, "ack-me");
    if (ak != 1)
        o.fail("a message answered ACK was delivered " + std::to_string(ak) +
               " times");
    do_unsubscribe(env.main, *s);
    o.send("ABI-6", "ACK gone, REQUEUE redelivered once with REDELIVERED, "
                    "REJECT never redelivered");
}

void rule_abi7(Env &env)
{
    set_rule("ABI-7");
    if (!(g_d->capabilities & TODD_COMMS_CAP_TTL)) {
        report("ABI-7", "SKIP", "no TODD_COMMS_CAP_TTL");
        return;
    }
    Outcome o;
    std::string d = new_dest("abi7-ttl");
    const int64_t ttl = 100;
    auto short_ttl = popts("text/plain", ttl);
    auto long_ttl = popts("text/plain", 600000);
    int32_t st;
    if ((st = do_publish(env.main, d, "expires", &short_ttl)) != TODD_COMMS_OK)
        o.fail("publish with ttl_ms " + std::to_string(ttl) + " returned " +
               status_name(st));
    if ((st = do_publish(env.main, d, "outlives", &long_ttl)) != TODD_COMMS_OK)
        o.fail("publish with ttl_ms 600000 returned " + status_name(st));
    // Time has to pass for a time-to-live to end.
    std::this_thread::sleep_for(milliseconds(ttl + g_quiet_ms));
    auto s = do_subscribe(env.main, d, nullptr, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
        o.send("ABI-7", "");
        return;
    }
    do_publish(env.main, d, "sentinel", nullptr);
    auto has = [&](const std::string &p) {
        return std::any_of(s->got.begin(), s->got.end(),
                           [&](auto &g) { return g.payload == p; });
    };
    wait_for([&] { return has("sentinel") && has("outlives"); }, g_timeout_ms);
    quiet_period();
    {
        std::lock_guard l(g_mu);
        if (has("expires"))
            o.fail("a message with ttl_ms " + std::to_string(ttl) +
                   " was delivered after " + std::to_string(ttl + g_quiet_ms) +
                   " ms unconsumed");
        if (!has("outlives"))
            o.fail("a message with ttl_ms 600000 was not delivered");
        if (!has("sentinel"))
            o.fail("a message without ttl was not delivered");
    }
    do_unsubscribe(env.main, *s);
    o.send("ABI-7", "ttl_ms " + std::to_string(ttl) +
                        " expired unconsumed, a long ttl was delivered");
}

void rule_abi9(Env &env)
{
    set_rule("ABI-9");
    Outcome o;
    // Concurrent publishers.
    std::string d = new_dest("abi9-threads");
    int32_t st;
    auto s = do_subscribe(env.main, d, nullptr, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
        o.send("ABI-9", "");
        return;
    }
    const int threads = 4, per = 25;
    std::atomic<int> failed{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < per; ++i)
                if (do_publish(env.main, d,
                               "t" + std::to_string(t) + "-" +
                                   std::to_string(i),
                               nullptr) != TODD_COMMS_OK)
                    failed++;
        });
    for (auto &t : ts)
        t.join();
    if (failed)
        o.fail(std::to_string(failed.load()) +
               " concurrent publishes returned an error");
    wait_for([&] { return s->got.size() >= threads * per; }, g_timeout_ms);
    {
        std::set<std::string> seen;
        for (auto &g : got_copy(*s))
            seen.insert(g.payload);
        if (seen.size() != threads * per)
            o.fail(std::to_string(seen.size()) + " of " +
                   std::to_string(threads * per) +
                   " concurrently published messages delivered within " +
                   std::to_string(g_timeout_ms) + " ms");
    }
    do_unsubscribe(env.main, *s);

    // Publish from inside deliver.
    std::string ping = new_dest("abi9-ping"), pong = new_dest("abi9-pong");
    auto sp = do_subscribe(env.main, pong, nullptr, &st);
    std::atomic<int> inner_fail{0};
    auto si = do_subscribe(
        env.main, ping,
        [&](const Msg &m) {
            if (do_publish(env.main, pong, "re:" + m.payload, nullptr) !=
                TODD_COMMS_OK)
                inner_fail++;
            return TODD_COMMS_VERDICT_ACK;
        },
        &st);
    if (!sp || !si) {
        o.fail("subscribe returned " + status_name(st));
    } else {
        const int n = 5;
        for (int i = 0; i < n; ++i)
            do_publish(env.main, ping, "ping-" + std::to_string(i), nullptr);
        wait_for([&] { return sp->got.size() >= n; }, g_timeout_ms);
        if (inner_fail)
            o.fail("publish from inside deliver failed " +
                   std::to_string(inner_fail.load()) + " time(s)");
        if (got_count(*sp) < n)
            o.fail(std::to_string(got_count(*sp)) + " of " + std::to_string(n) +
                   " messages published from inside deliver arrived");
    }
    if (si)
        do_unsubscribe(env.main, *si);
    if (sp)
        do_unsubscribe(env.main, *sp);
    o.send("ABI-9", std::to_string(threads * per) + " messages from " +
                        std::to_string(threads) +
                        " threads and publish from inside deliver all "
                        "delivered");
}

void rule_abi10(Env &env)
{
    set_rule("ABI-10");
    Outcome o;
    auto expect_inval = [&](const std::string &what, int32_t st) {
        if (st != TODD_COMMS_E_INVAL)
            o.fail(what + " returned " + status_name(st) +
                   ", expected E_INVAL");
    };
    const uint8_t x[] = {'x'};
    expect_inval("publish with a NULL destination", guarded("publish", [&] {
                     return g_d->publish(env.main.self, nullptr, x, 1, nullptr);
                 }));
    std::string d = new_dest("abi10");
    expect_inval(
        "publish with a NULL payload of length 5", guarded("publish", [&] {
            return g_d->publish(env.main.self, d.c_str(), nullptr, 5, nullptr);
        }));
    expect_inval("subscribe with a NULL destination",
                 do_control(env.main, "subscribe", [&] {
                     return g_d->subscribe(env.main.self, nullptr, ++g_cookie,
                                           nullptr);
                 }));
    expect_inval("unsubscribe of an unknown cookie",
                 do_control(env.main, "unsubscribe", [&] {
                     return g_d->unsubscribe(env.main.self,
                                             0x7e57c0de00000000ull + g_cookie);
                 }));
    int32_t st;
    auto s = do_subscribe(env.main, d, nullptr, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
    } else {
        std::string d2 = new_dest("abi10-dup");
        expect_inval("subscribe with a cookie already in use",
                     do_control(env.main, "subscribe", [&] {
                         return g_d->subscribe(env.main.self, d2.c_str(),
                                               s->cookie, nullptr);
                     }));
        do_unsubscribe(env.main, *s);
    }
    {
        std::lock_guard l(g_mu);
        for (auto &e : g_escaped)
            o.fail(e);
    }
    o.send("ABI-10", "invalid arguments returned E_INVAL, no exception "
                     "escaped any call");
}

void rule_abi11(Env &env)
{
    set_rule("ABI-11");
    if (g_d->publish_batch == nullptr) {
        report("ABI-11", "SKIP",
               "publish_batch not implemented (the host publishes one by one)");
        return;
    }
    Outcome o;
    std::string d = new_dest("abi11-batch");
    int32_t st;
    auto s = do_subscribe(env.main, d, nullptr, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
        o.send("ABI-11", "");
        return;
    }
    auto json = popts("application/json");
    const std::string p[3] = {"batch-0", "{\"batch\":1}", "batch-2"};
    todd_comms_outgoing msgs[3] = {
        {d.c_str(), reinterpret_cast<const uint8_t *>(p[0].data()), p[0].size(),
         nullptr},
        {d.c_str(), reinterpret_cast<const uint8_t *>(p[1].data()), p[1].size(),
         &json},
        {d.c_str(), reinterpret_cast<const uint8_t *>(p[2].data()), p[2].size(),
         nullptr},
    };
    const todd_comms_status sentinel = 0x5eed;
    todd_comms_status statuses[3] = {sentinel, sentinel, sentinel};
    st = guarded("publish_batch", [&] {
        return g_d->publish_batch(env.main.self, msgs, 3, statuses);
    });
    if (st != TODD_COMMS_OK)
        o.fail("publish_batch of 3 valid messages returned " + status_name(st));
    for (int i = 0; i < 3; ++i)
        if (statuses[i] == sentinel)
            o.fail("statuses[" + std::to_string(i) + "] was not written");
        else if (statuses[i] != TODD_COMMS_OK)
            o.fail("statuses[" + std::to_string(i) + "] is " +
                   status_name(statuses[i]));
    st = guarded("publish_batch", [&] {
        return g_d->publish_batch(env.main.self, msgs, 0, statuses);
    });
    if (st != TODD_COMMS_OK)
        o.fail("publish_batch of 0 messages returned " + status_name(st));
    wait_for([&] { return s->got.size() >= 3; }, g_timeout_ms);
    auto got = got_copy(*s);
    for (auto &payload : p)
        if (std::none_of(got.begin(), got.end(),
                         [&](auto &g) { return g.payload == payload; }))
            o.fail("batched message '" + payload + "' was not delivered");
    do_unsubscribe(env.main, *s);
    o.send("ABI-11", "3 statuses written and OK, all delivered; an empty "
                     "batch is OK");
}

void rule_abi8(Env &env)
{
    set_rule("ABI-8");
    Outcome o;
    // unsubscribe while a deliver is running for the cookie.
    std::string d = new_dest("abi8-unsub");
    std::atomic<bool> in_deliver{false};
    int32_t st;
    auto s = do_subscribe(
        env.main, d,
        [&](const Msg &) {
            if (!in_deliver.exchange(true)) {
                g_cv.notify_all();
                std::this_thread::sleep_for(milliseconds(100));
            }
            return TODD_COMMS_VERDICT_ACK;
        },
        &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
    } else {
        for (int i = 0; i < 10; ++i)
            do_publish(env.main, d, "before-" + std::to_string(i), nullptr);
        wait_for([&] { return in_deliver.load(); }, g_timeout_ms);
        std::string nq;
        st = do_unsubscribe(env.main, *s, &nq);
        if (st != TODD_COMMS_OK)
            o.fail("unsubscribe returned " + status_name(st));
        if (!nq.empty())
            o.fail(nq);
        for (int i = 0; i < 5; ++i)
            do_publish(env.main, d, "after-" + std::to_string(i), nullptr);
        quiet_period();
    }

    // stop while deliveries are flowing, then destroy.
    std::string d2 = new_dest("abi8-stop");
    std::atomic<bool> delivering{false};
    auto s2 = do_subscribe(
        env.main, d2,
        [&](const Msg &) {
            delivering = true;
            g_cv.notify_all();
            std::this_thread::sleep_for(milliseconds(5));
            return TODD_COMMS_VERDICT_ACK;
        },
        &st);
    if (s2) {
        for (int i = 0; i < 20; ++i)
            do_publish(env.main, d2, "flow-" + std::to_string(i), nullptr);
        wait_for([&] { return delivering.load(); }, g_timeout_ms);
    }
    std::vector<Inst *> all{&env.main};
    if (env.second)
        all.push_back(&*env.second);
    for (Inst *in : all) {
        std::string nq;
        st = do_stop(*in, &nq);
        if (st != TODD_COMMS_OK)
            o.fail(in->h->label + ": stop returned " + status_name(st));
        if (!nq.empty())
            o.fail(nq);
    }
    quiet_period();
    for (Inst *in : all)
        do_destroy(*in);
    quiet_period();
    {
        std::lock_guard l(g_mu);
        for (auto &v : g_abi8_violations)
            o.fail(v);
    }
    o.send("ABI-8", "no deliver after unsubscribe returned, no callback "
                    "after stop or destroy returned");
}

/** Map a loader refusal to its LOAD-* rule. */
int refused_rule(const std::string &message)
{
    auto at = message.find("(LOAD-");
    if (at == std::string::npos)
        return 0;
    return std::atoi(message.c_str() + at + 6);
}

int child_main(const Args &args)
{
    g_timeout_ms = args.timeout_ms;
    g_quiet_ms = std::clamp(args.timeout_ms / 10, 100, 300);
    g_call_budget_ms = 2 * args.timeout_ms + 1000;
    g_verbose = args.verbose;
    // The host's own log lines (loader refusals) are reported, not printed.
    todd::log::set_sink(
        [](todd::log::Level, std::string_view c, std::string_view m) {
            if (g_verbose)
                std::fprintf(stderr, "[host %.*s] %.*s\n", int(c.size()),
                             c.data(), int(m.size()), m.data());
        });
    std::thread(watchdog).detach();

    // A crash while loading is in the plugin's ELF constructors (LOAD-3).
    set_rule("LOAD-3");
    todd::core::PluginRegistry reg(
        todd::core::plugin_search_path(args.plugin_dirs));
    std::shared_ptr<const todd::core::Plugin> plugin;
    try {
        plugin = reg.load(args.target);
    } catch (const std::exception &e) {
        int n = refused_rule(e.what());
        if (n == 0)
            n = 1;
        for (int i = 1; i < n; ++i)
            report("LOAD-" + std::to_string(i), "PASS",
                   "checked before the refusal");
        report("LOAD-" + std::to_string(n), "FAIL", e.what());
        for (size_t i = static_cast<size_t>(n); i < kRuleCount; ++i)
            report(kRules[i], "SKIP",
                   "not run: the plugin was refused (LOAD-" +
                       std::to_string(n) + ")");
        return 1;
    }
    const auto &info = plugin->info();
    g_d = &plugin->descriptor();
    emit("I " + info.name + " " + info.version + " " + info.path);

    struct stat st {};
    ::stat(info.path.c_str(), &st);
    char mode[16];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    report("LOAD-1", "PASS", "regular file " + info.path);
    report("LOAD-2", "PASS",
           std::string("mode ") + mode +
               ", file and every directory above owned by root or us, "
               "writable by others only where sticky above");
    report("LOAD-3", "PASS",
           "complete ELF shared object for this host; dlopen "
           "RTLD_NOW|RTLD_LOCAL succeeded");
    report("LOAD-4", "PASS", "exports " TODD_COMMS_ENTRY_SYMBOL_V1);
    report("LOAD-5", "PASS", "entry returned a descriptor");
    report("LOAD-6", "PASS",
           "ABI " + std::to_string(info.abi_major) + "." +
               std::to_string(info.abi_minor));
    report("LOAD-7", "PASS",
           "struct_size " + std::to_string(g_d->struct_size) +
               " >= " + std::to_string(sizeof(todd_comms_plugin_descriptor)));
    report("LOAD-8", "PASS",
           std::string("all mandatory functions present, publish_batch ") +
               (g_d->publish_batch ? "present" : "absent"));
    report("LOAD-9", "PASS",
           "min_host_abi_minor " + std::to_string(info.min_host_abi_minor) +
               " <= host " + std::to_string(TODD_COMMS_ABI_MINOR));
    report("LOAD-10", "PASS", "name '" + info.name + "' matches the file");
    std::string keys;
    for (auto &k : info.keys)
        keys += (keys.empty() ? "" : ", ") + k.name + " (" +
                todd::core::config_type_name(k.type) + ")";
    report("LOAD-11", "PASS",
           info.version + ", " + info.license + ", capabilities " +
               todd::core::capabilities_string(info.capabilities) + ", " +
               std::to_string(info.keys.size()) + " configuration key(s)" +
               (keys.empty() ? "" : ": " + keys));

    Env env;
    env.info = &info;
    env.remote = (info.capabilities & TODD_COMMS_CAP_REMOTE) != 0;
    env.has_role = todd::core::declares_key(info, "role");
    todd::core::Options given(args.opts.begin(), args.opts.end());
    // config_for() sets it per instance.
    todd::core::fill_in_role(info, given, "server");
    try {
        for (auto &[k, v] : todd::core::validate_options(info, given))
            env.base.kv.emplace_back(k, v);
    } catch (const std::exception &e) {
        report("ABI-1", "FAIL",
               std::string("--comms-opt refused by the host: ") + e.what());
        for (size_t i = 12; i < kRuleCount; ++i)
            report(kRules[i], "SKIP", "not run: no valid configuration");
        return 1;
    }

    auto skip_rest = [&](const std::string &why) {
        for (const char *r : {"ABI-3", "ABI-4", "ABI-5", "ABI-6", "ABI-7",
                              "ABI-8", "ABI-9", "ABI-10", "ABI-11"})
            report(r, "FAIL", why);
    };
    rule_abi1(env);
    if (!env.main_ok) {
        report("ABI-2", "SKIP", "not run: create failed (ABI-1)");
        skip_rest("not run: create failed (ABI-1)");
        return 1;
    }
    // Started before ABI-2: with a server/agent plugin the lifecycle
    // instances (agents) need the first instance (the server) running.
    std::string start_error = start_instances(env);
    rule_abi2(env);
    set_rule("ABI-3");
    if (!start_error.empty()) {
        skip_rest(start_error);
        return 1;
    }
    rule_abi3(env);
    rule_abi4(env);
    rule_abi5(env);
    rule_abi6(env);
    rule_abi7(env);
    rule_abi9(env);
    rule_abi10(env);
    rule_abi11(env);
    rule_abi8(env); // last: stops and destroys the instances
    return 0;
}

// ---------------------------------------------------------------------------
// Parent side

struct Result {
    std::string verdict, text;
};

int parse_args(int argc, char **argv, Args &a)
{
    auto value = [&](int &i, const std::string &opt, std::string &out) -> bool {
        std::string arg = argv[i];
        if (arg.size() > opt.size() &&
            arg.compare(0, opt.size() + 1, opt + "=") == 0) {
            out = arg.substr(opt.size() + 1);
            return true;
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "todd-comms check: %s needs a value\n",
                         opt.c_str());
            return false;
        }
        out = argv[++i];
        return true;
    };
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i], v;
        auto is = [&](const char *o) {
            return arg == o || arg.rfind(std::string(o) + "=", 0) == 0;
        };
        if (arg == "-h" || arg == "--help") {
            std::fputs(kUsage, stdout);
            return todd::core::exit_ok;
        } else if (arg == "-v" || arg == "--verbose") {
            a.verbose = true;
        } else if (is("--plugin-dir")) {
            if (!value(i, "--plugin-dir", v))
                return todd::core::exit_usage;
            a.plugin_dirs.push_back(v);
        } else if (is("--comms-opt")) {
            if (!value(i, "--comms-opt", v))
                return todd::core::exit_usage;
            auto eq = v.find('=');
            if (eq == std::string::npos || eq == 0) {
                std::fprintf(stderr,
                             "todd-comms check: --comms-opt '%s': expected "
                             "KEY=VALUE\n",
                             v.c_str());
                return todd::core::exit_usage;
            }
            a.opts.emplace_back(v.substr(0, eq), v.substr(eq + 1));
        } else if (is("--timeout-ms")) {
            if (!value(i, "--timeout-ms", v))
                return todd::core::exit_usage;
            char *end = nullptr;
            long n = std::strtol(v.c_str(), &end, 10);
            if (end == v.c_str() || *end != '\0' || n < 100 || n > 600000) {
                std::fprintf(stderr,
                             "todd-comms check: --timeout-ms '%s': expected "
                             "100..600000\n",
                             v.c_str());
                return todd::core::exit_usage;
            }
            a.timeout_ms = static_cast<int>(n);
        } else if (!arg.empty() && arg[0] == '-') {
            std::fprintf(stderr, "todd-comms check: unknown option '%s'\n%s",
                         arg.c_str(), kUsage);
            return todd::core::exit_usage;
        } else if (a.target.empty()) {
            a.target = arg;
        } else {
            std::fprintf(stderr,
                         "todd-comms check: one plugin at a time ('%s')\n",
                         arg.c_str());
            return todd::core::exit_usage;
        }
    }
    if (a.target.empty()) {
        std::fprintf(stderr, "%s", kUsage);
        return todd::core::exit_usage;
    }
    return -1;
}

} // namespace

int todd_comms_check_main(int argc, char **argv)
{
    Args args;
    if (int rc = parse_args(argc, argv, args); rc >= 0)
        return rc;

    int fds[2];
    if (::pipe(fds) != 0) {
        std::perror("todd-comms check: pipe");
        return todd::core::exit_failure;
    }
    std::fflush(stdout);
    std::fflush(stderr);
    // SIGINT/SIGTERM end the check at any point: the parent takes them
    // through a signalfd and kills the test host, which may be blocked in
    // the plugin (docs: exit status 128 + the signal's number).
    sigset_t stop_set, old_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &stop_set, &old_set);
    int sig_fd = ::signalfd(-1, &stop_set, SFD_CLOEXEC);
    pid_t pid = ::fork();
    if (pid < 0) {
        std::perror("todd-comms check: fork");
        return todd::core::exit_failure;
    }
    if (pid == 0) {
        ::close(sig_fd);
        ::sigprocmask(SIG_SETMASK, &old_set, nullptr);
        ::close(fds[0]);
        g_report_fd = fds[1];
        // Unique destination names: a broker may be shared with other runs.
        std::random_device rd;
        char buf[32];
        std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
        g_prefix = std::string("todd-check-") + buf;
        int rc = 1;
        try {
            rc = child_main(args);
        } catch (const std::exception &e) {
            report(g_current_rule, "FAIL",
                   std::string("the checker failed: ") + e.what());
        }
        std::fflush(stderr);
        // No static destructors or exit handlers: a broken plugin may still
        // have threads running.
        ::_exit(rc == 0 ? 0 : 1);
    }
    ::close(fds[1]);

    std::map<std::string, Result> results;
    std::string current, ident, buf;
    char chunk[4096];
    auto handle = [&](const std::string &line) {
        if (line.size() < 2)
            return;
        std::string rest = line.substr(2);
        if (line[0] == 'B') {
            current = rest;
        } else if (line[0] == 'I') {
            ident = rest;
        } else if (line[0] == 'R') {
            auto sp1 = rest.find(' ');
            auto sp2 = rest.find(' ', sp1 + 1);
            if (sp1 == std::string::npos)
                return;
            std::string rule = rest.substr(0, sp1);
            std::string verdict = rest.substr(sp1 + 1, sp2 - sp1 - 1);
            std::string text =
                sp2 == std::string::npos ? "" : rest.substr(sp2 + 1);
            if (!results.count(rule))
                results[rule] = {verdict, text};
        }
    };
    for (;;) {
        pollfd pf[2] = {{fds[0], POLLIN, 0}, {sig_fd, POLLIN, 0}};
        if (::poll(pf, sig_fd >= 0 ? 2 : 1, -1) < 0 && errno == EINTR)
            continue;
        if (sig_fd >= 0 && (pf[1].revents & POLLIN)) {
            signalfd_siginfo si{};
            ssize_t r = ::read(sig_fd, &si, sizeof si);
            int sig = r == sizeof si ? static_cast<int>(si.ssi_signo) : SIGTERM;
            ::kill(pid, SIGKILL);
            while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
            }
            std::fprintf(stderr,
                         "todd-comms check: stopped by %s during %s; test "
                         "host killed\n",
                         strsignal(sig),
                         current.empty() ? "start-up" : current.c_str());
            return todd::core::exit_on_signal(sig);
        }
        ssize_t n = ::read(fds[0], chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        buf.append(chunk, static_cast<size_t>(n));
        size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
            handle(buf.substr(0, nl));
            buf.erase(0, nl + 1);
        }
    }
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::string death;
    if (WIFSIGNALED(status))
        death = std::string("the plugin crashed the test host (signal ") +
                std::to_string(WTERMSIG(status)) + ", " +
                strsignal(WTERMSIG(status)) + ")";
    else if (WIFEXITED(status) && WEXITSTATUS(status) > 1)
        death = "the test host exited with status " +
                std::to_string(WEXITSTATUS(status));

    int passed = 0, failed = 0, skipped = 0;
    for (const char *rule : kRules) {
        Result r;
        auto it = results.find(rule);
        if (it != results.end()) {
            r = it->second;
        } else if (rule == current) {
            r = {"FAIL", death.empty() ? "no result (the test host stopped)"
                                       : death + " during this rule"};
        } else {
            r = {"SKIP", "not run: " +
                             (death.empty() ? std::string("test host stopped")
                                            : death) +
                             " during " + current};
        }
        if (r.verdict == "PASS")
            ++passed;
        else if (r.verdict == "FAIL")
            ++failed;
        else
            ++skipped;
        std::printf("%s %s %s\n", r.verdict.c_str(), rule, r.text.c_str());
    }
    bool ok = failed == 0 && death.empty() &&
              !(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    std::printf("todd-comms check: %s: %d passed, %d failed, %d skipped: %s\n",
                ident.empty() ? args.target.c_str() : ident.c_str(), passed,
                failed, skipped, ok ? "conforms" : "DOES NOT CONFORM");
    std::fflush(stdout);
    return ok ? todd::core::exit_ok : todd::core::exit_failure;
}
