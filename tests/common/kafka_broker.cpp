// SPDX-License-Identifier: Apache-2.0
#include "kafka_broker.hpp"

#include "files.hpp"
#include "ports.hpp"

#include <csignal>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

#ifndef TODD_KAFKA_BROKER_SCRIPT
#define TODD_KAFKA_BROKER_SCRIPT "share/scripts/kafka-broker"
#endif

namespace todd::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// First start: Maven may resolve the jars and the class-data archive is
// made once, on top of the broker's own start timeout.
constexpr auto kResolveTimeout = 300s;

std::string tail_of(const std::string &s, size_t max_bytes)
{
    return s.size() > max_bytes ? s.substr(s.size() - max_bytes) : s;
}

std::string trimmed(std::string s)
{
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    return s;
}

} // namespace

std::string KafkaBroker::script()
{
    const char *env = std::getenv("TODD_KAFKA_BROKER_SCRIPT");
    return env != nullptr && *env != '\0' ? env : TODD_KAFKA_BROKER_SCRIPT;
}

std::optional<std::string> KafkaBroker::unavailable()
{
    static std::once_flag once;
    static std::optional<std::string> why;
    std::call_once(once, [] {
        std::string s = script();
        if (access(s.c_str(), X_OK) != 0) {
            why = "the Kafka broker script " + s + " is missing";
            return;
        }
        // Checks java (17+) and resolves the jars (or finds them cached).
        RunResult r = run_capture({s, "classpath"}, kResolveTimeout);
        if (r.timed_out)
            why = "resolving the Kafka broker's jars ('" + s +
                  " classpath') took more than " +
                  std::to_string(kResolveTimeout.count()) + " s";
        else if (r.exit_code != 0)
            why = "no Kafka broker can run here: " +
                  trimmed(tail_of(r.output, 2000)) +
                  " (share/scripts/install-deps installs what it needs)";
    });
    return why;
}

KafkaBroker::KafkaBroker() : KafkaBroker(Options{}) {}

KafkaBroker::KafkaBroker(Options opts)
    : opts_(std::move(opts)), dir_("todd-kafka")
{
    if (auto why = unavailable())
        throw std::runtime_error(*why);
    if (opts_.start) {
        start(); // the script picks the ports, again if one was taken
        return;
    }
    // Not started yet, but bootstrap() must be known (clients that start
    // before the broker): picked here, bound together so they differ, and
    // released for the broker to bind.
    DeadPort p = DeadPort::refusing(), c = DeadPort::refusing(),
             t = DeadPort::refusing();
    port_ = p.port();
    controller_port_ = c.port();
    tls_port_ = opts_.tls ? t.port() : 0;
}

KafkaBroker::~KafkaBroker()
{
    try {
        stop();
    } catch (...) {
    }
    // dir_ (data, logs, TLS copies) is removed after this.
}

std::vector<std::string> KafkaBroker::run_argv() const
{
    std::vector<std::string> a = {script(), "run", dir_.path(), "--timeout",
                                  std::to_string(opts_.start_timeout.count())};
    if (port_ > 0) { // a restart keeps the ports
        a.insert(a.end(), {"--port", std::to_string(port_), "--controller-port",
                           std::to_string(controller_port_)});
        if (tls_port_ > 0)
            a.insert(a.end(), {"--ssl-port", std::to_string(tls_port_)});
    }
    if (opts_.tls) {
        const Tls &t = *opts_.tls;
        a.insert(a.end(), {"--ssl-ca", t.ca_cert, "--ssl-cert", t.server_cert,
                           "--ssl-key", t.server_key});
        if (t.require_client_cert)
            a.insert(a.end(), {"--ssl-client-auth", "required"});
    }
    for (const auto &kv : opts_.extra_config)
        a.insert(a.end(), {"--set", kv});
    return a;
}

void KafkaBroker::read_ports()
{
    // Lines "port=P", "controller_port=C", "ssl_port=S" (0 without TLS).
    std::istringstream in(read_file(dir_ / "ports"));
    std::map<std::string, int> v;
    for (std::string line; std::getline(in, line);) {
        auto eq = line.find('=');
        if (eq != std::string::npos && line.compare(0, 9, "bootstrap") != 0)
            v[line.substr(0, eq)] = std::atoi(line.c_str() + eq + 1);
    }
    port_ = v["port"];
    controller_port_ = v["controller_port"];
    tls_port_ = v["ssl_port"];
    if (port_ <= 0 || controller_port_ <= 0)
        throw std::runtime_error("no ports in " + dir_ / "ports");
}

void KafkaBroker::start()
{
    if (running())
        return;
    auto t0 = Clock::now();
    SpawnOptions so;
    so.stdout_path = dir_ / "run.out";
    so.stderr_path = dir_ / "run.err";
    run_ = std::make_unique<Process>(run_argv(), so);
    // The script says "ready 127.0.0.1:P" once a metadata request answers;
    // it exits (with the log's errors on stderr) when the broker cannot.
    bool ready =
        run_->wait_output("ready ", opts_.start_timeout + kResolveTimeout);
    if (!ready) {
        run_->stop(10s);
        std::string msg =
            "the Kafka broker in " + dir_.path() +
            " did not start (kafka-broker run: " + run_->poll().text() +
            "):\n" + log_tail();
        run_.reset();
        throw std::runtime_error(msg);
    }
    start_time_ = std::chrono::duration_cast<std::chrono::milliseconds>(
        Clock::now() - t0);
    read_ports();
    pid_ = static_cast<pid_t>(std::stol(read_trimmed(dir_ / "broker.pid")));
}

void KafkaBroker::stop()
{
    if (!running())
        return;
    // The script forwards SIGTERM to the JVM and exits when it has.
    if (run_->terminate(40s).running())
        kill();
    pid_ = 0;
}

void KafkaBroker::kill()
{
    if (!running())
        return;
    if (pid_ > 0)
        ::kill(pid_, SIGKILL);
    if (run_->wait(20s).running())
        run_->kill_now();
    pid_ = 0;
}

void KafkaBroker::restart()
{
    stop();
    start();
}

bool KafkaBroker::running() const
{
    return run_ != nullptr && run_->poll().running();
}

std::string KafkaBroker::bootstrap() const
{
    return host() + ":" + std::to_string(port_);
}

std::string KafkaBroker::tls_bootstrap() const
{
    return tls_port_ > 0 ? host() + ":" + std::to_string(tls_port_) : "";
}

std::string KafkaBroker::log_tail(size_t max_bytes) const
{
    return "--- kafka-broker ---\n" +
           tail_of(read_file_if_exists(dir_ / "run.err"), max_bytes) +
           "\n--- broker.log ---\n" +
           tail_of(read_file_if_exists(dir_ / "broker.log"), max_bytes);
}

} // namespace todd::test
