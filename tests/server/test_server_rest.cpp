// SPDX-License-Identifier: Apache-2.0
// todd-server's REST API without agents: exact bytes the Go CLI depends on
// (docs/todd-rest-api.md), malformed requests, persistence across a
// restart, and the config file reader.
#include "server_test_util.hpp"

#include <todd/core/config.hpp>
#include <todd_build_config.h>

#include <gtest/gtest.h>

using namespace todd;
using namespace todd::test;

namespace {

class Rest : public ::testing::Test {
  protected:
    void SetUp() override { start(); }
    void start()
    {
        cfg_ = test_server_config(dir_.path());
        srv_ = std::make_unique<server::Server>(cfg_, loopback_factory()());
        srv_->start();
        port_ = srv_->api_port();
    }
    HttpReply get(const std::string &t) { return http(port_, "GET", t); }
    HttpReply post(const std::string &t, const std::string &b)
    {
        return http(port_, "POST", t, b);
    }
    TempDir dir_;
    server::ServerConfig cfg_;
    std::unique_ptr<server::Server> srv_;
    uint16_t port_ = 0;
};

const std::string group_body =
    R"({"label":"loopgroup","type":"group","spec":{"group":"loopgroup","matches":[{"within_subnet":"127.0.0.0/8"}]}})";
const std::string ping_body =
    R"({"label":"ping-lo","type":"testrun","spec":{"targettype":"uncontrolled","source":{"app":"ping","args":"-c 3","name":"loopgroup"},"target":["127.0.0.1"]}})";
const std::string iperf_body =
    R"({"label":"test-iperf","type":"testrun","spec":{"targettype":"group","source":{"app":"iperf","args":"-c {{ target }}","name":"red"},"target":{"app":"iperf","args":"-s","name":"blue"}}})";

TEST_F(Rest, EmptyRegistryAndMapsAreJsonWithGoHeaders)
{
    auto a = get("/v1/agent");
    EXPECT_EQ(a.status, 200);
    EXPECT_EQ(a.reason, "OK");
    EXPECT_EQ(a.body, "[]");
    EXPECT_EQ(a.headers["content-type"], "text/plain; charset=utf-8");
    EXPECT_EQ(a.headers["content-length"], "2");
    EXPECT_TRUE(a.has("date"));
    EXPECT_EQ(get("/v1/groups").body, "{}");
    EXPECT_EQ(get("/v1/object/group").body, "[]");
    EXPECT_EQ(get("/v1/object/testrun").body, "[]");
    EXPECT_EQ(get("/v1/object/list").body, "[]");
}

TEST_F(Rest, UnknownPathsGetGoMux404)
{
    for (const char *p : {"/v1/object/all", "/v1/agent/", "/v1/object/group/",
                          "/", "/v2/agent"}) {
        auto r = get(p);
        EXPECT_EQ(r.status, 404) << p;
        EXPECT_EQ(r.body, "404 page not found\n") << p;
        EXPECT_EQ(r.headers["content-type"], "text/plain; charset=utf-8");
        EXPECT_EQ(r.headers["x-content-type-options"], "nosniff");
    }
}

TEST_F(Rest, CreateListDeleteWithExactBytes)
{
    auto c = post("/v1/object/create", group_body);
    EXPECT_EQ(c.status, 200);
    EXPECT_EQ(c.reason, "OK");
    EXPECT_EQ(c.body, "");
    EXPECT_EQ(c.headers["content-length"], "0");
    EXPECT_FALSE(c.has("content-type"));
    ASSERT_EQ(post("/v1/object/create", ping_body).status, 200);
    ASSERT_EQ(post("/v1/object/create", iperf_body).status, 200);

    EXPECT_EQ(get("/v1/object/group").body, R"([
  {
    "label": "loopgroup",
    "type": "group",
    "spec": {
      "group": "loopgroup",
      "matches": [
        {
          "within_subnet": "127.0.0.0/8"
        }
      ]
    }
  }
])");
    // Creation order; source/target maps sorted; the doc's example bytes.
    EXPECT_EQ(get("/v1/object/testrun").body, R"([
  {
    "label": "ping-lo",
    "type": "testrun",
    "spec": {
      "targettype": "uncontrolled",
      "source": {
        "app": "ping",
        "args": "-c 3",
        "name": "loopgroup"
      },
      "target": [
        "127.0.0.1"
      ]
    }
  },
  {
    "label": "test-iperf",
    "type": "testrun",
    "spec": {
      "targettype": "group",
      "source": {
        "app": "iperf",
        "args": "-c {{ target }}",
        "name": "red"
      },
      "target": {
        "app": "iperf",
        "args": "-s",
        "name": "blue"
      }
    }
  }
])");
    // The type is the raw URI's 4th piece, query included (as ToDD).
    EXPECT_EQ(get("/v1/object/group?x=1").body, "[]");

    auto d =
        post("/v1/object/delete", R"({"label":"ping-lo","type":"testrun"})");
    EXPECT_EQ(d.status, 200);
    EXPECT_EQ(d.reason, "OK");
    EXPECT_EQ(d.body, "");
    EXPECT_EQ(get("/v1/object/testrun").body.find("ping-lo"),
              std::string::npos);
    // A delete of an object that is not there: 404 (docs/server.md).
    auto again =
        post("/v1/object/delete", R"({"label":"ping-lo","type":"testrun"})");
    EXPECT_EQ(again.status, 404) << again.body;
    EXPECT_EQ(again.headers["x-content-type-options"], "nosniff");
    EXPECT_EQ(again.body.back(), '\n');
    // The same label under the other type is another object.
    EXPECT_EQ(
        post("/v1/object/delete", R"({"label":"loopgroup","type":"testrun"})")
            .status,
        404);
}

TEST_F(Rest, MalformedRequestsAreRefusedAndChangeNothing)
{
    ASSERT_EQ(post("/v1/object/create", group_body).status, 200);
    ASSERT_EQ(post("/v1/object/create", ping_body).status, 200);
    const std::string before_g = get("/v1/object/group").body;
    const std::string before_t = get("/v1/object/testrun").body;

    // ToDD deleted every object for these (issue #58).
    for (const std::string &body :
         {std::string(), std::string("not json"), std::string("{}"),
          std::string(R"({"type":"group"})"),
          std::string(R"({"label":5,"type":"group"})")}) {
        auto r = post("/v1/object/delete", body);
        EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
        EXPECT_EQ(r.headers["x-content-type-options"], "nosniff") << body;
        EXPECT_EQ(r.body.back(), '\n') << body;
    }
    EXPECT_EQ(get("/v1/object/delete").status, 400); // todd objects delete

    struct Case {
        std::string body, reason_part;
    };
    for (
        const Case &c : std::vector<Case>{
            {"", "empty"},
            {"{\"label\":", "invalid JSON"},
            {R"({"label":"x","type":"bogus","spec":{}})",
             "unknown object type"},
            {R"({"label":"","type":"group","spec":{}})", "label"},
            {R"({"label":"g","type":"group","spec":{"matches":[{"hostname":5}]}})",
             "must be a string"},
            {R"({"label":"g","type":"group","spec":{"matches":[{"within_subnet":"10.0.0.0/33"}]}})",
             "invalid CIDR"},
            {R"({"label":"g","type":"group","spec":{"matches":[{"within_subnet":"banana"}]}})",
             "invalid CIDR"},
            {R"({"label":"g","type":"group","spec":{"matches":[{"hostname":"a(b"}]}})",
             "invalid regular expression"},
            {R"({"label":"t","type":"testrun","spec":{"targettype":"group","source":{"name":"a","app":"x","args":""},"target":["1.2.3.4"]}})",
             "target"},
            {R"({"label":"t","type":"testrun","spec":{"targettype":"group","source":{"name":"a","app":"x","args":""},"target":{"name":"b","app":"y"}}})",
             "args"},
        }) {
        auto r = post("/v1/object/create", c.body);
        EXPECT_EQ(r.status, 400) << c.body;
        EXPECT_NE(r.body.find(c.reason_part), std::string::npos)
            << c.body << " -> " << r.body;
        EXPECT_EQ(r.body.back(), '\n');
    }
    // Unknown testrun names and bad run requests.
    auto nf = post("/v1/testrun/run", run_request_json("nope"));
    EXPECT_EQ(nf.status, 200);
    EXPECT_EQ(nf.body, "notfound");
    EXPECT_EQ(post("/v1/testrun/run", "{oops").status, 400);
    EXPECT_EQ(post("/v1/testrun/run", "").status, 400);
    EXPECT_EQ(post("/v1/testrun/run", R"({"testRunName":7})").status, 400);
    // No agents: not enough for the topology.
    auto it = post("/v1/testrun/run", run_request_json("ping-lo"));
    EXPECT_EQ(it.status, 200);
    EXPECT_EQ(it.body, "invalidtopology");

    auto td = get("/v1/testdata");
    EXPECT_EQ(td.status, 400);
    EXPECT_EQ(td.body, "Error, test UUID not provided.\n");
    td = get("/v1/testdata?testUuid=abc");
    EXPECT_EQ(td.status, 404);
    EXPECT_EQ(td.body, "Error, test UUID not found.\n");

    // Garbage HTTP does not take the server down.
    {
        StreamClient raw(port_); // any TCP client will do
        raw.ack();               // "ack\n" is not an HTTP request line
        auto status = raw.read_line();
        ASSERT_TRUE(status.has_value());
        EXPECT_EQ(status->rfind("HTTP/1.1 400 ", 0), 0u) << *status;
        // Malformed HTTP: the reply is the last thing on the connection.
        while (auto more = raw.read_line()) {
        }
        EXPECT_TRUE(raw.closed_by_server());
    }
    EXPECT_EQ(get("/v1/object/group").body, before_g);
    EXPECT_EQ(get("/v1/object/testrun").body, before_t);
}

TEST_F(Rest, ObjectsSurviveARestart)
{
    ASSERT_EQ(post("/v1/object/create", group_body).status, 200);
    ASSERT_EQ(post("/v1/object/create", ping_body).status, 200);
    const std::string g = get("/v1/object/group").body;
    const std::string t = get("/v1/object/testrun").body;
    srv_->stop();
    srv_.reset();
    start(); // same SQLite file
    EXPECT_EQ(get("/v1/object/group").body, g);
    EXPECT_EQ(get("/v1/object/testrun").body, t);
}

TEST_F(Rest, StreamWithoutRunSendsEmptyMapAndCloses)
{
    StreamClient s(srv_->stream_port());
    auto line = s.read_line();
    ASSERT_TRUE(line.has_value());
    EXPECT_EQ(*line, "{}");
    s.ack();
    EXPECT_TRUE(s.closed_by_server());
}

TEST(ServerConfig, ReadsToddServerCfgAndRefusesUnknownKeys)
{
    auto ini = core::parse_ini(R"(
[Comms]
Plugin = rabbitmq
User = guest
[API]
Host = 0.0.0.0
Port = 8080
StreamPort = 18081
[Assets]
IP = 0.0.0.0
Port = 8090
[DB]
Host = localhost
Port = 4001
Plugin = etcd
[TSDB]
Plugin = influxdb
[Grouping]
Interval = 10
[Testing]
Timeout = 30   # seconds
InstallTimeout = 2.5
[LocalResources]
DefaultInterface = lo
OptDir = /opt/todd/server
)",
                               "server.cfg");
    std::vector<std::string> notes;
    auto c = server::load_server_config(ini, &notes);
    EXPECT_EQ(c.api_host, "0.0.0.0");
    EXPECT_EQ(c.api_port, 8080);
    EXPECT_EQ(c.stream_port, 18081);
    EXPECT_EQ(c.assets_port, 8090);
    EXPECT_EQ(c.target_time_limit, 30);
    EXPECT_EQ(c.install_timeout, std::chrono::milliseconds(2500));
    EXPECT_EQ(c.advertised_addr, "127.0.0.1");
    EXPECT_EQ(c.opt_dir, "/opt/todd/server");
    EXPECT_EQ(notes.size(), 3u); // [DB], [TSDB], Interval

    // Defaults: REST on loopback.
    EXPECT_EQ(server::load_server_config(core::parse_ini("")).api_host,
              "127.0.0.1");
    try {
        server::load_server_config(
            core::parse_ini("[API]\nPrt = 1\n", "s.cfg"));
        FAIL() << "unknown key accepted";
    } catch (const core::ConfigError &e) {
        EXPECT_NE(std::string(e.what()).find("s.cfg:2"), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("prt"), std::string::npos);
    }
    // The shipped example.
    notes.clear();
    auto shipped = server::load_server_config(
        core::parse_ini_file(std::string(TODD_SOURCE_ROOT) +
                             "/share/server/server.cfg"),
        &notes);
    EXPECT_EQ(shipped.api_host, "127.0.0.1");
    EXPECT_EQ(shipped.assets_port, 8090);
    EXPECT_EQ(notes.size(), 3u);

    EXPECT_THROW(server::load_server_config(core::parse_ini("[Nope]\nx=1\n")),
                 core::ConfigError);
    EXPECT_THROW(
        server::load_server_config(core::parse_ini("[API]\nPort=http\n")),
        core::ConfigError);
}

} // namespace
