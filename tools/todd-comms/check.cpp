// SPDX-License-Identifier: Apache-2.0
//
// The conformance checker's harness. The parent process forks a child that
// loads the plugin with core's PluginRegistry (so refusals are the host's
// own, LOAD-*) and drives it through the C ABI from an instrumented host
// table (check_host.cpp), which is how it sees callbacks after
// stop/unsubscribe/destroy. The child streams results over a pipe; the
// parent prints them in rule order, and turns a crash or a watchdog exit of
// the child into a FAIL of the rule in progress. The rules themselves are in
// check_load.cpp, check_abi.cpp and check_behaviour.cpp.
#include "check.hpp"
#include "check_internal.hpp"

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
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <poll.h>
#include <random>
#include <string>
#include <string_view>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace todd_check {

bool g_verbose = false;

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
    "  -v, --verbose          print the plugin's log lines on stderr\n"
    "  -h, --help             show this help and exit\n";

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

CallScope::CallScope(std::string what)
{
    std::lock_guard l(g_calls_mu);
    g_calls[std::this_thread::get_id()] = {
        Clock::now() + milliseconds(g_call_budget_ms), std::move(what)};
}

CallScope::~CallScope()
{
    std::lock_guard l(g_calls_mu);
    g_calls.erase(std::this_thread::get_id());
}

const Clock::time_point g_t0 = Clock::now();
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
// Child side: running the rules

namespace {

/** Child: the bounds of every wait, the host's log lines, the watchdog. */
void child_setup(const Args &args)
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
}

/** Child: the validated configuration the ABI rules start from; false when
 *  the host refuses the --comms-opt values (reported). */
bool make_env(const Args &args, const todd::core::PluginInfo &info, Env &env)
{
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
        return false;
    }

    return true;
}

/** Child: ABI-1..11, in the order their instances allow. */
int abi_rules(Env &env)
{
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

int child_main(const Args &args)
{
    child_setup(args);
    auto plugin = load_rules(args); // loaded until the child exits
    if (!plugin)
        return 1;
    Env env;
    if (!make_env(args, plugin->info(), env))
        return 1;
    return abi_rules(env);
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

/** Child: run the rules, reporting on report_fd; never returns. */
[[noreturn]] void child_process(const Args &args, int report_fd)
{
    g_report_fd = report_fd;
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

/** What the child reported so far. */
struct ChildRun {
    std::map<std::string, Result> results; // by rule, the first verdict
    std::string current;                   // the rule in progress
    std::string ident;                     // the plugin's name and version
};

void on_line(ChildRun &run, const std::string &line)
{
    if (line.size() < 2)
        return;
    std::string rest = line.substr(2);
    if (line[0] == 'B') {
        run.current = rest;
    } else if (line[0] == 'I') {
        run.ident = rest;
    } else if (line[0] == 'R') {
        auto sp1 = rest.find(' ');
        auto sp2 = rest.find(' ', sp1 + 1);
        if (sp1 == std::string::npos)
            return;
        std::string rule = rest.substr(0, sp1);
        std::string verdict = rest.substr(sp1 + 1, sp2 - sp1 - 1);
        std::string text = sp2 == std::string::npos ? "" : rest.substr(sp2 + 1);
        if (!run.results.count(rule))
            run.results[rule] = {verdict, text};
    }
}

/** Read the child's lines until it closes the pipe: -1; or a signal to the
 *  checker killed it: the exit status 128 + the signal's number. */
int read_child(int fd, int sig_fd, pid_t pid, ChildRun &run)
{
    std::string buf;
    char chunk[4096];
    for (;;) {
        pollfd pf[2] = {{fd, POLLIN, 0}, {sig_fd, POLLIN, 0}};
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
                         run.current.empty() ? "start-up"
                                             : run.current.c_str());
            return todd::core::exit_on_signal(sig);
        }
        ssize_t n = ::read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        buf.append(chunk, static_cast<size_t>(n));
        size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
            on_line(run, buf.substr(0, nl));
            buf.erase(0, nl + 1);
        }
    }
    return -1;
}

/** The child's death in words, empty when it exited 0 or 1. */
std::string death_of(int status)
{
    std::string death;
    if (WIFSIGNALED(status))
        death = std::string("the plugin crashed the test host (signal ") +
                std::to_string(WTERMSIG(status)) + ", " +
                strsignal(WTERMSIG(status)) + ")";
    else if (WIFEXITED(status) && WEXITSTATUS(status) > 1)
        death = "the test host exited with status " +
                std::to_string(WEXITSTATUS(status));

    return death;
}

/** Print every rule's verdict in order and the summary; the exit status. */
int print_results(const Args &args, const ChildRun &run,
                  const std::string &death, int status)
{
    int passed = 0, failed = 0, skipped = 0;
    for (const char *rule : kRules) {
        Result r;
        auto it = run.results.find(rule);
        if (it != run.results.end()) {
            r = it->second;
        } else if (rule == run.current) {
            r = {"FAIL", death.empty() ? "no result (the test host stopped)"
                                       : death + " during this rule"};
        } else {
            r = {"SKIP", "not run: " +
                             (death.empty() ? std::string("test host stopped")
                                            : death) +
                             " during " + run.current};
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
                run.ident.empty() ? args.target.c_str() : run.ident.c_str(),
                passed, failed, skipped, ok ? "conforms" : "DOES NOT CONFORM");
    std::fflush(stdout);
    return ok ? todd::core::exit_ok : todd::core::exit_failure;
}

} // namespace
} // namespace todd_check

int todd_comms_check_main(int argc, char **argv)
{
    using namespace todd_check;
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
        child_process(args, fds[1]);
    }
    ::close(fds[1]);
    ChildRun run;
    if (int rc = read_child(fds[0], sig_fd, pid, run); rc >= 0)
        return rc;
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return print_results(args, run, death_of(status), status);
}
