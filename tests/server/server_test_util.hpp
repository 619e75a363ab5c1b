// SPDX-License-Identifier: Apache-2.0
// Helpers for the server tests and benchmarks: a raw HTTP client (Beast), a
// status-stream client, temporary directories, real in-process agents and
// a real in-process server over any transport plugin.
#pragma once

#include <todd/agent/agent.hpp>
#include <todd/core/transport.hpp>
#include <todd/server/server.hpp>

#include "temp_dir.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace todd::test {

using namespace std::chrono_literals;

struct HttpReply {
    int status = 0;
    std::string reason;
    std::map<std::string, std::string> headers; // lower-case names
    std::string body;
    bool has(const std::string &h) const { return headers.count(h) > 0; }
};

/** One HTTP/1.1 request to 127.0.0.1:port; throws on transport errors. */
HttpReply http(uint16_t port, const std::string &method,
               const std::string &target, const std::string &body = "");

/** The status stream as the CLI reads it: one line, then an ack. */
class StreamClient {
  public:
    explicit StreamClient(uint16_t port); // throws when it cannot connect
    ~StreamClient();
    /** Next line without "\n"; nullopt on EOF or after timeout. */
    std::optional<std::string>
    read_line(std::chrono::milliseconds timeout = 20s);
    void ack();
    /** True when the server closed the connection (EOF within timeout). */
    bool closed_by_server(std::chrono::milliseconds timeout = 20s);

  private:
    int fd_ = -1;
    std::string buf_;
};

/** Poll a condition (every 5 ms) until true or timeout. */
bool wait_until(const std::function<bool()> &pred,
                std::chrono::milliseconds timeout = 20s);

/** Transport factory: a created, not started transport of one plugin. */
using TransportFactory = std::function<std::unique_ptr<core::Transport>()>;
/** Loopback plugin from the build tree. */
TransportFactory loopback_factory();
/** Any plugin from the build tree with options. */
TransportFactory plugin_factory(const std::string &dir, const std::string &name,
                                core::Options opts);

/** Server configuration for tests: free ports, dirs under `root`. */
server::ServerConfig test_server_config(const std::string &root);
/** Copy share/testlets/<name> into <opt_dir>/assets/testlets. */
void install_server_testlet(const std::string &opt_dir,
                            const std::string &name);
/** Write an executable testlet script into a directory. */
void write_script(const std::string &path, const std::string &text);

/** A real agent with its own directories under root/agent-<n>. */
/** hostname: when set, its get_hostname collector reports this name. */
std::unique_ptr<agent::Agent> make_agent(const TransportFactory &tf,
                                         const std::string &root, int n,
                                         agent::AgentConfig *tweak = nullptr,
                                         const std::string &hostname = "");

/** JSON bodies as ToDD's CLI sends them. */
std::string group_json(const std::string &label, const std::string &subnet);
std::string ping_testrun_json(const std::string &label,
                              const std::string &group,
                              const std::string &app = "ping",
                              const std::string &args = "-c 1");
std::string run_request_json(const std::string &name);

/** Follow a run like `todd run`: stream until all finished (or error),
 *  then the result; returns the /v1/testdata body ("" when none). */
struct RunOutcome {
    std::string uuid;
    std::vector<std::string> lines;
    std::string result;
    int result_status = 0;
};
RunOutcome run_and_follow(uint16_t api_port, uint16_t stream_port,
                          const std::string &name);

/** Create `gate` and a testlet at path that passes `check` and, run,
 *  waits until gate is removed, then prints {"ok":1}: a run of it stays
 *  in progress until the test removes the file. */
void write_gated_testlet(const std::string &path, const std::string &gate);

/** True once every agent has testlet `name` in its OptDir; an agent
 *  without it yet is asked to advertise again (which gets it a
 *  DownloadAsset). False after limit. */
bool agents_have_testlet(
    const std::vector<std::unique_ptr<agent::Agent>> &agents,
    const std::string &name, std::chrono::milliseconds limit = 30s);

/** The line of a Prometheus exposition that starts with `series` and a
 *  space (series includes its labels, as serialised). */
std::optional<std::string> metric_line(const std::string &text,
                                       const std::string &series);
/** The sample value of `series`; NaN when it is not there. */
double metric_value(const std::string &text, const std::string &series);

} // namespace todd::test
