// SPDX-License-Identifier: Apache-2.0
// The server's state and its parts. All state lives on one I/O thread
// (Boost.Asio): comms handlers post their messages to it, REST and stream
// handlers run on it, and every wait is a timer or an event, never a
// polling loop. Sends go through one FIFO sender thread (sender.hpp) so a
// slow transport never blocks the API. The members are defined by job:
//   registry.cpp  adverts, expiry, assets to download, groups
//   runs.cpp      test runs from install to result, and their schedules
//   rest.cpp      ToDD's REST API, metrics, health and the dashboard's data
//   stream.cpp    the test-run status stream
//   server.cpp    start, stop and the public Server
#pragma once

#include <todd/server/server.hpp>

#include "assets.hpp"
#include "dashboard.hpp"
#include "json.hpp"
#include "objects.hpp"
#include "sender.hpp"
#include "server_metrics.hpp"
#include "store.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/log.hpp>
#include <todd/core/messages.hpp>
#include <todd/service/http.hpp>
#include <todd/service/metrics.hpp>

#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace todd::server {

namespace http = service::http;
namespace asio = boost::asio;
namespace rj = rapidjson;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
namespace bhttp = boost::beast::http;
using bhttp::status;

/** The log component of every part of the server. */
inline constexpr const char *C = "server";

struct Part {
    bool source = true;
    std::string status{msg::status_init};
    bool failed = false;
    std::string reason;
    bool has_data = false;
    std::string data; // compact, sorted {target: {metric: value}}
};

struct Run {
    enum class Phase { installing, starting_targets, executing, done };
    Run(asio::io_context &ioc) : timer(ioc) {}
    std::string uuid, label;
    TestRunObject spec;
    std::map<std::string, Part> parts;
    Phase phase = Phase::installing;
    asio::steady_timer timer;
    const char *origin = "api"; // or "schedule"
    steady::time_point started = steady::now();
    int64_t started_ms = 0, ended_ms = 0; // wall clock, for the dashboard
    uint64_t seq = 0;
    uint64_t version = 0;
    bool streamed = false;
    steady::time_point ended;
    std::vector<std::function<void()>> waiters;
    std::string cleandata, statuses;
    milliseconds exec_wait{0};

    std::string status_line() const
    {
        std::string out = "{";
        bool first = true;
        for (const auto &[id, p] : parts) {
            if (!first)
                out += ',';
            first = false;
            json::quote(out, id);
            out += ':';
            json::quote(out,
                        p.failed ? std::string(msg::status_fail) : p.status);
        }
        return out + "}";
    }
};

struct Server::Impl {
    // The io_context is declared first so that it is destroyed last.
    asio::io_context ioc;
    ServerConfig cfg;
    ServerObserver obs;
    std::unique_ptr<core::Comms> comms;
    std::unique_ptr<Sender> sender;
    std::unique_ptr<Store> store;
    std::unique_ptr<AssetWatcher> assets;
    std::shared_ptr<http::Listener> api, asset_http;
    std::unique_ptr<tcp::acceptor> stream_acceptor;
    std::shared_ptr<http::Connections> conns; // all listeners' connections
    std::shared_ptr<http::AcceptLoop> stream_loop;
    uint16_t stream_port = 0;
    core::Subscription advert_sub, response_sub;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>>
        work;
    std::thread io_thread;
    std::string url_host;
    bool started = false, stopped = false;

    struct Agent {
        msg::AgentAdvert advert;
        steady::time_point deadline;
        std::unique_ptr<asio::steady_timer> timer;
        std::string group, sent_group;
    };
    std::map<std::string, Agent> agents;
    std::map<std::string, steady::time_point> downloads; // last DownloadAsset
    std::vector<GroupObject> groups;
    std::map<std::string, std::shared_ptr<Run>> runs;
    uint64_t run_seq = 0;
    steady::time_point last_rescan{};
    ServerMetrics metrics;

    /** A testrun with spec.interval, run by the server itself. */
    struct Schedule {
        milliseconds interval{0};
        std::unique_ptr<asio::steady_timer> timer;
        std::string last_uuid;    // its latest run
        std::string last_refusal; // logged once until it changes
    };
    std::map<std::string, Schedule> schedules;

    Impl(ServerConfig c, std::unique_ptr<core::Transport> t)
        : cfg(std::move(c)),
          metrics(ResultSeriesLimits{cfg.max_result_series, cfg.result_ttl})
    {
        core::SendPolicy policy;
        policy.retry_for = std::chrono::milliseconds(10000);
        comms = std::make_unique<core::Comms>(std::move(t), policy,
                                              cfg.message_limits);
    }

    /** Run f on the I/O thread and wait for its result. */
    template <class F> auto sync(F f) -> decltype(f())
    {
        if (!started || stopped)
            return f();
        std::packaged_task<decltype(f())()> task(std::move(f));
        auto fut = task.get_future();
        asio::post(ioc, [&task] { task(); });
        return fut.get();
    }

    // ---- registry.cpp: adverts, expiry, assets, groups ------------------
    /** Asset URLs whose hash the advert does not match. */
    std::vector<std::string> missing_assets(const msg::AgentAdvert &a);
    void on_advert(msg::AgentAdvert a);
    void expire_agent(const std::string &id);
    /** Re-read the group objects from the store. */
    void reload_groups();
    /** Match every agent to its first group; SetGroup on a change. */
    void recompute_groups();

    // ---- runs.cpp: test runs and their schedules -------------------------
    /** A run changed: wake the stream sessions waiting on it. */
    void notify(Run &run);
    void fail_part(Run &run, const std::string &agent,
                   const std::string &reason);
    /** Send a run's task; a failed send fails that agent's part. */
    void send_for_run(const std::shared_ptr<Run> &run, const std::string &agent,
                      msg::Task task);
    /** Time out the current phase after d. */
    void arm(const std::shared_ptr<Run> &run, milliseconds d);
    milliseconds d_of(const Run &r);
    void on_timeout(const std::shared_ptr<Run> &run, milliseconds waited);
    bool any_live(const Run &run, bool source) const;
    void fail_live_sources(Run &run, const std::string &why);
    void execute(const std::shared_ptr<Run> &run, bool sources);
    void start_sources(const std::shared_ptr<Run> &run);
    /** Move the run to its next phase once every live part is there. */
    void advance(const std::shared_ptr<Run> &run);
    /** Store the result, count it, export its series. */
    void finish(const std::shared_ptr<Run> &run);
    void on_response(msg::Response r);
    /**
     * Start a testrun: its uuid, or "notfound" / "invalidtopology" as ToDD
     * answers. overrides: sourceapp, sourceargs and sourcegroup (lower
     * case) replace the object's. origin: "api" or "schedule".
     */
    std::string start_run(const std::string &label,
                          std::map<std::string, std::string> overrides,
                          const char *origin);
    /** Match the timers to the testrun objects with an interval. */
    void reschedule();
    void tick_later(const std::string &label, steady::time_point when);
    /** A schedule's tick: start its run unless the last one still runs. */
    void tick(const std::string &label, steady::time_point due);

    // ---- rest.cpp: the REST API, metrics, health, the dashboard ----------
    http::Response rest(const http::Request &req);
    std::string list_agents(const std::string &prefix);
    std::string group_map_json();
    http::Response list_objects(const http::Request &req,
                                const std::string &target);
    http::Response create_object(const http::Request &req);
    http::Response delete_object(const http::Request &req);
    http::Response run_testrun(const http::Request &req);
    http::Response testdata(const http::Request &req, const std::string &id);
    http::Response run_status(const http::Request &req, const std::string &id);
    /** The /metrics text. */
    std::string scrape();
    /** /readyz: the transport's link and the store. */
    std::vector<service::Check> readiness();
    /** ?limit=N, bounded by dashboard_max_runs; def when absent or bad. */
    static size_t limit_param(const std::string &query, size_t def);
    std::string dashboard_runs_json(const std::string &query);
    /** The asset listener's handler. */
    http::Response serve_asset(const http::Request &req);

    // ---- stream.cpp: the status stream -----------------------------------
    /** The oldest run no stream client has taken yet (and take it). */
    std::shared_ptr<Run> claim_stream_run();
    class StreamSession;
    void accept_stream();

    // ---- server.cpp ------------------------------------------------------
    void start();
    void stop();
};

} // namespace todd::server
