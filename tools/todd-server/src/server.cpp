// SPDX-License-Identifier: Apache-2.0
// The server proper. All state lives on one I/O thread (Boost.Asio): comms
// handlers post their messages to it, REST and stream handlers run on it,
// and every wait is a timer or an event, never a polling loop. Sends go
// through one FIFO sender thread so a slow transport never blocks the API.
#include <todd/server/server.hpp>

#include "assets.hpp"
#include "dashboard.hpp"
#include "json.hpp"
#include "objects.hpp"
#include "server_metrics.hpp"
#include "store.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/log.hpp>
#include <todd/core/messages.hpp>
#include <todd/service/http.hpp>
#include <todd/service/metrics.hpp>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <sstream>

namespace todd::server {

namespace http = service::http;

namespace asio = boost::asio;
namespace rj = rapidjson;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
namespace bhttp = boost::beast::http;
using bhttp::status;

namespace {

constexpr const char *C = "server";

/** Sends tasks in order on its own thread. */
class Sender {
  public:
    using OnError = std::function<void(const std::string &)>;
    Sender(core::Comms &comms, ServerMetrics &metrics)
        : comms_(comms), metrics_(metrics)
    {
        thread_ = std::thread([this] { run(); });
    }
    ~Sender() { stop(); }
    void push(std::string queue, msg::Task task, OnError on_error = {})
    {
        {
            std::lock_guard lk(mu_);
            if (stop_)
                return;
            q_.push_back(
                {std::move(queue), std::move(task), std::move(on_error)});
        }
        cv_.notify_one();
    }
    void stop()
    {
        {
            std::lock_guard lk(mu_);
            stop_ = true;
            q_.clear();
        }
        cv_.notify_one();
        if (thread_.joinable())
            thread_.join();
    }

  private:
    struct Item {
        std::string queue;
        msg::Task task;
        OnError on_error;
    };
    void run()
    {
        for (;;) {
            Item it;
            {
                std::unique_lock lk(mu_);
                cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
                if (stop_)
                    return;
                it = std::move(q_.front());
                q_.pop_front();
            }
            const std::string_view type = msg::type_name(it.task);
            try {
                comms_.send_task(it.queue, it.task);
                metrics_.task_sent(type);
                if (log::enabled(log::Level::debug))
                    log::debug(C, "sent " +
                                      std::string(msg::type_name(it.task)) +
                                      " to " + it.queue);
            } catch (const std::exception &e) {
                std::string m = "sending " +
                                std::string(msg::type_name(it.task)) + " to " +
                                it.queue + " failed: " + e.what();
                log::error(C, m);
                metrics_.task_failed(type);
                if (it.on_error)
                    it.on_error(m);
            }
        }
    }
    core::Comms &comms_;
    ServerMetrics &metrics_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Item> q_;
    bool stop_ = false;
    std::thread thread_;
};

int64_t wall_ms()
{
    return std::chrono::duration_cast<milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/** "1.5" for 1500 ms, "30" for 30000 ms. */
std::string seconds_text(milliseconds d)
{
    std::string secs = std::to_string(d.count() / 1000.0);
    secs.erase(secs.find_last_not_of('0') + 1);
    if (secs.back() == '.')
        secs.pop_back();
    return secs;
}

int status_rank(const std::string &s)
{
    if (s == msg::status_ready)
        return 1;
    if (s == msg::status_testing)
        return 2;
    if (s == msg::status_finished)
        return 3;
    return 0; // init
}

std::string random_uuid()
{
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    static const char hex[] = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 4; ++i) {
        uint64_t v = rng();
        for (int j = 0; j < 16; ++j, v >>= 4)
            s += hex[v & 0xf];
    }
    return s;
}

std::string url_decode(std::string_view in)
{
    std::string out;
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] == '+') {
            out += ' ';
        } else if (in[i] == '%' && i + 2 < in.size() &&
                   std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
                   std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
            out += static_cast<char>(
                std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
            i += 2;
        } else {
            out += in[i];
        }
    }
    return out;
}

/** First value of a query parameter ("" when absent). */
std::string query_param(std::string_view query, std::string_view key)
{
    while (!query.empty()) {
        auto amp = query.find('&');
        auto part = query.substr(0, amp);
        auto eq = part.find('=');
        if (url_decode(part.substr(0, eq)) == key)
            return eq == std::string_view::npos
                       ? std::string()
                       : url_decode(part.substr(eq + 1));
        if (amp == std::string_view::npos)
            break;
        query.remove_prefix(amp + 1);
    }
    return {};
}

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

} // namespace

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

    // ---- assets and registry ------------------------------------------

    std::vector<std::string> missing_assets(const msg::AgentAdvert &a)
    {
        AssetMap m = assets->current();
        std::vector<std::string> urls;
        auto check = [&](const msg::Hashes &server, const msg::Hashes &agent,
                         const char *type) {
            for (const auto &[name, hash] : server) {
                auto it = agent.find(name);
                if (it == agent.end() || it->second != hash)
                    urls.push_back("http://" + url_host + ":" +
                                   std::to_string(asset_http->port()) + "/" +
                                   type + "/" + name);
            }
        };
        check(m.factcollectors, a.fact_collectors, "factcollectors");
        check(m.testlets, a.testlets, "testlets");
        return urls;
    }

    void on_advert(msg::AgentAdvert a)
    {
        if (a.uuid.empty() || a.uuid.find('/') != std::string::npos) {
            log::warn(C,
                      "advert with an invalid Uuid \"" + a.uuid + "\" ignored");
            metrics.advert("invalid");
            return;
        }
        auto urls = missing_assets(a);
        if (!urls.empty() &&
            steady::now() - last_rescan > std::chrono::seconds(1)) {
            // The map may be stale if inotify missed something.
            last_rescan = steady::now();
            assets->rescan();
            urls = missing_assets(a);
        }
        if (!urls.empty()) {
            metrics.advert("assets_missing");
            auto now = steady::now();
            auto it = downloads.find(a.uuid);
            if (it != downloads.end() &&
                now - it->second < cfg.download_retry) {
                log::debug(C, "agent " + a.uuid +
                                  " still lacks assets; download pending");
                return;
            }
            downloads[a.uuid] = now;
            log::info(C, "agent " + a.uuid + " lacks " +
                             std::to_string(urls.size()) +
                             " asset(s); sending DownloadAsset");
            sender->push(a.uuid, msg::DownloadAssetTask{urls});
            return;
        }
        downloads.erase(a.uuid);
        metrics.advert("accepted");
        std::vector<std::string> dropped;
        if (a.facts)
            dropped = drop_long_facts(*a.facts, max_fact_bytes);
        auto [it, inserted] = agents.try_emplace(a.uuid);
        Agent &ag = it->second;
        bool facts_changed = inserted || ag.advert.facts != a.facts;
        if (facts_changed) // once, not on every advert
            for (const auto &d : dropped)
                log::warn(C, "agent " + a.uuid + ": " + d);
        ag.advert = std::move(a);
        ag.advert.expires_ns = 0;
        ag.deadline = steady::now() + cfg.agent_expiry;
        if (!ag.timer)
            ag.timer = std::make_unique<asio::steady_timer>(ioc);
        ag.timer->expires_at(ag.deadline);
        std::string id = it->first;
        ag.timer->async_wait([this, id](boost::system::error_code ec) {
            if (!ec)
                expire_agent(id);
        });
        if (inserted) {
            metrics.agent_registered();
            log::info(C, "agent " + id + " registered (" +
                             ag.advert.default_addr + ")");
            if (obs.on_agent)
                obs.on_agent(id, true);
        }
        if (facts_changed)
            recompute_groups();
    }

    void expire_agent(const std::string &id)
    {
        auto it = agents.find(id);
        if (it == agents.end() || steady::now() < it->second.deadline)
            return;
        agents.erase(it);
        metrics.agent_expired();
        log::warn(C, "agent " + id + " expired: no advert for " +
                         std::to_string(cfg.agent_expiry.count()) + " ms");
        if (obs.on_agent)
            obs.on_agent(id, false);
        for (auto &[uuid, run] : runs) {
            if (run->phase == Run::Phase::done)
                continue;
            auto p = run->parts.find(id);
            if (p != run->parts.end() && !p->second.failed &&
                p->second.status != msg::status_finished) {
                fail_part(*run, id,
                          "agent vanished (no advert for " +
                              std::to_string(cfg.agent_expiry.count()) +
                              " ms)");
                advance(run);
            }
        }
        recompute_groups();
    }

    // ---- groups --------------------------------------------------------

    void reload_groups()
    {
        groups.clear();
        for (const auto &o : store->list_objects("group")) {
            try {
                groups.push_back(parse_group(o.json));
            } catch (const std::exception &e) {
                log::error(C, "group " + o.label + " skipped: " + e.what());
            }
        }
    }

    void recompute_groups()
    {
        static const msg::Facts no_facts;
        for (auto &[id, ag] : agents) {
            const msg::Facts &facts =
                ag.advert.facts ? *ag.advert.facts : no_facts;
            std::string g;
            for (const auto &grp : groups)
                if (grp.matches_agent(facts)) {
                    g = grp.label;
                    break;
                }
            ag.group = g;
            if (g != ag.sent_group) {
                ag.sent_group = g;
                log::info(C, "agent " + id + " -> group \"" + g + "\"");
                sender->push(id, msg::SetGroupTask{g, false});
                if (obs.on_group)
                    obs.on_group(id, g);
            }
        }
    }

    // ---- test runs -----------------------------------------------------

    void notify(Run &run)
    {
        ++run.version;
        auto w = std::move(run.waiters);
        run.waiters.clear();
        for (auto &f : w)
            asio::post(ioc, std::move(f));
    }

    void fail_part(Run &run, const std::string &agent,
                   const std::string &reason)
    {
        Part &p = run.parts[agent];
        if (p.failed)
            return;
        p.failed = true;
        p.reason = reason;
        log::warn(C, "testrun " + run.uuid + ": agent " + agent +
                         " failed: " + reason);
        notify(run);
    }

    void send_for_run(const std::shared_ptr<Run> &run, const std::string &agent,
                      msg::Task task)
    {
        std::weak_ptr<Run> w = run;
        sender->push(
            agent, std::move(task), [this, w, agent](const std::string &err) {
                asio::post(ioc, [this, w, agent, err] {
                    if (auto r = w.lock(); r && r->phase != Run::Phase::done) {
                        fail_part(*r, agent, err);
                        advance(r);
                    }
                });
            });
    }

    void arm(const std::shared_ptr<Run> &run, milliseconds d)
    {
        std::weak_ptr<Run> w = run;
        auto phase = run->phase;
        run->timer.expires_after(d);
        run->timer.async_wait([this, w, phase](boost::system::error_code ec) {
            auto r = w.lock();
            if (ec || !r || r->phase != phase)
                return;
            on_timeout(r, d_of(*r));
        });
    }
    milliseconds d_of(const Run &r)
    {
        return r.phase == Run::Phase::executing ? r.exec_wait
                                                : cfg.install_timeout;
    }

    void on_timeout(const std::shared_ptr<Run> &run, milliseconds waited)
    {
        const std::string secs = seconds_text(waited);
        for (auto &[id, p] : run->parts) {
            if (p.failed)
                continue;
            int r = status_rank(p.status);
            switch (run->phase) {
            case Run::Phase::installing:
                if (r < 1)
                    fail_part(*run, id, "not ready within " + secs + " s");
                break;
            case Run::Phase::starting_targets:
                if (!p.source && r < 2)
                    fail_part(*run, id,
                              "did not start testing within " + secs + " s");
                break;
            case Run::Phase::executing:
                if (r < 3)
                    fail_part(*run, id, "no test data within " + secs + " s");
                break;
            case Run::Phase::done: break;
            }
        }
        advance(run);
    }

    bool any_live(const Run &run, bool source) const
    {
        for (const auto &[id, p] : run.parts)
            if (p.source == source && !p.failed)
                return true;
        return false;
    }

    void fail_live_sources(Run &run, const std::string &why)
    {
        for (auto &[id, p] : run.parts)
            if (p.source && !p.failed)
                fail_part(run, id, why);
    }

    void execute(const std::shared_ptr<Run> &run, bool sources)
    {
        int64_t limit = sources ? cfg.source_time_limit : cfg.target_time_limit;
        for (auto &[id, p] : run->parts)
            if (p.source == sources && !p.failed)
                send_for_run(run, id,
                             msg::ExecuteTestRunTask{run->uuid, limit});
    }

    void start_sources(const std::shared_ptr<Run> &run)
    {
        run->phase = Run::Phase::executing;
        execute(run, true);
        run->exec_wait =
            std::chrono::seconds(std::max(
                cfg.source_time_limit,
                run->spec.group_target ? cfg.target_time_limit : int64_t{0})) +
            cfg.result_grace;
        arm(run, run->exec_wait);
        notify(*run);
    }

    void advance(const std::shared_ptr<Run> &run)
    {
        switch (run->phase) {
        case Run::Phase::installing:
            for (const auto &[id, p] : run->parts)
                if (!p.failed && status_rank(p.status) < 1)
                    return;
            if (!any_live(*run, true))
                return finish(run);
            if (run->spec.group_target) {
                if (!any_live(*run, false)) {
                    fail_live_sources(*run, "no target agent is ready");
                    return finish(run);
                }
                run->phase = Run::Phase::starting_targets;
                execute(run, false);
                arm(run, cfg.install_timeout);
                notify(*run);
                return;
            }
            return start_sources(run);
        case Run::Phase::starting_targets:
            for (const auto &[id, p] : run->parts)
                if (!p.source && !p.failed && status_rank(p.status) < 2)
                    return;
            if (!any_live(*run, false)) {
                fail_live_sources(*run, "no target agent started testing");
                return finish(run);
            }
            return start_sources(run);
        case Run::Phase::executing:
            for (const auto &[id, p] : run->parts)
                if (!p.failed && status_rank(p.status) < 3)
                    return;
            return finish(run);
        case Run::Phase::done: return;
        }
    }

    void finish(const std::shared_ptr<Run> &run)
    {
        // Whoever was never executed (e.g. targets once every source failed)
        // did not succeed either.
        for (auto &[id, p] : run->parts)
            if (!p.failed && p.status != msg::status_finished)
                fail_part(*run, id, "not run: no source agent was left");
        run->phase = Run::Phase::done;
        run->timer.cancel();
        run->ended = steady::now();
        run->ended_ms = wall_ms();
        std::string clean = "{", st = "{";
        bool first_c = true, first_s = true;
        int failed = 0;
        for (const auto &[id, p] : run->parts) {
            if (p.source && !p.failed && p.has_data) {
                if (!first_c)
                    clean += ',';
                first_c = false;
                json::quote(clean, id);
                clean += ':' + p.data;
            }
            if (!first_s)
                st += ',';
            first_s = false;
            json::quote(st, id);
            st += ":{\"role\":";
            st += p.source ? "\"source\"" : "\"target\"";
            st += ",\"status\":";
            json::quote(st,
                        p.failed ? std::string(msg::status_fail) : p.status);
            st += ",\"reason\":";
            json::quote(st, p.reason);
            st += '}';
            failed += p.failed;
        }
        run->cleandata = clean + "}";
        run->statuses = st + "}";
        const size_t n = run->parts.size();
        metrics.run_finished(
            failed == 0                       ? "ok"
            : static_cast<size_t>(failed) < n ? "partial"
                                              : "failed",
            std::chrono::duration<double>(run->ended - run->started).count());
        // A testrun deleted while this run went on has had its series
        // removed: they must not come back.
        bool exists = true;
        try {
            exists = store->get_object("testrun", run->label).has_value();
        } catch (const std::exception &) {
            // The store's failure is logged with put_result's below.
        }
        if (exists)
            metrics.record_results(run->label, run->cleandata, run->ended_ms);
        try {
            store->put_result({run->uuid, run->label, run->statuses,
                               run->cleandata, run->started_ms, run->ended_ms});
        } catch (const std::exception &e) {
            log::error(C, "testrun " + run->uuid +
                              ": result kept in memory only: " + e.what());
        }
        log::info(
            C, "testrun " + run->uuid + " (" + run->label + ") finished: " +
                   std::to_string(run->parts.size() - failed) + " of " +
                   std::to_string(run->parts.size()) + " agent(s) succeeded");
        notify(*run);
        if (obs.on_run_finished)
            obs.on_run_finished(run->uuid);
        // Forget it once a late stream client can no longer want it.
        auto t = std::make_shared<asio::steady_timer>(ioc);
        t->expires_after(cfg.stream_linger + std::chrono::seconds(1));
        t->async_wait([this, t, id = run->uuid](boost::system::error_code ec) {
            if (!ec)
                runs.erase(id);
        });
    }

    void on_response(msg::Response r)
    {
        if (auto *s = std::get_if<msg::AgentStatusResponse>(&r)) {
            auto it = runs.find(s->test_uuid);
            if (it == runs.end()) {
                log::debug(C, "status for unknown testrun " + s->test_uuid);
                metrics.response("AgentStatus", "ignored");
                return;
            }
            auto run = it->second;
            auto p = run->parts.find(s->agent_uuid);
            if (run->phase == Run::Phase::done || p == run->parts.end() ||
                p->second.failed) {
                metrics.response("AgentStatus", "ignored");
                return;
            }
            metrics.response("AgentStatus", "accepted");
            if (s->status == msg::status_fail) {
                fail_part(*run, s->agent_uuid, "agent reported fail");
            } else if (status_rank(s->status) > status_rank(p->second.status) &&
                       s->status != msg::status_finished) {
                p->second.status = s->status;
                notify(*run);
            }
            advance(run);
            return;
        }
        auto &d = std::get<msg::TestDataResponse>(r);
        // Always acknowledge, so the agent stops resending it.
        sender->push(d.agent_uuid, msg::DeleteTestDataTask{d.test_uuid});
        auto it = runs.find(d.test_uuid);
        if (it == runs.end()) {
            metrics.response("TestData", "ignored");
            return;
        }
        auto run = it->second;
        auto p = run->parts.find(d.agent_uuid);
        if (run->phase == Run::Phase::done || p == run->parts.end() ||
            p->second.failed || p->second.has_data) {
            metrics.response("TestData", "ignored");
            return;
        }
        rj::Document doc;
        std::string err;
        bool ok =
            json::parse(doc, d.test_data, err, todd::json::test_data_max_depth);
        if (ok && !doc.IsObject()) {
            ok = false;
            err = "not a JSON object";
        }
        if (ok)
            for (const auto &m : doc.GetObject())
                if (!m.value.IsObject()) {
                    ok = false;
                    err = "value for target \"" +
                          std::string(m.name.GetString()) +
                          "\" is not an object";
                    break;
                }
        metrics.response("TestData", ok ? "accepted" : "invalid");
        if (!ok) {
            fail_part(*run, d.agent_uuid, "invalid test data: " + err);
        } else {
            p->second.has_data = true;
            p->second.data = json::encode(doc, 0, true);
            p->second.status = msg::status_finished;
            notify(*run);
        }
        advance(run);
    }

    // ---- REST ----------------------------------------------------------

    http::Response rest(const http::Request &req)
    {
        std::string target(req.target());
        auto q = target.find('?');
        std::string path = target.substr(0, q);
        std::string query = q == std::string::npos ? "" : target.substr(q + 1);
        if (path == "/v1/agent")
            return http::ok(req, list_agents(query_param(query, "uuid")));
        if (path == "/v1/groups")
            return http::ok(req, group_map_json());
        if (path == "/v1/object/group" || path == "/v1/object/testrun" ||
            path == "/v1/object/list")
            return list_objects(req, target);
        if (path == "/v1/object/create")
            return create_object(req);
        if (path == "/v1/object/delete")
            return delete_object(req);
        if (path == "/v1/testrun/run")
            return run_testrun(req);
        if (path == "/v1/testdata")
            return testdata(req, query_param(query, "testUuid"));
        if (path == "/v1/testrun/status")
            return run_status(req, query_param(query, "testUuid"));
        if (path == "/metrics")
            return service::metrics_reply(req, scrape());
        if (path == "/healthz")
            return service::health_reply(req, {});
        if (path == "/readyz")
            return service::health_reply(req, readiness());
        if (path == "/dashboard" || path == "/dashboard/") {
            auto res = http::ok(
                req, std::string(reinterpret_cast<const char *>(dashboard_html),
                                 dashboard_html_size));
            res.set(bhttp::field::content_type, "text/html; charset=utf-8");
            // The page talks only to this server and runs only its own
            // script.
            res.set("Content-Security-Policy", dashboard_csp);
            res.set(bhttp::field::cache_control, "no-cache");
            return res;
        }
        if (path == "/v1/dashboard/runs")
            return http::ok(req, dashboard_runs_json(query));
        if (path == "/v1/dashboard/series") {
            std::string label = query_param(query, "label");
            if (label.empty())
                return http::error(req, status::bad_request,
                                   "label is required");
            return http::ok(
                req,
                dashboard_series(label, store->recent_results(
                                            label, limit_param(query, 100))));
        }
        return http::not_found(req);
    }

    // ---- metrics, health and the dashboard ------------------------------

    std::string scrape()
    {
        ServerMetrics::Snapshot snap;
        snap.agents = agents.size();
        for (const auto &[id, a] : agents)
            ++snap.group_agents[a.group];
        for (const auto &[id, r] : runs)
            snap.active_runs += r->phase != Run::Phase::done;
        snap.scheduled_testruns = schedules.size();
        return metrics.scrape(snap, *comms);
    }

    std::vector<service::Check> readiness()
    {
        std::vector<service::Check> checks;
        auto state = comms->transport().state();
        checks.push_back({"transport", state == core::LinkState::connected,
                          comms->transport().plugin().name + " " +
                              std::string(core::to_string(state))});
        try {
            store->ping();
            checks.push_back({"store", true, store->path()});
        } catch (const std::exception &e) {
            checks.push_back({"store", false, e.what()});
        }
        return checks;
    }

    /** ?limit=N, bounded by dashboard_max_runs; def when absent or bad. */
    static size_t limit_param(const std::string &query, size_t def)
    {
        std::string v = query_param(query, "limit");
        if (v.empty() || v.size() > 6 ||
            v.find_first_not_of("0123456789") != std::string::npos)
            return def;
        return std::clamp<size_t>(std::stoul(v), 1, dashboard_max_runs);
    }

    std::string dashboard_runs_json(const std::string &query)
    {
        const size_t limit = limit_param(query, 20);
        std::vector<RunSummary> live;
        for (const auto &[id, r] : runs) {
            RunSummary s{r->uuid, r->label, r->started_ms, r->ended_ms, {}};
            for (const auto &[aid, p] : r->parts)
                s.statuses[aid] =
                    p.failed ? std::string(msg::status_fail) : p.status;
            live.push_back(std::move(s));
        }
        return dashboard_runs(live, store->recent_results("", limit), limit);
    }

    std::string list_agents(const std::string &prefix)
    {
        std::vector<const std::pair<const std::string, Agent> *> sel;
        for (const auto &e : agents)
            if (!prefix.empty() && e.first.rfind(prefix, 0) == 0) {
                sel.push_back(&e);
                break;
            }
        if (sel.empty()) // as ToDD: no match shows every agent
            for (const auto &e : agents)
                sel.push_back(&e);
        rj::Document doc(rj::kArrayType);
        auto &al = doc.GetAllocator();
        auto s = [&](const std::string &v) {
            return rj::Value(v.data(), static_cast<rj::SizeType>(v.size()), al);
        };
        auto now = steady::now();
        for (const auto *e : sel) {
            const msg::AgentAdvert &a = e->second.advert;
            rj::Value o(rj::kObjectType);
            o.AddMember("Uuid", s(a.uuid), al);
            o.AddMember("DefaultAddr", s(a.default_addr), al);
            auto left = std::chrono::duration_cast<milliseconds>(
                            e->second.deadline - now)
                            .count();
            int64_t secs = left <= 0 ? 0 : (left + 999) / 1000;
            o.AddMember("Expires",
                        rj::Value(static_cast<int64_t>(secs * 1000000000LL)),
                        al);
            o.AddMember("LocalTime", s(msg::format_rfc3339(a.local_time)), al);
            if (a.facts) {
                rj::Value f(rj::kObjectType);
                for (const auto &[k, vs] : *a.facts) {
                    rj::Value arr(rj::kArrayType);
                    for (const auto &v : vs)
                        arr.PushBack(s(v), al);
                    f.AddMember(s(k), arr, al);
                }
                o.AddMember("Facts", f, al);
            } else {
                o.AddMember("Facts", rj::Value(), al);
            }
            for (auto [key, h] :
                 {std::pair{"FactCollectors", &a.fact_collectors},
                  std::pair{"Testlets", &a.testlets}}) {
                rj::Value m(rj::kObjectType);
                for (const auto &[k, v] : *h)
                    m.AddMember(s(k), s(v), al);
                o.AddMember(rj::StringRef(key), m, al);
            }
            doc.PushBack(o, al);
        }
        return json::encode(doc, 2);
    }

    std::string group_map_json()
    {
        rj::Document doc(rj::kObjectType);
        auto &al = doc.GetAllocator();
        for (const auto &[id, a] : agents)
            if (!a.group.empty())
                doc.AddMember(rj::Value(id.c_str(), al),
                              rj::Value(a.group.c_str(), al), al);
        return json::encode(doc, 2);
    }

    http::Response list_objects(const http::Request &req,
                                const std::string &target)
    {
        // ToDD takes the type from the raw URI, query included.
        std::vector<std::string> pieces;
        std::stringstream ss(target);
        for (std::string p; std::getline(ss, p, '/');)
            pieces.push_back(p);
        std::string type = pieces.size() > 3 ? pieces[3] : "";
        rj::Document doc(rj::kArrayType);
        auto &al = doc.GetAllocator();
        for (const auto &o : store->list_objects(type)) {
            rj::Document od;
            std::string err;
            if (!json::parse(od, o.json, err))
                return http::error(req, status::internal_server_error,
                                   "Internal Error");
            rj::Value v(od, al);
            doc.PushBack(v, al);
        }
        return http::ok(req, json::encode(doc, 2));
    }

    http::Response create_object(const http::Request &req)
    {
        NormalisedObject n;
        try {
            n = normalise_object(req.body());
        } catch (const ObjectError &e) {
            log::info(C, std::string("create refused: ") + e.what());
            return http::error(req, status::bad_request, e.what());
        }
        store->put_object({n.type, n.label, n.json});
        log::info(C, "object " + n.type + "/" + n.label + " stored");
        if (n.type == "group") {
            reload_groups();
            recompute_groups();
        } else {
            reschedule();
        }
        return http::ok(req, "");
    }

    http::Response delete_object(const http::Request &req)
    {
        rj::Document doc;
        std::string err;
        if (req.body().find_first_not_of(" \t\r\n") == std::string::npos)
            return http::error(req, status::bad_request,
                               "empty request body, expected "
                               "{\"label\":...,\"type\":...}");
        if (!json::parse(doc, req.body(), err))
            return http::error(req, status::bad_request, err);
        if (!doc.IsObject())
            return http::error(req, status::bad_request,
                               "expected a JSON object");
        std::string label, type;
        for (const auto &m : doc.GetObject()) {
            std::string k = m.name.GetString();
            for (auto &c : k)
                c = static_cast<char>(std::tolower(c));
            if ((k == "label" || k == "type") && !m.value.IsString())
                return http::error(req, status::bad_request,
                                   k + " must be a string");
            if (k == "label")
                label = m.value.GetString();
            else if (k == "type")
                type = m.value.GetString();
        }
        if (label.empty() || type.empty())
            return http::error(req, status::bad_request,
                               "both label and type are required");
        if (!store->delete_object(type, label))
            return http::error(req, status::not_found,
                               "object " + type + "/" + label + " not found");
        log::info(C, "object " + type + "/" + label + " deleted");
        if (type == "group") {
            reload_groups();
            recompute_groups();
        } else if (type == "testrun") {
            reschedule();
            metrics.forget_testrun(label);
        }
        return http::ok(req, "");
    }

    http::Response run_testrun(const http::Request &req)
    {
        rj::Document doc;
        std::string err;
        if (req.body().find_first_not_of(" \t\r\n") == std::string::npos)
            return http::error(req, status::bad_request,
                               "empty request body, expected "
                               "{\"testRunName\":...}");
        if (!json::parse(doc, req.body(), err))
            return http::error(req, status::bad_request, err);
        if (!doc.IsObject())
            return http::error(req, status::bad_request,
                               "expected a JSON object");
        std::map<std::string, std::string> f;
        for (const auto &m : doc.GetObject()) {
            std::string k = m.name.GetString();
            for (auto &c : k)
                c = static_cast<char>(std::tolower(c));
            if (m.value.IsNull())
                continue;
            if (!m.value.IsString())
                return http::error(req, status::bad_request,
                                   std::string(m.name.GetString()) +
                                       " must be a string");
            f[k] = m.value.GetString();
        }
        return http::ok(req, start_run(f["testrunname"], f, "api"));
    }

    /**
     * Start a testrun: its uuid, or "notfound" / "invalidtopology" as ToDD
     * answers. overrides: sourceapp, sourceargs and sourcegroup (lower
     * case) replace the object's.
     */
    std::string start_run(const std::string &label,
                          std::map<std::string, std::string> f,
                          const char *origin)
    {
        auto obj = store->get_object("testrun", label);
        if (!obj) {
            metrics.run_refused("notfound");
            return "notfound";
        }
        auto run = std::make_shared<Run>(ioc);
        run->origin = origin;
        run->started_ms = wall_ms();
        run->spec = parse_testrun(obj->json);
        run->label = obj->label;
        if (!f["sourceapp"].empty())
            run->spec.source["app"] = f["sourceapp"];
        if (!f["sourceargs"].empty())
            run->spec.source["args"] = f["sourceargs"];
        if (!f["sourcegroup"].empty())
            run->spec.source["name"] = f["sourcegroup"];
        const std::string src_group = run->spec.source["name"];
        const std::string tgt_group =
            run->spec.group_target ? run->spec.target["name"] : "";
        std::vector<std::string> target_addrs;
        for (const auto &[id, a] : agents) {
            if (a.group.empty())
                continue;
            if (run->spec.group_target && a.group == tgt_group) {
                run->parts[id].source = false;
                target_addrs.push_back(a.advert.default_addr);
            } else if (a.group == src_group) {
                run->parts[id].source = true;
            }
        }
        if (!any_live(*run, true) ||
            (run->spec.group_target && !any_live(*run, false))) {
            metrics.run_refused("invalidtopology");
            return "invalidtopology";
        }
        run->uuid = random_uuid();
        run->seq = ++run_seq;
        runs[run->uuid] = run;
        msg::TestRun src{run->uuid,
                         run->spec.group_target ? target_addrs
                                                : run->spec.targets,
                         run->spec.source["app"], run->spec.source["args"]};
        msg::TestRun tgt{run->uuid,
                         {"0.0.0.0"},
                         run->spec.target["app"],
                         run->spec.target["args"]};
        for (const auto &[id, p] : run->parts)
            send_for_run(run, id,
                         msg::InstallTestRunTask{p.source ? src : tgt});
        arm(run, cfg.install_timeout);
        metrics.run_started(origin);
        log::info(
            C, "testrun " + run->uuid + " (" + run->label + ") started with " +
                   std::to_string(run->parts.size()) + " agent(s)" +
                   (run->origin == std::string("schedule") ? " on its schedule"
                                                           : ""));
        return run->uuid;
    }

    // ---- scheduled test runs --------------------------------------------

    /** Match the timers to the testrun objects with an interval. */
    void reschedule()
    {
        std::map<std::string, milliseconds> want;
        for (const auto &o : store->list_objects("testrun")) {
            try {
                auto t = parse_testrun(o.json);
                if (t.interval.count() > 0)
                    want[o.label] = t.interval;
            } catch (const std::exception &e) {
                log::error(C, "testrun " + o.label +
                                  " not scheduled: " + e.what());
            }
        }
        for (auto it = schedules.begin(); it != schedules.end();) {
            auto w = want.find(it->first);
            if (w == want.end() || w->second != it->second.interval) {
                it->second.timer->cancel();
                log::info(C, "testrun " + it->first + " unscheduled");
                it = schedules.erase(it);
            } else {
                ++it;
            }
        }
        for (const auto &[label, interval] : want) {
            if (schedules.count(label))
                continue;
            Schedule &sc = schedules[label];
            sc.interval = interval;
            sc.timer = std::make_unique<asio::steady_timer>(ioc);
            log::info(C, "testrun " + label + " runs every " +
                             seconds_text(interval) + " s");
            tick_later(label, steady::now() + interval);
        }
    }

    void tick_later(const std::string &label, steady::time_point when)
    {
        auto &sc = schedules.at(label);
        sc.timer->expires_at(when);
        sc.timer->async_wait([this, label, when](boost::system::error_code ec) {
            if (!ec)
                tick(label, when);
        });
    }

    void tick(const std::string &label, steady::time_point due)
    {
        auto it = schedules.find(label);
        if (it == schedules.end())
            return;
        Schedule &sc = it->second;
        // Keep the cadence, but never fire twice to catch up.
        auto next = due + sc.interval;
        if (next <= steady::now())
            next = steady::now() + sc.interval;
        tick_later(label, next);
        if (auto r = runs.find(sc.last_uuid);
            r != runs.end() && r->second->phase != Run::Phase::done) {
            metrics.run_refused("still_running");
            log::warn(C, "testrun " + label +
                             ": its previous run is still going; this "
                             "interval's run is skipped");
            return;
        }
        std::string got = start_run(label, {}, "schedule");
        if (got == "notfound" || got == "invalidtopology") {
            if (got != sc.last_refusal)
                log::info(C, "testrun " + label + " not run on its schedule: " +
                                 (got == "notfound"
                                      ? "the object is gone"
                                      : "no agent is in its groups (again "
                                        "every interval until one is)"));
            sc.last_refusal = got;
            return;
        }
        sc.last_refusal.clear();
        sc.last_uuid = got;
    }

    http::Response testdata(const http::Request &req, const std::string &id)
    {
        if (id.empty())
            return http::error(req, status::bad_request,
                               "Error, test UUID not provided.");
        if (auto it = runs.find(id);
            it != runs.end() && it->second->phase == Run::Phase::done)
            return http::ok(req, it->second->cleandata);
        if (runs.count(id))
            return http::error(req, status::not_found,
                               "Error, test UUID not found.");
        auto r = store->get_result(id);
        if (!r)
            return http::error(req, status::not_found,
                               "Error, test UUID not found.");
        return http::ok(req, r->cleandata);
    }

    http::Response run_status(const http::Request &req, const std::string &id)
    {
        if (id.empty())
            return http::error(req, status::bad_request,
                               "Error, test UUID not provided.");
        std::string label, statuses;
        bool done = true;
        if (auto it = runs.find(id); it != runs.end()) {
            const Run &run = *it->second;
            label = run.label;
            done = run.phase == Run::Phase::done;
            if (done) {
                statuses = run.statuses;
            } else {
                statuses = "{";
                for (const auto &[aid, p] : run.parts) {
                    if (statuses.size() > 1)
                        statuses += ',';
                    json::quote(statuses, aid);
                    statuses += std::string(":{\"role\":") +
                                (p.source ? "\"source\"" : "\"target\"") +
                                ",\"status\":";
                    json::quote(statuses, p.failed
                                              ? std::string(msg::status_fail)
                                              : p.status);
                    statuses += ",\"reason\":";
                    json::quote(statuses, p.reason);
                    statuses += '}';
                }
                statuses += '}';
            }
        } else if (auto r = store->get_result(id)) {
            label = r->label;
            statuses = r->statuses;
        } else {
            return http::error(req, status::not_found,
                               "Error, test UUID not found.");
        }
        std::string body = "{\"uuid\":" + json::quote(id) +
                           ",\"label\":" + json::quote(label) +
                           ",\"done\":" + (done ? "true" : "false") +
                           ",\"agents\":" + statuses + "}";
        rj::Document doc;
        std::string err;
        json::parse(doc, body, err);
        return http::ok(req, json::encode(doc, 2));
    }

    // ---- assets over HTTP ----------------------------------------------

    http::Response serve_asset(const http::Request &req)
    {
        AssetReply r = read_asset(assets->root(), std::string(req.target()));
        if (r.status != 200) {
            log::debug(C, "asset " + std::string(req.target()) +
                              " refused: " + r.body);
            if (r.status == 404)
                return http::not_found(req);
            return http::error(req, static_cast<status>(r.status),
                               r.status == 400 ? "Bad Request"
                                               : "Internal Error");
        }
        auto res = http::ok(req, std::move(r.body));
        res.set(bhttp::field::content_type, "application/octet-stream");
        log::debug(C, "served asset " + std::string(req.target()));
        return res;
    }

    // ---- status stream -------------------------------------------------

    std::shared_ptr<Run> claim_stream_run()
    {
        std::shared_ptr<Run> best;
        auto now = steady::now();
        for (auto &[id, r] : runs) {
            if (r->streamed)
                continue;
            if (r->phase == Run::Phase::done &&
                now - r->ended > cfg.stream_linger)
                continue;
            if (!best || r->seq < best->seq)
                best = r;
        }
        if (best)
            best->streamed = true;
        return best;
    }

    class StreamSession : public std::enable_shared_from_this<StreamSession>,
                          public http::Conn {
      public:
        StreamSession(Impl &impl, tcp::socket s)
            : impl_(impl), sock_(std::move(s)), timer_(impl.ioc),
              conns_(impl.conns)
        {
            conns_->add(this); // counted, never idle: not shed
        }
        ~StreamSession() override { conns_->remove(this); }
        void shed() override { close(); }
        void start()
        {
            run_ = impl_.claim_stream_run();
            if (run_)
                log::info(C, "status stream attached to testrun " + run_->uuid);
            else
                log::info(C, "status stream client but no testrun to show");
            send();
        }

      private:
        void send()
        {
            final_ = !run_ || run_->phase == Run::Phase::done;
            line_ = (run_ ? run_->status_line() : "{}") + "\n";
            sent_version_ = run_ ? run_->version : 0;
            asio::async_write(sock_, asio::buffer(line_),
                              [self = shared_from_this()](
                                  boost::system::error_code ec, size_t) {
                                  if (ec)
                                      return self->close();
                                  self->wait_ack();
                              });
        }
        void wait_ack()
        {
            timer_.expires_after(impl_.cfg.stream_ack_timeout);
            timer_.async_wait(
                [self = shared_from_this()](boost::system::error_code ec) {
                    if (ec)
                        return;
                    log::warn(
                        C, "status stream client sent no ack within " +
                               std::to_string(
                                   self->impl_.cfg.stream_ack_timeout.count()) +
                               " ms; dropped");
                    self->close();
                });
            asio::async_read_until(sock_, in_, '\n',
                                   [self = shared_from_this()](
                                       boost::system::error_code ec, size_t n) {
                                       self->timer_.cancel();
                                       if (ec)
                                           return self->close();
                                       self->in_.consume(n);
                                       if (self->final_)
                                           return self->close();
                                       self->next();
                                   });
        }
        void next()
        {
            if (!sock_.is_open())
                return;
            if (run_->version != sent_version_ ||
                run_->phase == Run::Phase::done)
                return send();
            run_->waiters.push_back(
                [self = shared_from_this()] { self->next(); });
        }
        void close()
        {
            boost::system::error_code ec;
            timer_.cancel();
            sock_.shutdown(tcp::socket::shutdown_both, ec);
            sock_.close(ec);
            conns_->remove(this);
        }
        Impl &impl_;
        tcp::socket sock_;
        asio::steady_timer timer_;
        asio::streambuf in_{4096};
        std::shared_ptr<Run> run_;
        std::string line_;
        uint64_t sent_version_ = 0;
        bool final_ = false;
        std::shared_ptr<http::Connections> conns_;
    };

    void accept_stream()
    {
        stream_loop = std::make_shared<http::AcceptLoop>(
            *stream_acceptor, conns, "stream", "", [this](tcp::socket s) {
                boost::system::error_code ec;
                s.set_option(tcp::no_delay(true), ec);
                std::make_shared<StreamSession>(*this, std::move(s))->start();
            });
        stream_loop->start();
    }

    // ---- lifecycle -----------------------------------------------------

    void start()
    {
        if (started)
            throw std::logic_error("server already started");
        if (cfg.db_path.empty())
            cfg.db_path = cfg.opt_dir + "/todd-server.db";
        store = std::make_unique<Store>(cfg.db_path);
        reload_groups();
        reschedule();
        std::string root = cfg.opt_dir + "/assets";
        std::error_code ec;
        if (!std::filesystem::is_directory(root, ec))
            log::warn(C, "asset directory " + root +
                             " does not exist; no assets are served");
        assets = std::make_unique<AssetWatcher>(
            root, [this] { asio::post(ioc, [this] { downloads.clear(); }); });
        assets->start();
        http::Limits limits{cfg.max_body_bytes, cfg.max_header_bytes,
                            cfg.max_connections, cfg.idle_timeout};
        conns = std::make_shared<http::Connections>(cfg.max_connections);
        api = std::make_shared<http::Listener>(
            ioc, cfg.api_host, cfg.api_port,
            [this](const http::Request &r) { return rest(r); }, "api", limits,
            conns);
        stream_acceptor = std::make_unique<tcp::acceptor>(ioc);
        http::listen_on(ioc, *stream_acceptor, cfg.api_host, cfg.stream_port,
                        "stream");
        stream_port = stream_acceptor->local_endpoint().port();
        asset_http = std::make_shared<http::Listener>(
            ioc, cfg.assets_host, cfg.assets_port,
            [this](const http::Request &r) { return serve_asset(r); }, "assets",
            limits, conns);
        url_host = cfg.advertised_addr;
        if (url_host.empty()) {
            if (cfg.assets_host != "0.0.0.0" && cfg.assets_host != "::" &&
                !cfg.assets_host.empty()) {
                url_host = cfg.assets_host;
            } else {
                url_host = "127.0.0.1";
                log::warn(C, "no [LocalResources] DefaultInterface or "
                             "IPAddrOverride: asset URLs use 127.0.0.1, "
                             "reachable by local agents only");
            }
        }
        if (url_host.find(':') != std::string::npos && url_host[0] != '[')
            url_host = "[" + url_host + "]";
        api->start();
        asset_http->start();
        accept_stream();
        sender = std::make_unique<Sender>(*comms, metrics);
        work.emplace(ioc.get_executor());
        io_thread = std::thread([this] {
            // A handler that throws must cost its request, not the server:
            // log it and go on running the others.
            for (;;) {
                try {
                    ioc.run();
                    return;
                } catch (const std::exception &e) {
                    log::error(C,
                               std::string("I/O handler failed: ") + e.what());
                } catch (...) {
                    log::error(C, "I/O handler failed");
                }
            }
        });
        started = true;
        comms->start();
        advert_sub = comms->listen_for_agent([this](const msg::AgentAdvert &a) {
            asio::post(ioc, [this, a] { on_advert(a); });
            return core::Verdict::ack;
        });
        response_sub =
            comms->listen_for_responses([this](const msg::Response &r) {
                asio::post(ioc, [this, r] { on_response(r); });
                return core::Verdict::ack;
            });
        log::info(C, "Serving ToDD Server API at: " + cfg.api_host + ":" +
                         std::to_string(api->port()) + " (status stream " +
                         std::to_string(stream_port) + ", assets " +
                         cfg.assets_host + ":" +
                         std::to_string(asset_http->port()) + ", store " +
                         cfg.db_path + ")");
    }

    void stop()
    {
        if (!started || stopped)
            return;
        advert_sub.reset();
        response_sub.reset();
        // A send retrying against a dead broker would hold up the join.
        comms->cancel_sends();
        if (sender)
            sender->stop();
        comms->stop();
        std::promise<void> closed;
        asio::post(ioc, [this, &closed] {
            api->stop();
            asset_http->stop();
            boost::system::error_code ec;
            if (stream_loop)
                stream_loop->stop();
            stream_acceptor->close(ec);
            for (auto &[id, a] : agents)
                a.timer->cancel();
            for (auto &[label, sc] : schedules)
                sc.timer->cancel();
            for (auto &[id, r] : runs) {
                r->timer.cancel();
                r->waiters.clear(); // they hold sessions that hold the run
            }
            closed.set_value();
        });
        closed.get_future().wait();
        work.reset();
        ioc.stop();
        if (io_thread.joinable())
            io_thread.join();
        stopped = true;
        if (assets)
            assets->stop();
        runs.clear();
        agents.clear();
        log::info(C, "server stopped");
    }
};

Server::Server(ServerConfig cfg, std::unique_ptr<core::Transport> transport)
    : impl_(std::make_unique<Impl>(std::move(cfg), std::move(transport)))
{
}

Server::~Server()
{
    stop();
}

void Server::set_observer(ServerObserver obs)
{
    impl_->obs = std::move(obs);
}
void Server::start()
{
    impl_->start();
}
void Server::stop()
{
    impl_->stop();
}
uint16_t Server::api_port() const
{
    return impl_->api ? impl_->api->port() : 0;
}
uint16_t Server::stream_port() const
{
    return impl_->stream_port;
}
uint16_t Server::assets_port() const
{
    return impl_->asset_http ? impl_->asset_http->port() : 0;
}
const ServerConfig &Server::config() const
{
    return impl_->cfg;
}

std::map<std::string, std::string> Server::groups() const
{
    return impl_->sync([this] {
        std::map<std::string, std::string> m;
        for (const auto &[id, a] : impl_->agents)
            if (!a.group.empty())
                m[id] = a.group;
        return m;
    });
}

std::vector<std::string> Server::agents() const
{
    return impl_->sync([this] {
        std::vector<std::string> v;
        for (const auto &[id, a] : impl_->agents)
            v.push_back(id);
        return v;
    });
}

} // namespace todd::server
