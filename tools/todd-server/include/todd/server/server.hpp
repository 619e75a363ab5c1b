// SPDX-License-Identifier: Apache-2.0
// todd-server as a library: agent registry, asset server, groups, test runs,
// ToDD's REST API and the test-run status stream, over any comms transport.
// The todd-server program is a thin main() around this; tests and
// benchmarks run it in-process.
#pragma once

#include <todd/core/comms.hpp>
#include <todd/core/config.hpp>
#include <todd/core/transport.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace todd::server {

using std::chrono::milliseconds;

/** Everything the server reads from server.cfg (docs/server.md). */
struct ServerConfig {
    /** [API] Host/Port: REST listen address; port 0 picks a free one. */
    std::string api_host = "127.0.0.1";
    uint16_t api_port = 8080;
    /** [API] StreamPort: test-run status stream (same host as the API). */
    uint16_t stream_port = 8081;
    /** [Assets] IP/Port: asset HTTP server listen address. */
    std::string assets_host = "0.0.0.0";
    uint16_t assets_port = 8090;
    /** Host part of the asset URLs sent to agents ([LocalResources]
     *  IPAddrOverride, else DefaultInterface's first IPv4, else the
     *  assets host when it is a specific address, else 127.0.0.1). */
    std::string advertised_addr;
    /** [LocalResources] OptDir: holds assets/{factcollectors,testlets}. */
    std::string opt_dir = "/opt/todd/server";
    /** SQLite file for objects and results (--db); "" =
     * <OptDir>/todd-server.db. */
    std::string db_path;
    /** [Grouping] AgentExpiry: an agent is dropped this long after its
     *  last accepted advert. */
    milliseconds agent_expiry{30000};
    /** [Assets] DownloadRetry: an agent whose hashes still differ gets
     *  another DownloadAsset only after this. */
    milliseconds download_retry{30000};
    /** [Testing] InstallTimeout: wait for every participant to be ready
     *  (and for group targets to be testing). */
    milliseconds install_timeout{30000};
    /** [Testing] Timeout: time_limit (s) given to group-target agents. */
    int64_t target_time_limit = 30;
    /** [Testing] SourceTimeLimit: time_limit (s) given to source agents. */
    int64_t source_time_limit = 30;
    /** [Testing] ResultGrace: extra wait for test data after the longest
     *  time limit before a silent agent counts as failed. */
    milliseconds result_grace{15000};
    /** [API] StreamAckTimeout: a stream client that does not ack is dropped. */
    milliseconds stream_ack_timeout{30000};
    /** [API] StreamLinger: a finished run is still offered to a stream
     *  client that connects this long after its end. */
    milliseconds stream_linger{10000};
    /** [Comms] max_message_bytes / max_response_bytes (resolve_comms). */
    core::MessageLimits message_limits;
    /** [API] MaxBodyBytes: a request body above this gets 413, unread. */
    size_t max_body_bytes = 1 << 20;
    /** [API] MaxHeaderBytes: a request head above this gets 431. */
    size_t max_header_bytes = 8192;
    /** [API] MaxConnections: open connections of the REST, asset and
     *  stream listeners together; above it the longest idle is shed. */
    size_t max_connections = 1024;
    /** [API] IdleTimeout: an HTTP connection silent this long is closed. */
    milliseconds idle_timeout{120000};
    /** [Metrics] MaxResultSeries: todd_testrun_result series kept at once
     *  (testruns x agents x targets x metrics); new ones beyond are
     *  dropped and counted. */
    size_t max_result_series = 10000;
    /** [Metrics] ResultTTL: a result series not refreshed this long is no
     *  longer exported. */
    milliseconds result_ttl{3600 * 1000};
};

/**
 * Read server.cfg's sections ([API], [Assets], [Grouping], [Testing],
 * [LocalResources], [Metrics]; [Comms] is for resolve_comms; [DB] and [TSDB]
 * are accepted and named in notes as unused). Throws core::ConfigError naming
 * file, line and key for unknown sections/keys or bad values.
 */
ServerConfig load_server_config(const core::IniFile &ini,
                                std::vector<std::string> *notes = nullptr);

/** Hooks for tests and benchmarks; called on the server's I/O thread. */
struct ServerObserver {
    /** An agent's group changed ("" = none), right after SetGroup is sent. */
    std::function<void(const std::string &agent, const std::string &group)>
        on_group;
    /** A test run ended and its result is stored. */
    std::function<void(const std::string &run_uuid)> on_run_finished;
    /** An agent was registered (new == true) or expired (new == false). */
    std::function<void(const std::string &agent, bool registered)> on_agent;
};

class Server {
  public:
    /** Takes a created, not yet started transport. */
    Server(ServerConfig cfg, std::unique_ptr<core::Transport> transport);
    ~Server(); // stop()

    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;

    /** Set before start(). */
    void set_observer(ServerObserver obs);

    /** Open the store, bind the listeners, start comms. Throws on error
     *  (store, address in use, transport). */
    void start();
    /** Stop everything; in-flight runs are abandoned. Idempotent. */
    void stop();

    /** Bound ports (useful when configured as 0). */
    uint16_t api_port() const;
    uint16_t stream_port() const;
    uint16_t assets_port() const;

    /** Snapshot of the agent -> group map. */
    std::map<std::string, std::string> groups() const;
    /** Registered agent UUIDs. */
    std::vector<std::string> agents() const;

    const ServerConfig &config() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace todd::server
