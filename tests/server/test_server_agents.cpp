// SPDX-License-Identifier: Apache-2.0
// todd-server with three real in-process agents over a real transport
// (loopback by default; the broker suites reuse these tests): groups,
// DownloadAsset round trips, ping test runs, an agent that vanishes in
// the middle of a run, the status stream's lock-step and several runs at
// once.
#include "server_test_agents.hpp"

#include <rapidjson/document.h>

#include <filesystem>
#include <fstream>

using namespace todd;
using namespace todd::test;

namespace {

rapidjson::Document parse(const std::string &s)
{
    rapidjson::Document d;
    d.Parse(s.c_str());
    return d;
}

std::string file_text(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in),
            std::istreambuf_iterator<char>()};
}

} // namespace

TEST_P(Agents, RegistryGroupsAndAssetsAfterDownload)
{
    // The agents fetched the server's testlet over HTTP, byte for byte.
    const std::string want = file_text(cfg_.opt_dir + "/assets/testlets/ping");
    for (auto &a : agents_)
        EXPECT_EQ(file_text(a->config().opt_dir + "/assets/testlets/ping"),
                  want);

    auto r = http(api_, "GET", "/v1/agent");
    ASSERT_EQ(r.status, 200);
    auto doc = parse(r.body);
    ASSERT_TRUE(doc.IsArray());
    ASSERT_EQ(doc.Size(), 3u);
    for (const auto &rec : doc.GetArray()) {
        ASSERT_TRUE(rec["Uuid"].IsString());
        EXPECT_EQ(rec["Uuid"].GetStringLength(), 64u);
        EXPECT_STREQ(rec["DefaultAddr"].GetString(), "127.0.0.1");
        ASSERT_TRUE(rec["Expires"].IsInt64());
        int64_t e = rec["Expires"].GetInt64();
        EXPECT_EQ(e % 1000000000, 0);
        EXPECT_GT(e, 0);
        // Whole seconds, rounded up (etcd TTL semantics).
        EXPECT_LE(e, (cfg_.agent_expiry.count() + 999) / 1000 * 1000000000);
        EXPECT_TRUE(rec["LocalTime"].IsString());
        EXPECT_TRUE(rec["Facts"]["Hostname"].IsArray());
        EXPECT_TRUE(rec["Testlets"]["ping"].IsString());
    }
    // Key order as Go writes the struct, 2-space indent.
    EXPECT_EQ(r.body.rfind("[\n  {\n    \"Uuid\": \"", 0), 0u) << r.body;
    // A prefix selects one agent.
    std::string id = agents_[1]->uuid();
    auto one =
        parse(http(api_, "GET", "/v1/agent?uuid=" + id.substr(0, 8)).body);
    ASSERT_EQ(one.Size(), 1u);
    EXPECT_EQ(std::string(one[0]["Uuid"].GetString()), id);

    auto g = parse(http(api_, "GET", "/v1/groups").body);
    ASSERT_TRUE(g.IsObject());
    EXPECT_EQ(g.MemberCount(), 3u);
    for (auto &a : agents_)
        EXPECT_STREQ(g[a->uuid().c_str()].GetString(), "loopgroup");

    // Deleting the group moves the agents out of it at once (event-driven).
    ASSERT_EQ(http(api_, "POST", "/v1/object/delete",
                   R"({"label":"loopgroup","type":"group"})")
                  .status,
              200);
    EXPECT_TRUE(wait_until([&] {
        for (auto &a : agents_)
            if (!a->group().empty())
                return false;
        return true;
    }));
    EXPECT_EQ(http(api_, "GET", "/v1/groups").body, "{}");
    // A hostname group (unanchored regex) takes them back.
    ASSERT_EQ(
        http(
            api_, "POST", "/v1/object/create",
            R"({"label":"byname","type":"group","spec":{"group":"byname","matches":[{"hostname":"."}]}})")
            .status,
        200);
    EXPECT_TRUE(wait_until([&] {
        for (auto &a : agents_)
            if (a->group() != "byname")
                return false;
        return true;
    }));
}

TEST_P(Agents, ChangedServerAssetIsDownloadedAgain)
{
    const std::string path = cfg_.opt_dir + "/assets/testlets/ping";
    std::string text = file_text(path) + "# changed on the server\n";
    write_script(path, text);
    // inotify updates the map; each agent gets one new DownloadAsset on
    // its next advert.
    EXPECT_TRUE(wait_until(
        [&] {
            bool all = true;
            for (auto &a : agents_)
                if (file_text(a->config().opt_dir + "/assets/testlets/ping") !=
                    text) {
                    all = false;
                    a->advertise_now();
                }
            return all;
        },
        30s));
}

TEST_P(Agents, PingRunHasResultsFromAllThree)
{
    ASSERT_EQ(http(api_, "POST", "/v1/object/create",
                   ping_testrun_json("ping-lo", "loopgroup"))
                  .status,
              200);
    RunOutcome o = run_and_follow(api_, stream_, "ping-lo");
    ASSERT_EQ(o.uuid.size(), 64u) << o.uuid;
    ASSERT_FALSE(o.lines.empty());
    // The first line names all three participants; the last has all
    // finished.
    auto first = parse(o.lines.front());
    ASSERT_TRUE(first.IsObject()) << o.lines.front();
    EXPECT_EQ(first.MemberCount(), 3u);
    auto last = parse(o.lines.back());
    for (auto &a : agents_)
        EXPECT_STREQ(last[a->uuid().c_str()].GetString(), "finished")
            << o.lines.back();

    ASSERT_EQ(o.result_status, 200);
    auto res = parse(o.result);
    ASSERT_TRUE(res.IsObject()) << o.result;
    EXPECT_EQ(res.MemberCount(), 3u) << o.result;
    for (auto &a : agents_) {
        ASSERT_TRUE(res.HasMember(a->uuid().c_str())) << o.result;
        const auto &m = res[a->uuid().c_str()]["127.0.0.1"];
        ASSERT_TRUE(m.IsObject()) << o.result;
        EXPECT_TRUE(m["packet_loss"].IsNumber()) << o.result;
        EXPECT_EQ(m["packet_loss"].GetDouble(), 0.0) << o.result;
        EXPECT_TRUE(m["avg_latency_ms"].IsNumber()) << o.result;
    }
    auto st =
        parse(http(api_, "GET", "/v1/testrun/status?testUuid=" + o.uuid).body);
    EXPECT_TRUE(st["done"].GetBool());
    for (auto &a : agents_)
        EXPECT_STREQ(st["agents"][a->uuid().c_str()]["status"].GetString(),
                     "finished");

    // The result and the objects survive a server restart.
    srv_->stop();
    srv_.reset();
    start_server();
    auto again = http(api_, "GET", "/v1/testdata?testUuid=" + o.uuid);
    EXPECT_EQ(again.status, 200);
    EXPECT_EQ(again.body, o.result);
    EXPECT_NE(http(api_, "GET", "/v1/object/testrun").body.find("ping-lo"),
              std::string::npos);
}

TEST_P(Agents, AgentStoppedMidRunIsReportedFailed)
{
    // Each agent's testlet waits until the test removes a file, so the
    // run is surely in progress when one agent is stopped.
    const std::string gate = dir_ / "gate";
    write_gated_testlet(cfg_.opt_dir + "/assets/testlets/gated", gate);
    for (auto &a : agents_)
        a->advertise_now();
    ASSERT_EQ(http(api_, "POST", "/v1/object/create",
                   ping_testrun_json("gated-run", "loopgroup", "gated", ""))
                  .status,
              200);
    // Wait until every agent has the new testlet (registered again).
    ASSERT_TRUE(agents_have_testlet(agents_, "gated"));
    auto r =
        http(api_, "POST", "/v1/testrun/run", run_request_json("gated-run"));
    ASSERT_EQ(r.body.size(), 64u) << r.body;
    const std::string uuid = r.body;
    auto testing = [&] {
        auto st = parse(
            http(api_, "GET", "/v1/testrun/status?testUuid=" + uuid).body);
        // Every agent of the group, not "all of none".
        if (!st.IsObject() || !st.HasMember("agents") ||
            st["agents"].MemberCount() != agents_.size())
            return false;
        for (const auto &m : st["agents"].GetObject())
            if (std::string(m.value["status"].GetString()) != "testing")
                return false;
        return true;
    };
    ASSERT_TRUE(wait_until(testing, 30s));
    const std::string gone = agents_[0]->uuid();
    agents_[0]->stop();
    std::filesystem::remove(gate);

    // Bounded: the run ends once the stopped agent expires.
    HttpReply d;
    ASSERT_TRUE(wait_until(
        [&] {
            d = http(api_, "GET", "/v1/testdata?testUuid=" + uuid);
            return d.status == 200;
        },
        30s));
    auto res = parse(d.body);
    EXPECT_EQ(res.MemberCount(), 2u) << d.body;
    EXPECT_FALSE(res.HasMember(gone.c_str()));
    for (int i = 1; i < 3; ++i)
        EXPECT_EQ(res[agents_[i]->uuid().c_str()]["127.0.0.1"]["ok"].GetInt(),
                  1)
            << d.body;
    auto st =
        parse(http(api_, "GET", "/v1/testrun/status?testUuid=" + uuid).body);
    EXPECT_STREQ(st["agents"][gone.c_str()]["status"].GetString(), "fail");
    EXPECT_NE(std::string(st["agents"][gone.c_str()]["reason"].GetString())
                  .find("vanished"),
              std::string::npos);
    // The server is still serving.
    EXPECT_EQ(http(api_, "GET", "/v1/groups").status, 200);
}

TEST_P(Agents, StatusStreamIsLockStepAndRunsCanOverlap)
{
    ASSERT_EQ(http(api_, "POST", "/v1/object/create",
                   ping_testrun_json("ping-lo", "loopgroup"))
                  .status,
              200);
    auto a = http(api_, "POST", "/v1/testrun/run", run_request_json("ping-lo"));
    auto b = http(api_, "POST", "/v1/testrun/run", run_request_json("ping-lo"));
    ASSERT_EQ(a.body.size(), 64u);
    ASSERT_EQ(b.body.size(), 64u);
    ASSERT_NE(a.body, b.body);

    StreamClient s(stream_); // gets the oldest run without a client: a
    auto first = s.read_line();
    ASSERT_TRUE(first.has_value());
    // Without an ack nothing more is sent, even when both runs end.
    for (const auto &id : {a.body, b.body})
        ASSERT_TRUE(wait_until([&] {
            return http(api_, "GET", "/v1/testdata?testUuid=" + id).status ==
                   200;
        }));
    EXPECT_FALSE(s.read_line(200ms).has_value());
    s.ack();
    auto final_line = s.read_line();
    ASSERT_TRUE(final_line.has_value());
    auto fin = parse(*final_line);
    ASSERT_EQ(fin.MemberCount(), 3u);
    for (const auto &m : fin.GetObject())
        EXPECT_STREQ(m.value.GetString(), "finished");
    s.ack();
    EXPECT_TRUE(s.closed_by_server());

    // The second run is still offered to the next client (it ended within
    // the linger time), with its final statuses.
    StreamClient s2(stream_);
    auto l2 = s2.read_line();
    ASSERT_TRUE(l2.has_value());
    EXPECT_EQ(parse(*l2).MemberCount(), 3u);

    for (const auto &id : {a.body, b.body})
        EXPECT_EQ(parse(http(api_, "GET", "/v1/testdata?testUuid=" + id).body)
                      .MemberCount(),
                  3u);
}

TEST_P(Agents, StreamClientThatNeverAcksIsDropped)
{
    ASSERT_EQ(http(api_, "POST", "/v1/object/create",
                   ping_testrun_json("ping-lo", "loopgroup"))
                  .status,
              200);
    auto a = http(api_, "POST", "/v1/testrun/run", run_request_json("ping-lo"));
    ASSERT_EQ(a.body.size(), 64u);
    StreamClient s(stream_);
    ASSERT_TRUE(s.read_line().has_value());
    EXPECT_TRUE(s.closed_by_server(30s)); // stream_ack_timeout is 1 s here
}

TEST_P(Agents, GroupToGroupRunStartsTargetsFirst)
{
    // Two more agents with their own host names, in groups red and blue.
    ASSERT_EQ(http(api_, "POST", "/v1/object/delete",
                   R"({"label":"loopgroup","type":"group"})")
                  .status,
              200);
    const std::string testlet =
        "#!/bin/sh\n[ \"$1\" = check ] && { echo 'Check mode PASSED'; "
        "exit 0; }\necho \"{\\\"target\\\":\\\"$1\\\"}\"\n";
    write_script(cfg_.opt_dir + "/assets/testlets/echo", testlet);
    for (
        auto *g :
        {R"({"label":"red","type":"group","spec":{"group":"red","matches":[{"hostname":"^red-"}]}})",
         R"({"label":"blue","type":"group","spec":{"group":"blue","matches":[{"hostname":"^blue-"}]}})"})
        ASSERT_EQ(http(api_, "POST", "/v1/object/create", g).status, 200);
    agent::AgentConfig ac;
    tweak_agent(ac);
    agents_.push_back(make_agent(factory_, dir_.path(), 10, &ac, "red-1"));
    agents_.push_back(make_agent(factory_, dir_.path(), 11, &ac, "blue-1"));
    agent::Agent &red = *agents_[3], &blue = *agents_[4];
    red.start();
    blue.start();
    // Both have the new testlet (the server's map may lag the file by its
    // inotify settle time, then they get a DownloadAsset) and their group.
    ASSERT_TRUE(wait_until(
        [&] {
            for (agent::Agent *a : {&red, &blue})
                if (!std::filesystem::exists(a->config().opt_dir +
                                             "/assets/testlets/echo")) {
                    a->advertise_now();
                    return false;
                }
            return red.group() == "red" && blue.group() == "blue";
        },
        30s));
    ASSERT_EQ(
        http(
            api_, "POST", "/v1/object/create",
            R"({"label":"r2b","type":"testrun","spec":{"targettype":"group","source":{"app":"echo","args":"","name":"red"},"target":{"app":"echo","args":"-s","name":"blue"}}})")
            .status,
        200);
    RunOutcome o = run_and_follow(api_, stream_, "r2b");
    ASSERT_EQ(o.result_status, 200) << o.uuid;
    // Only the source reports; it tested the target agent's address.
    EXPECT_EQ(o.result, "{\"" + red.uuid() +
                            "\":{\"127.0.0.1\":{\"target\":\"127.0.0.1\"}}}");
    auto st =
        parse(http(api_, "GET", "/v1/testrun/status?testUuid=" + o.uuid).body);
    EXPECT_STREQ(st["agents"][blue.uuid().c_str()]["role"].GetString(),
                 "target");
    EXPECT_STREQ(st["agents"][blue.uuid().c_str()]["status"].GetString(),
                 "finished");
    // Same group as source and target: no sources.
    ASSERT_EQ(
        http(
            api_, "POST", "/v1/object/create",
            R"({"label":"r2r","type":"testrun","spec":{"targettype":"group","source":{"app":"echo","args":"","name":"red"},"target":{"app":"echo","args":"","name":"red"}}})")
            .status,
        200);
    EXPECT_EQ(
        http(api_, "POST", "/v1/testrun/run", run_request_json("r2r")).body,
        "invalidtopology");
}
