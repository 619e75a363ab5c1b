// SPDX-License-Identifier: Apache-2.0
// The server's and the agent's observability end to end: a real in-process
// server and two real in-process agents over the loopback plugin. /healthz,
// /readyz, /metrics (its content type and the gauges of the registry), the
// compiled-in dashboard page and its JSON, testruns the server runs on
// their spec.interval (without /v1/testrun/run) and what they leave in
// /metrics and the dashboard, what deleting the testrun stops and removes,
// and Agent::metrics_text() / readiness().
#include "server_test_util.hpp"

#include <todd/core/comms.hpp>

#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <rapidjson/document.h>
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

using namespace todd;
using namespace todd::test;

namespace {

rapidjson::Document parse(const std::string &s)
{
    rapidjson::Document d;
    d.Parse(s.c_str());
    return d;
}

std::string result_series(const std::string &agent, const std::string &metric,
                          const std::string &testrun)
{
    return "todd_testrun_result{agent=\"" + agent + "\",metric=\"" + metric +
           "\",target=\"127.0.0.1\",testrun=\"" + testrun + "\"}";
}

std::string testrun_json(const std::string &label, const std::string &group,
                         const std::string &app, const std::string &args,
                         const std::string &interval)
{
    return "{\"label\":\"" + label +
           "\",\"type\":\"testrun\",\"spec\":{\"targettype\":\"uncontrolled\","
           "\"source\":{\"app\":\"" +
           app + "\",\"args\":\"" + args + "\",\"name\":\"" + group +
           "\"},\"target\":[\"127.0.0.1\"],\"interval\":\"" + interval + "\"}}";
}

std::string base64(const unsigned char *p, size_t n)
{
    std::string out(4 * ((n + 2) / 3) + 1, '\0');
    int len = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()), p,
                              static_cast<int>(n));
    out.resize(static_cast<size_t>(len));
    return out;
}

std::string sha256_base64(const std::string &s)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
    return base64(md, n);
}

class Observe : public ::testing::Test {
  protected:
    void SetUp() override
    {
        cfg_ = test_server_config(dir_.path());
        cfg_.agent_expiry = 1500ms; // a stale advert's agent vanishes soon
        cfg_.stream_ack_timeout = 1s;
        cfg_.install_timeout = 20s;
        cfg_.source_time_limit = 20;
        cfg_.result_grace = 5s;
        install_server_testlet(cfg_.opt_dir, "ping");
        srv_ = std::make_unique<server::Server>(cfg_, loopback_factory()());
        srv_->start();
        api_ = srv_->api_port();
        for (int i = 0; i < 2; ++i) {
            agent::AgentConfig ac;
            ac.advert_interval = 300ms; // well inside agent_expiry
            agents_.push_back(
                make_agent(loopback_factory(), dir_.path(), i, &ac));
            agents_.back()->start();
        }
        // Registered after the DownloadAsset round trip; exactly these two
        // (an advert left in the process-wide broker by an earlier test's
        // agent would register an agent that expires).
        std::vector<std::string> ours;
        for (auto &a : agents_)
            ours.push_back(a->uuid());
        std::sort(ours.begin(), ours.end());
        ASSERT_TRUE(wait_until(
            [&] {
                auto got = srv_->agents();
                std::sort(got.begin(), got.end());
                return got == ours;
            },
            30s))
            << "the server did not register exactly the two agents";
    }
    void TearDown() override
    {
        for (auto &a : agents_)
            a->stop();
        agents_.clear();
        if (srv_)
            srv_->stop();
    }

    HttpReply get(const std::string &t) { return http(api_, "GET", t); }
    HttpReply post(const std::string &t, const std::string &b)
    {
        return http(api_, "POST", t, b);
    }
    std::string metrics()
    {
        auto r = get("/metrics");
        EXPECT_EQ(r.status, 200);
        return r.body;
    }
    void create_group()
    {
        ASSERT_EQ(
            post("/v1/object/create", group_json("obsgroup", "127.0.0.0/8"))
                .status,
            200);
        ASSERT_TRUE(wait_until([&] {
            for (auto &a : agents_)
                if (a->group() != "obsgroup")
                    return false;
            return true;
        })) << "the agents did not join obsgroup";
    }
    /** Runs of a testrun in /v1/dashboard/runs (finished only when done). */
    size_t runs_of(const std::string &label, bool done)
    {
        auto d = parse(get("/v1/dashboard/runs?limit=200").body);
        if (!d.IsObject() || !d.HasMember("runs") || !d["runs"].IsArray())
            return 0;
        size_t n = 0;
        for (const auto &r : d["runs"].GetArray())
            n += r["label"].GetString() == label &&
                 (!done || r["done"].GetBool());
        return n;
    }

    TempDir dir_;
    server::ServerConfig cfg_;
    std::unique_ptr<server::Server> srv_;
    std::vector<std::unique_ptr<agent::Agent>> agents_;
    uint16_t api_ = 0;
};

} // namespace

TEST_F(Observe, HealthReadinessMetricsAndTheDashboardPage)
{
    auto h = get("/healthz");
    EXPECT_EQ(h.status, 200);
    EXPECT_EQ(h.headers["content-type"], "application/json");
    auto hd = parse(h.body);
    ASSERT_TRUE(hd.IsObject()) << h.body;
    EXPECT_STREQ(hd["status"].GetString(), "ok");

    auto r = get("/readyz");
    EXPECT_EQ(r.status, 200) << r.body;
    auto rd = parse(r.body);
    ASSERT_TRUE(rd.IsObject()) << r.body;
    EXPECT_STREQ(rd["status"].GetString(), "ok");
    EXPECT_TRUE(rd["checks"]["transport"]["ok"].GetBool());
    EXPECT_STREQ(rd["checks"]["transport"]["detail"].GetString(),
                 "loopback connected");
    EXPECT_TRUE(rd["checks"]["store"]["ok"].GetBool());
    EXPECT_EQ(std::string(rd["checks"]["store"]["detail"].GetString()),
              cfg_.db_path);

    auto m = get("/metrics");
    EXPECT_EQ(m.status, 200);
    EXPECT_EQ(m.headers["content-type"],
              "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_EQ(metric_value(m.body, "todd_agents"), 2) << m.body;
    EXPECT_EQ(metric_value(m.body, R"(todd_group_agents{group=""})"), 2);
    EXPECT_GE(metric_value(m.body, "todd_agent_registrations_total"), 2);
    // They started without the server's ping testlet.
    EXPECT_GE(
        metric_value(m.body, R"(todd_adverts_total{outcome="assets_missing"})"),
        2);
    EXPECT_GE(metric_value(m.body, R"(todd_adverts_total{outcome="accepted"})"),
              2);
    EXPECT_GE(
        metric_value(m.body, R"(todd_tasks_sent_total{type="DownloadAsset"})"),
        2);
    EXPECT_EQ(
        metric_value(m.body, R"(todd_comms_connected{transport="loopback"})"),
        1);
    EXPECT_GT(
        metric_value(m.body,
                     R"(todd_comms_deliveries_total{transport="loopback"})"),
        0);
    EXPECT_EQ(metric_value(m.body, "todd_testruns_active"), 0);
    EXPECT_EQ(metric_value(m.body, "todd_testruns_scheduled"), 0);

    create_group();
    std::string t = metrics();
    EXPECT_EQ(metric_value(t, R"(todd_group_agents{group="obsgroup"})"), 2)
        << t;
    EXPECT_FALSE(metric_line(t, R"(todd_group_agents{group=""})")) << t;
    EXPECT_GE(metric_value(t, R"(todd_tasks_sent_total{type="SetGroup"})"), 2);

    // The page, with a policy that allows exactly its one inline script.
    for (const char *p : {"/dashboard", "/dashboard/"}) {
        auto d = get(p);
        EXPECT_EQ(d.status, 200) << p;
        EXPECT_EQ(d.headers["content-type"], "text/html; charset=utf-8") << p;
        EXPECT_EQ(d.body.rfind("<!DOCTYPE html>", 0), 0u) << p;
        const std::string csp = d.headers["content-security-policy"];
        EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
        auto a = d.body.find("<script>"), b = d.body.find("</script>");
        ASSERT_NE(a, std::string::npos);
        ASSERT_NE(b, std::string::npos);
        const std::string script = d.body.substr(a + 8, b - a - 8);
        EXPECT_NE(csp.find("script-src 'sha256-" + sha256_base64(script) + "'"),
                  std::string::npos)
            << csp;
    }
    // The dashboard's JSON before any run.
    auto runs = get("/v1/dashboard/runs");
    EXPECT_EQ(runs.status, 200);
    EXPECT_EQ(runs.body, R"({"runs":[]})");
    for (const char *q : {"/v1/dashboard/series", "/v1/dashboard/series?label=",
                          "/v1/dashboard/series?limit=5"}) {
        auto s = get(q);
        EXPECT_EQ(s.status, 400) << q;
        EXPECT_NE(s.body.find("label"), std::string::npos) << s.body;
    }
    auto none = get("/v1/dashboard/series?label=nothing");
    EXPECT_EQ(none.status, 200);
    EXPECT_EQ(none.body, R"({"label":"nothing","series":[]})");

    // A store that cannot be read makes the server unready, not unhealthy.
    sqlite3 *db = nullptr;
    ASSERT_EQ(sqlite3_open(cfg_.db_path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "DROP TABLE objects", nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
    auto bad = get("/readyz");
    EXPECT_EQ(bad.status, 503) << bad.body;
    auto bd = parse(bad.body);
    ASSERT_TRUE(bd.IsObject()) << bad.body;
    EXPECT_STREQ(bd["status"].GetString(), "unavailable");
    EXPECT_FALSE(bd["checks"]["store"]["ok"].GetBool());
    EXPECT_TRUE(bd["checks"]["transport"]["ok"].GetBool());
    EXPECT_EQ(get("/healthz").status, 200);
}

TEST_F(Observe, ScheduledRunsFillMetricsAndDashboardUntilDeleted)
{
    create_group();
    ASSERT_EQ(post("/v1/object/create",
                   testrun_json("sched-ping", "obsgroup", "ping", "-c 1", "1s"))
                  .status,
              200);
    EXPECT_NE(get("/v1/object/testrun").body.find("\"interval\": \"1s\""),
              std::string::npos);
    EXPECT_EQ(metric_value(metrics(), "todd_testruns_scheduled"), 1);

    // Nobody calls /v1/testrun/run: the server runs it every second.
    ASSERT_TRUE(
        wait_until([&] { return runs_of("sched-ping", true) >= 2; }, 60s))
        << get("/v1/dashboard/runs?limit=200").body;

    std::string t = metrics();
    EXPECT_GE(
        metric_value(t, R"(todd_testruns_started_total{origin="schedule"})"), 2)
        << t;
    EXPECT_FALSE(
        metric_line(t, R"(todd_testruns_started_total{origin="api"})"));
    EXPECT_GE(metric_value(t, R"(todd_testruns_total{outcome="ok"})"), 2);
    EXPECT_EQ(metric_value(t, R"(todd_testruns_total{outcome="failed"})"), 0);
    EXPECT_GE(metric_value(t, "todd_testrun_duration_seconds_count"), 2);
    // Two agents per run, at least two runs.
    EXPECT_GE(
        metric_value(t, R"(todd_tasks_sent_total{type="InstallTestRun"})"), 4);
    EXPECT_GE(
        metric_value(t, R"(todd_tasks_sent_total{type="ExecuteTestRun"})"), 4);
    EXPECT_GE(
        metric_value(
            t, R"(todd_responses_total{outcome="accepted",type="TestData"})"),
        4);
    EXPECT_GT(
        metric_value(t, R"(todd_comms_published_total{transport="loopback"})"),
        0);
    EXPECT_EQ(
        metric_value(
            t, R"(todd_comms_publish_failures_total{transport="loopback"})"),
        0);
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    for (auto &a : agents_) {
        auto l = metric_line(
            t, result_series(a->uuid(), "avg_latency_ms", "sched-ping"));
        ASSERT_TRUE(l) << a->uuid() << "\n" << t;
        // "<series> <value> <time ms>": a latency and a recent time.
        std::istringstream in(l->substr(l->find("} ") + 2));
        double v = -1;
        int64_t ts = 0;
        in >> v >> ts;
        EXPECT_GE(v, 0) << *l;
        EXPECT_LE(ts, now) << *l;
        EXPECT_GT(ts, now - 120000) << *l;
        EXPECT_EQ(metric_value(
                      t, result_series(a->uuid(), "packet_loss", "sched-ping")),
                  0);
    }

    // The dashboard's view of the same runs.
    auto d = parse(get("/v1/dashboard/runs?limit=200").body);
    ASSERT_TRUE(d.IsObject());
    size_t finished = 0;
    for (const auto &r : d["runs"].GetArray()) {
        EXPECT_STREQ(r["label"].GetString(), "sched-ping");
        EXPECT_EQ(r["uuid"].GetStringLength(), 64u);
        EXPECT_GT(r["started_ms"].GetInt64(), 0);
        if (!r["done"].GetBool())
            continue;
        ++finished;
        EXPECT_LE(r["started_ms"].GetInt64(), r["ended_ms"].GetInt64());
        EXPECT_EQ(r["agents"].GetInt(), 2);
        EXPECT_EQ(r["failed"].GetInt(), 0);
        for (auto &a : agents_)
            EXPECT_STREQ(r["statuses"][a->uuid().c_str()].GetString(),
                         "finished");
    }
    EXPECT_GE(finished, 2u);
    auto one = parse(get("/v1/dashboard/runs?limit=1").body);
    EXPECT_EQ(one["runs"].Size(), 1u);
    auto s = get("/v1/dashboard/series?label=sched-ping");
    EXPECT_EQ(s.status, 200);
    auto sd = parse(s.body);
    ASSERT_TRUE(sd.IsObject()) << s.body;
    std::set<std::string> with_points;
    for (const auto &se : sd["series"].GetArray()) {
        if (std::string(se["metric"].GetString()) != "avg_latency_ms")
            continue;
        const auto &p = se["points"];
        EXPECT_GE(p.Size(), 2u);
        for (rapidjson::SizeType i = 1; i < p.Size(); ++i)
            EXPECT_LE(p[i - 1][0].GetInt64(), p[i][0].GetInt64());
        with_points.insert(se["agent"].GetString());
    }
    EXPECT_EQ(with_points.size(), 2u) << s.body;

    // No run may be in flight when the testrun is deleted: take the agents
    // out of its group first, then wait for the last run to end (a tick
    // without agents is refused).
    ASSERT_EQ(
        post("/v1/object/delete", R"({"label":"obsgroup","type":"group"})")
            .status,
        200);
    ASSERT_TRUE(wait_until([&] {
        for (auto &a : agents_)
            if (!a->group().empty())
                return false;
        return true;
    }));
    ASSERT_TRUE(wait_until(
        [&] {
            auto m = metrics();
            return metric_value(m, "todd_testruns_active") == 0 &&
                   metric_value(
                       m,
                       R"(todd_testruns_refused_total{reason="invalidtopology"})") >=
                       1;
        },
        60s))
        << metrics();
    const size_t before = runs_of("sched-ping", false);
    ASSERT_EQ(
        post("/v1/object/delete", R"({"label":"sched-ping","type":"testrun"})")
            .status,
        200);
    t = metrics();
    EXPECT_EQ(t.find("testrun=\"sched-ping\""), std::string::npos) << t;
    EXPECT_EQ(metric_value(t, "todd_testruns_scheduled"), 0);
    const double refused = metric_value(
        t, R"(todd_testruns_refused_total{reason="invalidtopology"})");

    // The agents back in the group and another scheduled testrun: once it
    // has run three times (more than two intervals), the deleted one has
    // neither run nor been tried.
    create_group();
    ASSERT_EQ(post("/v1/object/create",
                   testrun_json("marker", "obsgroup", "ping", "-c 1", "1s"))
                  .status,
              200);
    ASSERT_TRUE(wait_until([&] { return runs_of("marker", true) >= 3; }, 60s));
    EXPECT_EQ(runs_of("sched-ping", false), before);
    t = metrics();
    EXPECT_EQ(t.find("testrun=\"sched-ping\""), std::string::npos) << t;
    EXPECT_FALSE(
        metric_line(t, R"(todd_testruns_refused_total{reason="notfound"})"))
        << t;
    EXPECT_EQ(
        metric_value(
            t, R"(todd_testruns_refused_total{reason="invalidtopology"})"),
        refused);
    EXPECT_EQ(metric_value(t, "todd_testruns_scheduled"), 1);
    for (auto &a : agents_)
        EXPECT_TRUE(metric_line(
            t, result_series(a->uuid(), "avg_latency_ms", "marker")));
}

TEST_F(Observe, ScheduledRunStillGoingIsSkippedAndDeletionForgetsItsResults)
{
    // The testlet waits until the test removes a file, so a run is surely
    // in progress when the next interval comes and when it is deleted.
    const std::string gate = dir_ / "gate";
    write_gated_testlet(cfg_.opt_dir + "/assets/testlets/gated", gate);
    create_group();
    ASSERT_TRUE(agents_have_testlet(agents_, "gated"));
    ASSERT_EQ(post("/v1/object/create",
                   testrun_json("gated-sched", "obsgroup", "gated", "", "1s"))
                  .status,
              200);
    ASSERT_TRUE(wait_until(
        [&] {
            auto m = metrics();
            return metric_value(m, "todd_testruns_active") == 1 &&
                   metric_value(
                       m,
                       R"(todd_testruns_refused_total{reason="still_running"})") >=
                       1;
        },
        60s))
        << metrics();
    EXPECT_EQ(runs_of("gated-sched", false), 1u);
    EXPECT_EQ(runs_of("gated-sched", true), 0u);

    // Deleted while its run is in progress, then the run ends.
    ASSERT_EQ(
        post("/v1/object/delete", R"({"label":"gated-sched","type":"testrun"})")
            .status,
        200);
    EXPECT_EQ(metric_value(metrics(), "todd_testruns_scheduled"), 0);
    std::filesystem::remove(gate);
    ASSERT_TRUE(
        wait_until([&] { return runs_of("gated-sched", true) == 1; }, 60s));
    const std::string t = metrics();
    EXPECT_EQ(metric_value(t, R"(todd_testruns_total{outcome="ok"})"), 1) << t;
    EXPECT_EQ(
        metric_value(t, R"(todd_testruns_started_total{origin="schedule"})"),
        1);
    // Its testrun is gone: nothing of it is exported.
    EXPECT_EQ(t.find("testrun=\"gated-sched\""), std::string::npos) << t;
    EXPECT_EQ(metric_value(t, "todd_testrun_result_series"), 0);
}

TEST_F(Observe, AgentMetricsTextAndReadiness)
{
    agent::Agent &a = *agents_[0];
    std::string t = a.metrics_text();
    EXPECT_EQ(
        metric_line(t, "todd_agent_info{uuid=\"" + a.uuid() + "\",group=\"\"}"),
        "todd_agent_info{uuid=\"" + a.uuid() + "\",group=\"\"} 1")
        << t;
    EXPECT_GE(metric_value(t, R"(todd_agent_adverts_total{outcome="sent"})"),
              1);
    EXPECT_EQ(metric_value(t, R"(todd_agent_adverts_total{outcome="failed"})"),
              0);
    EXPECT_GE(
        metric_value(t, R"(todd_agent_tasks_total{type="DownloadAsset"})"), 1);
    EXPECT_GE(metric_value(t, R"(todd_agent_assets_total{outcome="fetched"})"),
              1);
    EXPECT_EQ(metric_value(t, "todd_agent_test_runs"), 0);
    EXPECT_GT(metric_value(t, "process_open_fds"), 2);
    EXPECT_EQ(metric_value(t, R"(todd_comms_connected{transport="loopback"})"),
              1);
    EXPECT_GT(
        metric_value(t, R"(todd_comms_published_total{transport="loopback"})"),
        0);
    EXPECT_NE(t.find("# TYPE todd_agent_info gauge\n"), std::string::npos);

    auto checks = a.readiness();
    ASSERT_EQ(checks.size(), 2u);
    for (const auto &c : checks)
        EXPECT_TRUE(c.ok) << c.name << ": " << c.detail;
    EXPECT_EQ(checks[0].name, "agent");
    EXPECT_EQ(checks[0].detail, a.uuid());
    EXPECT_EQ(checks[1].name, "transport");
    EXPECT_EQ(checks[1].detail, "loopback connected");

    // The group is in the info series once the agent is in one.
    create_group();
    t = a.metrics_text();
    EXPECT_EQ(metric_line(t, "todd_agent_info{uuid=\"" + a.uuid() +
                                 "\",group=\"obsgroup\"}"),
              "todd_agent_info{uuid=\"" + a.uuid() + "\",group=\"obsgroup\"} 1")
        << t;
    EXPECT_GE(metric_value(t, R"(todd_agent_tasks_total{type="SetGroup"})"), 1);

    // Stopped: not ready, and the text is still served.
    agent::Agent &b = *agents_[1];
    b.stop();
    for (const auto &c : b.readiness())
        EXPECT_FALSE(c.ok) << c.name << ": " << c.detail;
    t = b.metrics_text();
    EXPECT_EQ(metric_value(t, R"(todd_comms_connected{transport="loopback"})"),
              0);
    EXPECT_TRUE(
        metric_line(t, "todd_agent_info{uuid=\"" + b.uuid() +
                           "\",group=\"obsgroup\"}") ||
        metric_line(t, "todd_agent_info{uuid=\"" + b.uuid() + "\",group=\"\"}"))
        << t;
}
