// SPDX-License-Identifier: Apache-2.0
// The conformance checker's parts, shared by its files: the harness
// (check.cpp: reporting, the watchdog, running the rules), the instrumented
// host and the calls into the plugin (check_host.cpp), and the rules
// (check_load.cpp: LOAD-*, check_abi.cpp: ABI-1..5, check_behaviour.cpp:
// ABI-6..11).
#pragma once

#include <todd/comms/plugin.h>
#include <todd/core/plugin_registry.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace todd_check {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---------------------------------------------------------------------------
// The harness (check.cpp)

/** Every rule of docs/plugin-abi.md the checker reports on, in print order. */
inline constexpr const char *kRules[] = {
    "LOAD-1", "LOAD-2", "LOAD-3", "LOAD-4",  "LOAD-5",  "LOAD-6",
    "LOAD-7", "LOAD-8", "LOAD-9", "LOAD-10", "LOAD-11", "ABI-1",
    "ABI-2",  "ABI-3",  "ABI-4",  "ABI-5",   "ABI-6",   "ABI-7",
    "ABI-8",  "ABI-9",  "ABI-10", "ABI-11"};
inline constexpr size_t kRuleCount = sizeof kRules / sizeof kRules[0];

/** The command line of `todd-comms check`. */
struct Args {
    std::string target;
    std::vector<std::string> plugin_dirs;
    std::vector<std::pair<std::string, std::string>> opts;
    int timeout_ms = 5000;
    bool verbose = false;
};

/** The status's name (E_INVAL...), or "status N". */
std::string status_name(int32_t st);

/** Child: send one line to the parent (B rule, I ident, R result). */
void emit(const std::string &line);

/** Child: the verdict (PASS, FAIL, SKIP) of a rule, with its detail. */
void report(const std::string &rule, const char *verdict,
            const std::string &text);

/** Child: the rule now running (a crash or hang is blamed on it). */
void set_rule(const std::string &rule);

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

/** A call into the plugin, registered with the watchdog while it runs. */
struct CallScope {
    explicit CallScope(std::string what);
    ~CallScope();
};

extern bool g_verbose; // --verbose: the plugin's log lines on stderr

// ---------------------------------------------------------------------------
// The instrumented host and the calls into the plugin (check_host.cpp)

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

extern std::mutex g_mu;
extern std::condition_variable g_cv;
extern std::vector<std::string> g_abi8_violations; // under g_mu
extern std::vector<std::string> g_escaped;         // under g_mu (ABI-10)
extern const todd_comms_plugin_descriptor *g_d;
extern std::string g_prefix; // unique per run: brokers may be shared
extern std::atomic<uint64_t> g_cookie;
extern int g_timeout_ms; // bound of every wait
extern int g_quiet_ms;   // quiet_period

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

/** A fresh destination name: the run's prefix, tag and a number. */
std::string new_dest(const char *tag);

/** A new host context (never freed: late callbacks). */
HostCtx *new_host(const std::string &label);

/** create; returns the status, sets in.self on success. */
int32_t do_create(Inst &in, const Config &cfg, std::string *err = nullptr);

/** A control call (on the host's own thread), under the watchdog. */
int32_t do_control(Inst &in, const char *what,
                   const std::function<int32_t()> &f);

int32_t do_start(Inst &in);

/** stop, then mark the host context stopped; returns the status. */
int32_t do_stop(Inst &in, std::string *not_quiet = nullptr);

void do_destroy(Inst &in);

/** publish, retrying while the plugin is still connecting. */
int32_t do_publish(Inst &in, const std::string &dest, std::string_view payload,
                   const todd_comms_publish_opts *opts);

todd_comms_publish_opts popts(const char *content_type, int64_t ttl_ms = 0);

/** Subscribe with a fresh cookie; returns NULL (and *st) on failure. */
std::shared_ptr<Sub> do_subscribe(Inst &in, const std::string &dest,
                                  Handler handler, int32_t *st_out = nullptr);

/** unsubscribe; *not_quiet is set when a deliver was still running. */
int32_t do_unsubscribe(Inst &in, Sub &s, std::string *not_quiet = nullptr);

/** Wait up to ms for pred (called under g_mu). */
template <class P> bool wait_for(P pred, int ms)
{
    std::unique_lock l(g_mu);
    return g_cv.wait_until(l, Clock::now() + milliseconds(ms), pred);
}

/** Let time pass to catch what must NOT happen (late or repeated
 *  deliveries); cannot make a conforming plugin fail. */
void quiet_period();

size_t got_count(const Sub &s);
std::vector<Msg> got_copy(const Sub &s);

/** A payload as it can be shown in a result line. */
std::string printable(std::string_view p);

// ---------------------------------------------------------------------------
// The rules

/** Loads the plugin and reports LOAD-1..11 (check_load.cpp); NULL when it
 *  was refused (the rest is reported as not run). */
std::shared_ptr<const todd::core::Plugin> load_rules(const Args &args);

/** What the ABI rules share. */
struct Env {
    const todd::core::PluginInfo *info = nullptr;
    Config base; // validated configuration, defaults filled
    bool has_role = false;
    bool remote = false;
    Inst main;
    std::optional<Inst> second; // another instance, for remote plugins
    bool main_ok = false;
};

// ABI-1..5 (check_abi.cpp)
void rule_abi1(Env &env);
void rule_abi2(Env &env);
/** Start the main (and, for remote plugins, a second) instance. */
std::string start_instances(Env &env);
void rule_abi3(Env &env);
void rule_abi4(Env &env);
void rule_abi5(Env &env);

// ABI-6..11 (check_behaviour.cpp)
void rule_abi6(Env &env);
void rule_abi7(Env &env);
void rule_abi8(Env &env);
void rule_abi9(Env &env);
void rule_abi10(Env &env);
void rule_abi11(Env &env);

} // namespace todd_check
