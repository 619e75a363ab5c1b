// SPDX-License-Identifier: Apache-2.0
// The server's observability pieces on their own: spec.interval parsing and
// normalisation, ServerMetrics (result series, their bounds, counters and
// the exact Prometheus text), the dashboard's JSON builders, and the
// store's recent results and its upgrade of an older database file.
#include "server_test_util.hpp"

#include "dashboard.hpp"
#include "objects.hpp"
#include "server_metrics.hpp"
#include "store.hpp"

#include <todd/core/comms.hpp>

#include <gtest/gtest.h>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <sqlite3.h>

#include <chrono>
#include <cmath>
#include <optional>
#include <regex>
#include <sstream>

using namespace todd;
using namespace todd::server;
using namespace todd::test;
using namespace std::chrono_literals;

namespace {

int64_t now_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/** Every line of the text format 0.0.4 is a comment or a sample. */
::testing::AssertionResult well_formed(const std::string &text)
{
    static const std::regex sample(
        R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? (-?[0-9.e+-]+|[+-]Inf|Nan|NaN)( -?[0-9]+)?$)");
    std::istringstream in(text);
    size_t n = 0;
    for (std::string line; std::getline(in, line); ++n) {
        if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0)
            continue;
        if (!std::regex_match(line, sample))
            return ::testing::AssertionFailure()
                   << "line " << n + 1 << " is not a sample: " << line;
    }
    if (text.empty() || text.back() != '\n')
        return ::testing::AssertionFailure() << "no final newline";
    return ::testing::AssertionSuccess();
}

rapidjson::Document parse_json(const std::string &s)
{
    rapidjson::Document d;
    d.Parse<rapidjson::kParseValidateEncodingFlag>(s.c_str(), s.size());
    EXPECT_FALSE(d.HasParseError())
        << rapidjson::GetParseError_En(d.GetParseError()) << " at "
        << d.GetErrorOffset() << " in " << s;
    return d;
}

std::string testrun_with(const std::string &interval_json)
{
    return R"({"label":"t","type":"testrun","spec":{"targettype":"uncontrolled","source":{"app":"ping","args":"-c 1","name":"g"},"target":["127.0.0.1"],"interval":)" +
           interval_json + "}}";
}

/** A Comms for scrape(): created, not started (its counters are zero). */
class Scrape : public ::testing::Test {
  protected:
    core::Comms comms_{loopback_factory()()};
    std::string text(ServerMetrics &m, const ServerMetrics::Snapshot &s = {})
    {
        return m.scrape(s, comms_);
    }
};

} // namespace

// ---- spec.interval --------------------------------------------------------

TEST(Interval, GoDurationsAndBareSeconds)
{
    using std::chrono::milliseconds;
    EXPECT_EQ(parse_interval("30s"), milliseconds(30000));
    EXPECT_EQ(parse_interval("5m"), milliseconds(300000));
    EXPECT_EQ(parse_interval("1h30m"), milliseconds(5400000));
    EXPECT_EQ(parse_interval("1500ms"), milliseconds(1500));
    EXPECT_EQ(parse_interval("45"), milliseconds(45000));
    EXPECT_EQ(parse_interval("1m30s500ms"), milliseconds(90500));
    // The bounds themselves are allowed.
    EXPECT_EQ(parse_interval("1s"), milliseconds(1000));
    EXPECT_EQ(parse_interval("1000ms"), milliseconds(1000));
    EXPECT_EQ(parse_interval("24h"), milliseconds(86400000));
    EXPECT_EQ(parse_interval("23h60m"), milliseconds(86400000));
}

TEST(Interval, RefusedWithAMessageNamingTheKey)
{
    for (const std::string &bad : {std::string(""),
                                   std::string("0s"),
                                   std::string("0"),
                                   std::string("500ms"),
                                   std::string("999ms"),
                                   std::string("25h"),
                                   std::string("24h1s"),
                                   std::string("3x"),
                                   std::string("s"),
                                   std::string("1.5s"),
                                   std::string("-5s"),
                                   std::string(" 5s"),
                                   std::string("5s "),
                                   std::string("5S"),
                                   std::string("1e3s"),
                                   std::string("10000000000s"),
                                   std::string(33, '9'),
                                   std::string(40, '1') + "s",
                                   std::string("1s") + std::string(40, '0'),
                                   std::string("5s\n")}) {
        try {
            auto v = parse_interval(bad);
            ADD_FAILURE() << "\"" << bad << "\" accepted as " << v.count()
                          << " ms";
        } catch (const ObjectError &e) {
            EXPECT_NE(std::string(e.what()).find("spec.interval"),
                      std::string::npos)
                << bad << " -> " << e.what();
        }
    }
    // The reason is specific.
    auto why = [](const std::string &t) {
        try {
            parse_interval(t);
        } catch (const ObjectError &e) {
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    EXPECT_NE(why("500ms").find("shorter than 1s"), std::string::npos);
    EXPECT_NE(why("25h").find("longer than 24h"), std::string::npos);
    EXPECT_NE(why("3x").find("unknown unit \"x\""), std::string::npos);
}

TEST(Interval, NormaliseKeepsItAndParseTestrunReadsIt)
{
    auto n = normalise_object(testrun_with("\"1h30m\""));
    EXPECT_NE(n.json.find(R"("target":["127.0.0.1"],"interval":"1h30m"}})"),
              std::string::npos)
        << n.json;
    EXPECT_EQ(parse_testrun(n.json).interval, 5400s);

    // A JSON integer is seconds, stored as a duration string.
    auto i = normalise_object(testrun_with("45"));
    EXPECT_NE(i.json.find(R"("interval":"45s")"), std::string::npos) << i.json;
    EXPECT_EQ(parse_testrun(i.json).interval, 45s);

    // Absent, null or "": no interval, run only when asked.
    for (const char *none : {"null", "\"\""}) {
        auto z = normalise_object(testrun_with(none));
        EXPECT_EQ(z.json.find("interval"), std::string::npos) << z.json;
        EXPECT_EQ(parse_testrun(z.json).interval.count(), 0);
    }
    auto plain = normalise_object(
        R"({"label":"t","type":"testrun","spec":{"targettype":"uncontrolled","source":{"app":"ping","args":"","name":"g"},"target":["127.0.0.1"]}})");
    EXPECT_EQ(plain.json.find("interval"), std::string::npos);
    EXPECT_EQ(parse_testrun(plain.json).interval.count(), 0);

    for (const char *bad : {"\"500ms\"", "\"25h\"", "\"3x\"", "0", "-5", "1.5",
                            "true", "[\"1s\"]", "{}", "100000"}) {
        try {
            auto r = normalise_object(testrun_with(bad));
            ADD_FAILURE() << bad << " accepted: " << r.json;
        } catch (const ObjectError &e) {
            EXPECT_NE(std::string(e.what()).find("spec.interval"),
                      std::string::npos)
                << bad << " -> " << e.what();
        }
    }
}

// ---- ServerMetrics ----------------------------------------------------------

TEST_F(Scrape, ResultSeriesKeepOnlyNumbersInTheExactTextFormat)
{
    ServerMetrics m(ResultSeriesLimits{});
    const int64_t t = now_ms() - 1234;
    m.record_results(
        "ping-lo",
        R"({"A":{"127.0.0.1":{"avg_latency_ms":0.05,"packet_loss":"0","rtt":"fast",)"
        R"("nested":{"x":1},"list":[1,2],"flag":true,"none":null,"empty":"",)"
        R"("inf":"inf","nan":"NaN","big":"1e999","trail":"5 "},"10.0.0.9":"junk"},)"
        R"("B":5,"C":{"t":{"m":"1e3","neg":-2.5}},"D":[]})",
        t);
    EXPECT_EQ(m.series_count(), 4u);
    const std::string s = text(m);
    EXPECT_TRUE(well_formed(s));
    const std::string ts = std::to_string(t);
    EXPECT_EQ(
        metric_line(
            s,
            R"(todd_testrun_result{agent="A",metric="avg_latency_ms",target="127.0.0.1",testrun="ping-lo"})"),
        R"(todd_testrun_result{agent="A",metric="avg_latency_ms",target="127.0.0.1",testrun="ping-lo"} 0.05 )" +
            ts);
    EXPECT_EQ(
        metric_line(
            s,
            R"(todd_testrun_result{agent="A",metric="packet_loss",target="127.0.0.1",testrun="ping-lo"})"),
        R"(todd_testrun_result{agent="A",metric="packet_loss",target="127.0.0.1",testrun="ping-lo"} 0 )" +
            ts);
    EXPECT_EQ(
        metric_line(
            s,
            R"(todd_testrun_result{agent="C",metric="m",target="t",testrun="ping-lo"})"),
        R"(todd_testrun_result{agent="C",metric="m",target="t",testrun="ping-lo"} 1000 )" +
            ts);
    EXPECT_EQ(
        metric_line(
            s,
            R"(todd_testrun_result{agent="C",metric="neg",target="t",testrun="ping-lo"})"),
        R"(todd_testrun_result{agent="C",metric="neg",target="t",testrun="ping-lo"} -2.5 )" +
            ts);
    for (const char *skipped : {"rtt", "nested", "list", "flag", "none",
                                "empty", "inf", "nan", "big", "trail"})
        EXPECT_EQ(s.find(std::string("metric=\"") + skipped + "\""),
                  std::string::npos)
            << skipped;
    EXPECT_EQ(s.find("agent=\"B\""), std::string::npos);
    EXPECT_EQ(s.find("target=\"10.0.0.9\""), std::string::npos);
    EXPECT_NE(s.find("# TYPE todd_testrun_result gauge\n"), std::string::npos);
    EXPECT_EQ(metric_value(s, "todd_testrun_result_series"), 4);

    // A later run replaces the value and its time; not JSON: nothing.
    // (prometheus-cpp writes 16 significant digits: 0.07 would read
    // 0.07000000000000001.)
    m.record_results("ping-lo",
                     R"({"A":{"127.0.0.1":{"avg_latency_ms":"0.25"}}})", t + 1);
    m.record_results("ping-lo", "not json", t + 2);
    m.record_results("ping-lo", "[1,2]", t + 2);
    EXPECT_EQ(m.series_count(), 4u);
    EXPECT_EQ(
        metric_line(
            text(m),
            R"(todd_testrun_result{agent="A",metric="avg_latency_ms",target="127.0.0.1",testrun="ping-lo"})"),
        R"(todd_testrun_result{agent="A",metric="avg_latency_ms",target="127.0.0.1",testrun="ping-lo"} 0.25 )" +
            std::to_string(t + 1));
}

TEST_F(Scrape, SnapshotGaugesAndTheCommsAndProcessFamilies)
{
    ServerMetrics m(ResultSeriesLimits{});
    ServerMetrics::Snapshot snap;
    snap.agents = 3;
    snap.group_agents = {{"", 1}, {"red", 2}};
    snap.active_runs = 4;
    snap.scheduled_testruns = 5;
    const std::string s = text(m, snap);
    EXPECT_TRUE(well_formed(s));
    EXPECT_EQ(metric_value(s, "todd_agents"), 3);
    EXPECT_EQ(metric_value(s, R"(todd_group_agents{group=""})"), 1);
    EXPECT_EQ(metric_value(s, R"(todd_group_agents{group="red"})"), 2);
    EXPECT_EQ(metric_value(s, "todd_testruns_active"), 4);
    EXPECT_EQ(metric_value(s, "todd_testruns_scheduled"), 5);
    EXPECT_EQ(metric_value(s, "todd_testrun_result_series"), 0);
    // Zero series exist before any event.
    for (const char *o : {"ok", "partial", "failed"})
        EXPECT_EQ(
            metric_value(s, std::string("todd_testruns_total{outcome=\"") + o +
                                "\"}"),
            0)
            << o;
    EXPECT_EQ(metric_value(s, "todd_testrun_result_series_dropped_total"), 0);
    // The transport's families, by plugin name; not started: not connected.
    EXPECT_EQ(
        metric_value(s, R"(todd_comms_published_total{transport="loopback"})"),
        0);
    EXPECT_EQ(metric_value(s, R"(todd_comms_connected{transport="loopback"})"),
              0);
    EXPECT_EQ(
        metric_value(
            s,
            R"(todd_comms_verdicts_total{transport="loopback",verdict="ack"})"),
        0);
    EXPECT_EQ(
        metric_value(
            s,
            R"(todd_messages_refused_total{transport="loopback",reason="undecodable"})"),
        0);
    EXPECT_GT(metric_value(s, "process_open_fds"), 2);
    EXPECT_GT(metric_value(s, "process_resident_memory_bytes"), 0);
    EXPECT_GT(metric_value(s, "process_start_time_seconds"), 1.5e9);
    EXPECT_GT(metric_value(s, "process_max_fds"), 0);
}

TEST_F(Scrape, MaxSeriesDropsNewSeriesAndCountsThem)
{
    ServerMetrics m(ResultSeriesLimits{2, 3600s});
    const int64_t t = now_ms();
    m.record_results("r", R"({"A":{"x":{"a":1,"b":2,"c":3}}})", t);
    EXPECT_EQ(m.series_count(), 2u);
    std::string s = text(m);
    EXPECT_EQ(metric_value(s, "todd_testrun_result_series_dropped_total"), 1);
    EXPECT_EQ(metric_value(s, "todd_testrun_result_series"), 2);
    // The first two in the document's order are kept.
    EXPECT_TRUE(metric_line(
        s,
        R"(todd_testrun_result{agent="A",metric="a",target="x",testrun="r"})"));
    EXPECT_TRUE(metric_line(
        s,
        R"(todd_testrun_result{agent="A",metric="b",target="x",testrun="r"})"));
    EXPECT_FALSE(metric_line(
        s,
        R"(todd_testrun_result{agent="A",metric="c",target="x",testrun="r"})"));

    // Kept series are still refreshed at the bound; new ones still dropped.
    m.record_results("r", R"({"A":{"x":{"a":10}}})", t + 1);
    m.record_results("other", R"({"A":{"x":{"a":1,"d":4}}})", t + 1);
    EXPECT_EQ(m.series_count(), 2u);
    s = text(m);
    EXPECT_EQ(
        metric_value(
            s,
            R"(todd_testrun_result{agent="A",metric="a",target="x",testrun="r"})"),
        10);
    EXPECT_EQ(metric_value(s, "todd_testrun_result_series_dropped_total"), 3);

    // Room again after forget_testrun.
    m.forget_testrun("r");
    EXPECT_EQ(m.series_count(), 0u);
    m.record_results("other", R"({"A":{"x":{"a":1,"d":4}}})", t + 2);
    EXPECT_EQ(m.series_count(), 2u);
    EXPECT_EQ(metric_value(text(m), "todd_testrun_result_series_dropped_total"),
              3);
}

TEST_F(Scrape, SeriesOlderThanTheTtlAreForgottenAtScrape)
{
    ServerMetrics m(ResultSeriesLimits{100, 60s});
    const int64_t now = now_ms();
    m.record_results("old", R"({"A":{"x":{"m":1}}})", now - 120000);
    m.record_results("new", R"({"A":{"x":{"m":2}}})", now - 1000);
    EXPECT_EQ(m.series_count(), 2u); // expiry happens at scrape
    const std::string s = text(m);
    EXPECT_FALSE(metric_line(
        s,
        R"(todd_testrun_result{agent="A",metric="m",target="x",testrun="old"})"))
        << s;
    EXPECT_EQ(
        metric_value(
            s,
            R"(todd_testrun_result{agent="A",metric="m",target="x",testrun="new"})"),
        2);
    EXPECT_EQ(metric_value(s, "todd_testrun_result_series"), 1);
    EXPECT_EQ(m.series_count(), 1u);
    // An expired series is not dropped for the bound: it is merely gone.
    EXPECT_EQ(metric_value(s, "todd_testrun_result_series_dropped_total"), 0);
}

TEST_F(Scrape, ForgetTestrunRemovesOnlyThatTestrun)
{
    ServerMetrics m(ResultSeriesLimits{});
    const int64_t t = now_ms();
    for (const char *run : {"a", "ab", "a b", "b", ""})
        m.record_results(run, R"({"A":{"x":{"m":1,"n":2}},"B":{"y":{"m":3}}})",
                         t);
    EXPECT_EQ(m.series_count(), 15u);
    m.forget_testrun("a");
    EXPECT_EQ(m.series_count(), 12u);
    const std::string s = text(m);
    EXPECT_EQ(s.find("testrun=\"a\""), std::string::npos);
    for (const char *kept : {"ab", "a b", "b", ""})
        EXPECT_TRUE(metric_line(
            s,
            std::string(
                R"(todd_testrun_result{agent="B",metric="m",target="y",testrun=")") +
                kept + "\"}"))
            << kept;
    m.forget_testrun("missing"); // nothing to forget
    m.forget_testrun("");
    EXPECT_EQ(m.series_count(), 9u);
}

TEST_F(Scrape, EventCountersAndTheDurationHistogram)
{
    ServerMetrics m(ResultSeriesLimits{});
    m.run_started("schedule");
    m.run_started("schedule");
    m.run_started("api");
    m.run_refused("still_running");
    m.run_refused("notfound");
    m.run_refused("notfound");
    m.run_finished("ok", 0.3);
    m.run_finished("ok", 0.1);
    m.run_finished("failed", 2.0);
    m.advert("accepted");
    m.advert("accepted");
    m.advert("invalid");
    m.agent_registered();
    m.agent_expired();
    m.task_sent("InstallTestRun");
    m.task_sent("InstallTestRun");
    m.task_failed("SetGroup");
    m.response("TestData", "accepted");
    m.response("AgentStatus", "ignored");
    const std::string s = text(m);
    EXPECT_TRUE(well_formed(s));
    EXPECT_EQ(
        metric_value(s, R"(todd_testruns_started_total{origin="schedule"})"),
        2);
    EXPECT_EQ(metric_value(s, R"(todd_testruns_started_total{origin="api"})"),
              1);
    EXPECT_EQ(metric_value(
                  s, R"(todd_testruns_refused_total{reason="still_running"})"),
              1);
    EXPECT_EQ(
        metric_value(s, R"(todd_testruns_refused_total{reason="notfound"})"),
        2);
    EXPECT_EQ(metric_value(s, R"(todd_testruns_total{outcome="ok"})"), 2);
    EXPECT_EQ(metric_value(s, R"(todd_testruns_total{outcome="partial"})"), 0);
    EXPECT_EQ(metric_value(s, R"(todd_testruns_total{outcome="failed"})"), 1);
    EXPECT_EQ(metric_value(s, "todd_testrun_duration_seconds_count"), 3);
    EXPECT_NEAR(metric_value(s, "todd_testrun_duration_seconds_sum"), 2.4,
                1e-9);
    EXPECT_EQ(
        metric_value(s, R"(todd_testrun_duration_seconds_bucket{le="0.1"})"),
        1);
    EXPECT_EQ(
        metric_value(s, R"(todd_testrun_duration_seconds_bucket{le="0.5"})"),
        2);
    EXPECT_EQ(
        metric_value(s, R"(todd_testrun_duration_seconds_bucket{le="1"})"), 2);
    EXPECT_EQ(
        metric_value(s, R"(todd_testrun_duration_seconds_bucket{le="2.5"})"),
        3);
    EXPECT_EQ(
        metric_value(s, R"(todd_testrun_duration_seconds_bucket{le="+Inf"})"),
        3);
    EXPECT_NE(s.find("# TYPE todd_testrun_duration_seconds histogram\n"),
              std::string::npos);
    EXPECT_EQ(metric_value(s, R"(todd_adverts_total{outcome="accepted"})"), 2);
    EXPECT_EQ(metric_value(s, R"(todd_adverts_total{outcome="invalid"})"), 1);
    EXPECT_EQ(metric_value(s, "todd_agent_registrations_total"), 1);
    EXPECT_EQ(metric_value(s, "todd_agent_expirations_total"), 1);
    EXPECT_EQ(
        metric_value(s, R"(todd_tasks_sent_total{type="InstallTestRun"})"), 2);
    EXPECT_EQ(
        metric_value(s, R"(todd_task_send_failures_total{type="SetGroup"})"),
        1);
    // prometheus-cpp sorts a family's labels by name.
    EXPECT_EQ(
        metric_value(
            s, R"(todd_responses_total{outcome="accepted",type="TestData"})"),
        1);
    EXPECT_EQ(
        metric_value(
            s, R"(todd_responses_total{outcome="ignored",type="AgentStatus"})"),
        1);
    EXPECT_NE(s.find("# TYPE todd_testruns_total counter\n"),
              std::string::npos);
}

TEST_F(Scrape, HostileLabelValuesAreEscaped)
{
    ServerMetrics m(ResultSeriesLimits{});
    const int64_t t = now_ms();
    // Testrun labels and the agents' JSON keys are anyone's strings.
    m.record_results("we\"ird\\run\nx",
                     R"({"ag\"ent":{"a\\b":{"line\nbreak":1}}})", t);
    const std::string s = text(m);
    EXPECT_TRUE(well_formed(s)) << s;
    EXPECT_EQ(
        metric_line(
            s,
            R"(todd_testrun_result{agent="ag\"ent",metric="line\nbreak",target="a\\b",testrun="we\"ird\\run\nx"})"),
        R"(todd_testrun_result{agent="ag\"ent",metric="line\nbreak",target="a\\b",testrun="we\"ird\\run\nx"} 1 )" +
            std::to_string(t))
        << s;
    // No raw newline inside a sample: every line is whole.
    EXPECT_EQ(s.find("\nx\""), std::string::npos);
    EXPECT_EQ(s.find("\nbreak"), std::string::npos);
}

// ---- dashboard
// ---------------------------------------------------------------

TEST(Dashboard, RunsRunningFirstThenNewestWithStoredDeduplicated)
{
    std::vector<RunSummary> live = {
        {"live-done", "ping", 300, 400, {{"a1", "finished"}, {"a2", "fail"}}},
        {"live-old-running", "ping", 100, 0, {{"a1", "testing"}}},
        {"live-new-running", "other", 500, 0, {{"a1", "ready"}}},
    };
    std::vector<StoredResult> stored = {
        // The live run again, as the store has it: the live one wins.
        {"live-done", "ping", R"({"a1":{"status":"finished"}})", "{}", 300,
         401},
        {"stored", "ping",
         R"({"a1":{"role":"source","status":"finished","reason":""},"a2":{"status":"fail"},"a3":{"status":"fail"}})",
         "{}", 200, 250},
        // An older server's row: no start, its end is the row's creation.
        {"stored-old", "ping", "not json", "{}", 0, 50000},
    };
    auto d = parse_json(dashboard_runs(live, stored, 10));
    ASSERT_TRUE(d.IsObject());
    ASSERT_TRUE(d["runs"].IsArray());
    const auto &runs = d["runs"];
    std::vector<std::string> order;
    for (const auto &r : runs.GetArray())
        order.push_back(r["uuid"].GetString());
    EXPECT_EQ(order,
              (std::vector<std::string>{"live-new-running", "live-old-running",
                                        "live-done", "stored", "stored-old"}));
    ASSERT_EQ(runs.Size(), 5u);
    EXPECT_FALSE(runs[0]["done"].GetBool());
    EXPECT_EQ(runs[0]["ended_ms"].GetInt64(), 0);
    EXPECT_EQ(runs[0]["started_ms"].GetInt64(), 500);
    EXPECT_STREQ(runs[0]["label"].GetString(), "other");
    EXPECT_STREQ(runs[0]["statuses"]["a1"].GetString(), "ready");
    EXPECT_TRUE(runs[2]["done"].GetBool());
    EXPECT_EQ(runs[2]["ended_ms"].GetInt64(), 400); // live, not the store's 401
    EXPECT_EQ(runs[2]["agents"].GetInt(), 2);
    EXPECT_EQ(runs[2]["failed"].GetInt(), 1);
    EXPECT_EQ(runs[3]["agents"].GetInt(), 3);
    EXPECT_EQ(runs[3]["failed"].GetInt(), 2);
    EXPECT_STREQ(runs[3]["statuses"]["a1"].GetString(), "finished");
    EXPECT_TRUE(runs[3]["done"].GetBool());
    EXPECT_EQ(runs[4]["agents"].GetInt(), 0); // its statuses do not parse
    EXPECT_EQ(runs[4]["started_ms"].GetInt64(), 0);
    EXPECT_EQ(runs[4]["ended_ms"].GetInt64(), 50000);
    EXPECT_TRUE(runs[4]["statuses"].IsObject());

    // limit cuts the oldest.
    auto two = parse_json(dashboard_runs(live, stored, 2));
    ASSERT_EQ(two["runs"].Size(), 2u);
    EXPECT_STREQ(two["runs"][1]["uuid"].GetString(), "live-old-running");
    EXPECT_EQ(dashboard_runs({}, {}, 20), R"({"runs":[]})");
    EXPECT_EQ(parse_json(dashboard_runs({}, stored, 0))["runs"].Size(), 0u);
}

TEST(Dashboard, RunsJsonStaysValidWithHostileStrings)
{
    const std::string label = "a\"b\\c\n\t<script>\x01\xff";
    std::vector<RunSummary> live = {
        {"u\"1", label, 1, 2, {{"ag\"ent\n", "st\\atus"}}}};
    std::vector<StoredResult> stored = {
        {"u2", label, R"({"x\"y":{"status":"fail\n"}})", "{}", 0, 1}};
    auto d = parse_json(dashboard_runs(live, stored, 10));
    ASSERT_TRUE(d.IsObject());
    ASSERT_EQ(d["runs"].Size(), 2u);
    EXPECT_STREQ(d["runs"][0]["uuid"].GetString(), "u\"1");
    EXPECT_EQ(std::string(d["runs"][0]["label"].GetString()).substr(0, 16),
              label.substr(0, 16));
    EXPECT_STREQ(d["runs"][0]["statuses"]["ag\"ent\n"].GetString(), "st\\atus");
    EXPECT_STREQ(d["runs"][1]["statuses"]["x\"y"].GetString(), "fail\n");
}

TEST(Dashboard, SeriesFromNumericResultsOldestPointFirst)
{
    // Newest first, as Store::recent_results gives them.
    std::vector<StoredResult> stored = {
        {"r3", "ping", "{}", R"({"A":{"t":{"m":"3","x":"n/a"}}})", 2900, 3000},
        {"r2", "ping", "{}",
         R"({"A":{"t":{"m":2.5,"flag":true}},"B":{"t":{"m":20}},"C":"junk"})",
         1900, 2000},
        {"bad", "ping", "{}", "not json", 1500, 1600},
        {"r1", "ping", "{}", R"({"A":{"t":{"m":1},"u":{"m":0.05}}})", 900,
         1000},
    };
    const std::string out = dashboard_series("ping", stored);
    auto d = parse_json(out);
    ASSERT_TRUE(d.IsObject());
    EXPECT_STREQ(d["label"].GetString(), "ping");
    const auto &series = d["series"];
    ASSERT_TRUE(series.IsArray());
    ASSERT_EQ(series.Size(), 3u) << out;
    // Sorted by agent, target, metric.
    EXPECT_STREQ(series[0]["agent"].GetString(), "A");
    EXPECT_STREQ(series[0]["target"].GetString(), "t");
    EXPECT_STREQ(series[0]["metric"].GetString(), "m");
    const auto &p = series[0]["points"];
    ASSERT_EQ(p.Size(), 3u);
    const int64_t times[] = {1000, 2000, 3000};
    const double values[] = {1, 2.5, 3};
    for (unsigned i = 0; i < 3; ++i) {
        EXPECT_EQ(p[i][0].GetInt64(), times[i]) << i;
        EXPECT_DOUBLE_EQ(p[i][1].GetDouble(), values[i]) << i;
    }
    EXPECT_STREQ(series[1]["target"].GetString(), "u");
    ASSERT_EQ(series[1]["points"].Size(), 1u);
    EXPECT_DOUBLE_EQ(series[1]["points"][0][1].GetDouble(), 0.05);
    EXPECT_STREQ(series[2]["agent"].GetString(), "B");
    ASSERT_EQ(series[2]["points"].Size(), 1u);
    EXPECT_EQ(series[2]["points"][0][0].GetInt64(), 2000);
    EXPECT_EQ(out.find("\"flag\""), std::string::npos);
    EXPECT_EQ(out.find("\"x\""), std::string::npos);

    EXPECT_EQ(dashboard_series("none", {}), R"({"label":"none","series":[]})");
    auto h = parse_json(dashboard_series("q\"\\\n", {}));
    EXPECT_STREQ(h["label"].GetString(), "q\"\\\n");
}

// ---- store ----------------------------------------------------------------

TEST(StoreResults, RecentNewestFirstByLabelWithLimit)
{
    TempDir dir;
    Store s(dir.path() + "/todd.db");
    for (int i = 1; i <= 5; ++i)
        s.put_result({"r" + std::to_string(i), i % 2 ? "odd" : "even", "{}",
                      "{\"n\":" + std::to_string(i) + "}", i * 1000 - 100,
                      i * 1000});
    auto uuids = [](const std::vector<StoredResult> &v) {
        std::vector<std::string> out;
        for (const auto &r : v)
            out.push_back(r.uuid);
        return out;
    };
    using V = std::vector<std::string>;
    EXPECT_EQ(uuids(s.recent_results("", 10)),
              (V{"r5", "r4", "r3", "r2", "r1"}));
    EXPECT_EQ(uuids(s.recent_results("odd", 10)), (V{"r5", "r3", "r1"}));
    EXPECT_EQ(uuids(s.recent_results("even", 10)), (V{"r4", "r2"}));
    EXPECT_EQ(uuids(s.recent_results("", 2)), (V{"r5", "r4"}));
    EXPECT_EQ(uuids(s.recent_results("odd", 1)), (V{"r5"}));
    EXPECT_TRUE(s.recent_results("missing", 10).empty());
    EXPECT_TRUE(s.recent_results("", 0).empty());
    // Every field back as stored.
    auto r = s.recent_results("even", 1).at(0);
    EXPECT_EQ(r.label, "even");
    EXPECT_EQ(r.statuses, "{}");
    EXPECT_EQ(r.cleandata, "{\"n\":4}");
    EXPECT_EQ(r.started_ms, 3900);
    EXPECT_EQ(r.ended_ms, 4000);
    auto g = s.get_result("r2");
    ASSERT_TRUE(g);
    EXPECT_EQ(g->started_ms, 1900);
    EXPECT_EQ(g->ended_ms, 2000);
    // A label that is SQL is only a label.
    s.put_result({"r6", "x' OR '1'='1", "{}", "{}", 1, 6000});
    EXPECT_EQ(uuids(s.recent_results("x' OR '1'='1", 10)), (V{"r6"}));
    EXPECT_NO_THROW(s.ping());
}

TEST(StoreResults, OldSchemaGainsTheColumnsAndKeepsItsRows)
{
    TempDir dir;
    const std::string path = dir.path() + "/old.db";
    {
        // The tables as the server before the dashboard made them.
        sqlite3 *db = nullptr;
        ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
        char *err = nullptr;
        const char *sql =
            "CREATE TABLE objects ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " type TEXT NOT NULL, label TEXT NOT NULL, json TEXT NOT NULL,"
            " UNIQUE(type, label));"
            "CREATE TABLE results ("
            " uuid TEXT PRIMARY KEY, label TEXT NOT NULL,"
            " statuses TEXT NOT NULL, cleandata TEXT NOT NULL,"
            " created INTEGER NOT NULL DEFAULT (strftime('%s','now')));"
            "INSERT INTO objects(type, label, json) VALUES('group', 'g',"
            " '{\"label\":\"g\",\"type\":\"group\",\"spec\":{\"group\":\"g\","
            "\"matches\":null}}');"
            "INSERT INTO results(uuid, label, statuses, cleandata, created)"
            " VALUES('old1', 'ping', '{\"a\":{\"status\":\"finished\"}}',"
            " '{\"a\":{\"t\":{\"m\":1}}}', 1700000000);"
            "INSERT INTO results(uuid, label, statuses, cleandata, created)"
            " VALUES('old2', 'ping', '{}', '{}', 1700000100);";
        ASSERT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, &err), SQLITE_OK)
            << (err ? err : "");
        sqlite3_close(db);
    }
    {
        Store s(path);
        auto r = s.get_result("old1");
        ASSERT_TRUE(r);
        EXPECT_EQ(r->statuses, "{\"a\":{\"status\":\"finished\"}}");
        EXPECT_EQ(r->cleandata, "{\"a\":{\"t\":{\"m\":1}}}");
        EXPECT_EQ(r->started_ms, 0);
        EXPECT_EQ(r->ended_ms, int64_t{1700000000} * 1000);
        auto recent = s.recent_results("ping", 10);
        ASSERT_EQ(recent.size(), 2u);
        EXPECT_EQ(recent[0].uuid, "old2");
        EXPECT_EQ(recent[0].ended_ms, int64_t{1700000100} * 1000);
        EXPECT_EQ(recent[1].uuid, "old1");
        EXPECT_EQ(s.list_objects("group").size(), 1u);
        // A new result is newer than every old one.
        s.put_result({"new", "ping", "{}", "{}", 5, 6});
        recent = s.recent_results("", 10);
        ASSERT_EQ(recent.size(), 3u);
        EXPECT_EQ(recent[0].uuid, "new");
        EXPECT_EQ(recent[0].ended_ms, 6);
        // The dashboard reads the old row as a finished run.
        auto d = parse_json(dashboard_runs({}, recent, 10));
        ASSERT_EQ(d["runs"].Size(), 3u);
        EXPECT_TRUE(d["runs"][2]["done"].GetBool());
    }
    // The columns are there now; opening again does not add them twice.
    {
        sqlite3 *db = nullptr;
        ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
        sqlite3_stmt *st = nullptr;
        ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA table_info(results)", -1, &st,
                                     nullptr),
                  SQLITE_OK);
        std::vector<std::string> cols;
        while (sqlite3_step(st) == SQLITE_ROW)
            cols.push_back(
                reinterpret_cast<const char *>(sqlite3_column_text(st, 1)));
        sqlite3_finalize(st);
        sqlite3_close(db);
        EXPECT_EQ(cols, (std::vector<std::string>{"uuid", "label", "statuses",
                                                  "cleandata", "created",
                                                  "started_ms", "ended_ms"}));
    }
    Store again(path);
    EXPECT_EQ(again.recent_results("", 10).size(), 3u);
    EXPECT_EQ(again.get_result("old1")->ended_ms, int64_t{1700000000} * 1000);
}

TEST(StoreResults, PingFailsWhenTheFileIsUnusable)
{
    TempDir dir;
    const std::string path = dir.path() + "/todd.db";
    Store s(path);
    EXPECT_NO_THROW(s.ping());
    sqlite3 *db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "DROP TABLE objects", nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
    EXPECT_THROW(s.ping(), StoreError);
}
