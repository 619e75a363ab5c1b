// SPDX-License-Identifier: Apache-2.0
// todd-server against hostile input that used to crash it: REST bodies and
// TestData nested 500 000 levels deep (refused naming the bound), and a
// 100 000-character hostname fact matched against backtracking-prone group
// patterns (dropped by the fact bound; RE2 matches in linear time). The
// server keeps serving afterwards in every case.
#include "server_test_agents.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/log.hpp>

#include <rapidjson/document.h>

#include <filesystem>
#include <fstream>
#include <mutex>

using namespace todd;
using namespace todd::test;

namespace {

std::string arrays(size_t n)
{
    return std::string(n, '[') + std::string(n, ']');
}

rapidjson::Document parse(const std::string &s)
{
    rapidjson::Document d;
    d.Parse(s.c_str());
    return d;
}

/** Collects log lines while alive (thread-safe). */
class LogCapture {
  public:
    LogCapture()
    {
        prev_ = log::set_sink(
            [this](log::Level, std::string_view c, std::string_view m) {
                std::lock_guard lk(mu_);
                lines_.push_back(std::string(c) + ": " + std::string(m));
            });
    }
    ~LogCapture() { log::set_sink(prev_); }
    bool has(const std::string &a, const std::string &b = "") const
    {
        std::lock_guard lk(mu_);
        for (const auto &l : lines_)
            if (l.find(a) != std::string::npos &&
                l.find(b) != std::string::npos)
                return true;
        return false;
    }

  private:
    log::Sink prev_;
    mutable std::mutex mu_;
    std::vector<std::string> lines_;
};

class HostileRest : public ::testing::Test {
  protected:
    void SetUp() override
    {
        cfg_ = test_server_config(dir_.path());
        srv_ = std::make_unique<server::Server>(cfg_, loopback_factory()());
        srv_->start();
        port_ = srv_->api_port();
    }
    TempDir dir_;
    server::ServerConfig cfg_;
    std::unique_ptr<server::Server> srv_;
    uint16_t port_ = 0;
};

TEST_F(HostileRest, BodiesNested500000LevelsGet400NamingTheBound)
{
    const std::string deep = arrays(500000); // 1 000 000 bytes, < 1 MiB
    std::string deep_obj;
    for (int i = 0; i < 200000; ++i)
        deep_obj += "{\"a\":";
    for (const char *target :
         {"/v1/object/create", "/v1/object/delete", "/v1/testrun/run"}) {
        for (const std::string *body :
             std::vector<const std::string *>{&deep, &deep_obj}) {
            auto r = http(port_, "POST", target, *body);
            EXPECT_EQ(r.status, 400) << target;
            EXPECT_NE(r.body.find("nesting deeper than 64 levels"),
                      std::string::npos)
                << target << " -> " << r.body;
        }
    }
    // At the bound is parsed (the unknown key is then dropped, as Go does).
    auto edge =
        http(port_, "POST", "/v1/object/create",
             "{\"label\":\"x\",\"type\":\"group\",\"x\":" + arrays(63) + "}");
    EXPECT_EQ(edge.status, 200) << edge.body;
    // Still serving.
    EXPECT_EQ(http(port_, "GET", "/v1/agent").body, "[]");
    EXPECT_NE(http(port_, "GET", "/v1/object/group").body.find("\"x\""),
              std::string::npos);
}

class HostileAgents : public AgentsFixture, public ::testing::Test {
  protected:
    TransportFactory transport_factory() override { return loopback_factory(); }
    void SetUp() override { AgentsFixture::SetUp(); }
    void TearDown() override { AgentsFixture::TearDown(); }
};

TEST_F(HostileAgents, DeepTestDataFailsOnlyItsAgentAndIsLogged)
{
    // The testlet waits for a file to vanish, so the crafted TestData
    // surely arrives while the agents are testing.
    const std::string gate = dir_ / "gate";
    write_gated_testlet(cfg_.opt_dir + "/assets/testlets/gated", gate);
    ASSERT_EQ(http(api_, "POST", "/v1/object/create",
                   ping_testrun_json("gated-run", "loopgroup", "gated", ""))
                  .status,
              200);
    ASSERT_TRUE(agents_have_testlet(agents_, "gated"));
    auto r =
        http(api_, "POST", "/v1/testrun/run", run_request_json("gated-run"));
    ASSERT_EQ(r.body.size(), 64u) << r.body;
    const std::string uuid = r.body;
    ASSERT_TRUE(wait_until(
        [&] {
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
        },
        30s));

    // What a hostile peer on the transport publishes in agent 0's name.
    LogCapture logs;
    const std::string victim = agents_[0]->uuid();
    core::Comms fake(factory_());
    fake.start();
    fake.send_response(msg::TestDataResponse{
        victim, uuid, "{\"127.0.0.1\":" + arrays(500000) + "}"});
    ASSERT_TRUE(wait_until([&] {
        return logs.has("agent " + victim + " failed: invalid test data",
                        "nesting deeper than 63 levels");
    })) << "no log line for the refused test data";
    EXPECT_EQ(http(api_, "GET", "/v1/groups").status, 200);

    std::filesystem::remove(gate);
    HttpReply d;
    ASSERT_TRUE(wait_until(
        [&] {
            d = http(api_, "GET", "/v1/testdata?testUuid=" + uuid);
            return d.status == 200;
        },
        30s));
    auto res = parse(d.body);
    ASSERT_TRUE(res.IsObject()) << d.body;
    EXPECT_FALSE(res.HasMember(victim.c_str())) << d.body;
    for (int i = 1; i < 3; ++i)
        EXPECT_EQ(res[agents_[i]->uuid().c_str()]["127.0.0.1"]["ok"].GetInt(),
                  1)
            << d.body;
    auto st =
        parse(http(api_, "GET", "/v1/testrun/status?testUuid=" + uuid).body);
    EXPECT_STREQ(st["agents"][victim.c_str()]["status"].GetString(), "fail");
    EXPECT_NE(std::string(st["agents"][victim.c_str()]["reason"].GetString())
                  .find("nesting deeper than 63 levels"),
              std::string::npos);
}

TEST(HostileFacts, LongHostnameIsDroppedAndPatternsRunInLinearTime)
{
    LogCapture logs;
    TempDir dir;
    auto cfg = test_server_config(dir.path());
    auto factory = loopback_factory();
    server::Server srv(cfg, factory());
    srv.start();
    const uint16_t api = srv.api_port();
    // Created in this order; the first match wins. Both patterns take
    // exponential time in a backtracking engine on "aaaa...!".
    const auto group = [](const std::string &label, const std::string &m) {
        return "{\"label\":\"" + label + "\",\"type\":\"group\",\"spec\":{" +
               "\"group\":\"" + label + "\",\"matches\":[" + m + "]}}";
    };
    ASSERT_EQ(http(api, "POST", "/v1/object/create",
                   group("nested", R"({"hostname":"^(a+)+$"})"))
                  .status,
              200);
    ASSERT_EQ(http(api, "POST", "/v1/object/create",
                   group("alt", R"({"hostname":"(a|aa)*b"})"))
                  .status,
              200);
    ASSERT_EQ(http(api, "POST", "/v1/object/create",
                   group("lo", R"({"within_subnet":"127.0.0.0/8"})"))
                  .status,
              200);

    const std::string huge(100000, 'a');
    const std::string near_miss = std::string(4000, 'a') + "!";
    const std::string fits(4096, 'a');
    std::vector<std::unique_ptr<agent::Agent>> agents;
    for (const std::string *h : {&huge, &near_miss, &fits}) {
        agent::AgentConfig ac;
        ac.advert_interval = 300ms;
        agents.push_back(make_agent(factory, dir.path(),
                                    static_cast<int>(agents.size()), &ac, *h));
        agents.back()->start();
    }
    ASSERT_TRUE(wait_until([&] { return srv.groups().size() == 3; }, 30s));
    auto groups = srv.groups();
    EXPECT_EQ(groups[agents[0]->uuid()], "lo");
    EXPECT_EQ(groups[agents[1]->uuid()], "lo");
    EXPECT_EQ(groups[agents[2]->uuid()], "nested");
    EXPECT_TRUE(logs.has("agent " + agents[0]->uuid() +
                         ": fact \"Hostname\" dropped: a value of 100000 "
                         "bytes is over the bound of 4096"));
    // Its other facts are kept; the server still answers.
    auto list = http(api, "GET", "/v1/agent?uuid=" + agents[0]->uuid());
    ASSERT_EQ(list.status, 200);
    auto doc = parse(list.body);
    ASSERT_TRUE(doc.IsArray() && doc.Size() == 1) << list.body.substr(0, 200);
    EXPECT_FALSE(doc[0]["Facts"].HasMember("Hostname"));
    EXPECT_TRUE(doc[0]["Facts"].HasMember("Addresses"));
    for (auto &a : agents)
        a->stop();
    srv.stop();
}

TEST_F(HostileRest, RegexSyntaxErrorsStillGetTheir400)
{
    for (const char *re : {"a(b", "(?=x)", "a{2,1}", "\\\\8"}) {
        auto r = http(
            port_, "POST", "/v1/object/create",
            std::string(
                R"({"label":"g","type":"group","spec":{"group":"g","matches":[{"hostname":")") +
                re + "\"}]}}");
        EXPECT_EQ(r.status, 400) << re;
        EXPECT_NE(r.body.find("spec.matches[0].hostname: invalid regular "
                              "expression"),
                  std::string::npos)
            << re << " -> " << r.body;
    }
    // A pattern too big for the memory bound is refused the same way.
    std::string big = "(((a{100}){100}){100})";
    auto r = http(
        port_, "POST", "/v1/object/create",
        R"({"label":"g","type":"group","spec":{"group":"g","matches":[{"hostname":")" +
            big + "\"}]}}");
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.body.find("invalid regular expression"), std::string::npos)
        << r.body;
    EXPECT_EQ(http(port_, "GET", "/v1/groups").status, 200);
}

} // namespace
