// SPDX-License-Identifier: Apache-2.0
// The task vectors of the Go agent, played against an agent harness. Shared
// by the loopback and the broker suites: same bytes, same expectations.
#pragma once

#include "agent_harness.hpp"

namespace todd::test {

/** hand-task-keyvalue stored; hand-task-setgroup moves the group queue,
 *  proven by hand-grouptask-keyvalue published onto that queue; the Go
 *  server's KeyValue+groupName form moves it too. No responses. */
inline void scenario_keyvalue_and_group(AgentHarness &h)
{
    h.publish_task(vector_text("hand-task-keyvalue.json"));
    ASSERT_TRUE(eventually([&] {
        return h.agent->key_value("handkey") ==
               std::optional<std::string>("handvalue");
    }));

    h.publish_task(vector_text("hand-task-setgroup.json"));
    ASSERT_TRUE(eventually([&] { return h.agent->group() == "handgroup"; }));
    h.publish("handgroup", vector_text("hand-grouptask-keyvalue.json"));
    ASSERT_TRUE(eventually([&] {
        return h.agent->key_value("viaGroup") ==
               std::optional<std::string>("x");
    })) << "a task published on the new group queue was not processed";

    // What the Go server really sends: {"type":"KeyValue","groupName":...}.
    h.publish_task(vector_text("go-server-task-setgroup.json"));
    ASSERT_TRUE(eventually([&] { return h.agent->group() == "loopgroup"; }));
    EXPECT_FALSE(h.agent->key_value("").has_value())
        << "the group message must not be stored as an empty KeyValue";
    h.publish_task(vector_text("go-server-task-setgroup-empty.json"));
    ASSERT_TRUE(eventually([&] { return h.agent->group().empty(); }));
    EXPECT_EQ(h.responses.count([&](const std::string &p) {
        return p.find(h.uuid()) != std::string::npos;
    }),
              0u)
        << "KeyValue and group tasks get no response";
}

/** hand-task-bogus-type and hand-task-not-json are logged and rejected,
 *  not redelivered; the agent goes on with the next task. */
inline void scenario_rejects(AgentHarness &h, LogCapture &logs)
{
    h.publish_task(vector_text("hand-task-bogus-type.json"));
    h.publish_task(
        read_file(std::string(TODD_VECTORS_DIR) + "/hand-task-not-json.txt"));
    h.publish_task(vector_text("hand-task-keyvalue.json"));
    ASSERT_TRUE(
        eventually([&] { return h.agent->key_value("handkey").has_value(); }));
    ASSERT_TRUE(eventually([&] {
        return logs.count("queue \"" + h.uuid() + "\": rejecting") >= 2;
    }));
    // A later task is processed after both, so a redelivery would have
    // come before it: send one more and check the count did not grow.
    h.publish_task(R"({"type":"KeyValue","key":"after","value":"1"})");
    ASSERT_TRUE(
        eventually([&] { return h.agent->key_value("after").has_value(); }));
    EXPECT_EQ(logs.count("queue \"" + h.uuid() + "\": rejecting"), 2u);
    EXPECT_GE(logs.count("Bogus"), 1u) << "the reason names the type";
}

/** hand-task-installtestrun-missing-testlet -> go-agent-response-status-fail
 *  byte for byte apart from the agent UUID. */
inline void scenario_missing_testlet(AgentHarness &h, LogCapture &logs)
{
    std::string expected = vector_text("go-agent-response-status-fail.json");
    expected = replace_all(expected, vector_agent_uuid(expected), h.uuid());
    h.publish_task(
        vector_text("hand-task-installtestrun-missing-testlet.json"));
    auto got = h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "hand-test-0002", "fail");
    });
    ASSERT_TRUE(got) << "no fail status for the missing testlet";
    EXPECT_EQ(*got, expected);
    EXPECT_GE(logs.count("nosuchtestlet"), 1u) << "the reason is logged";
}

/** Test data must have the Go agent's shape: a JSON string holding
 *  {target: {"avg_latency_ms": number, "packet_loss": number}}. */
inline void expect_ping_data_like_go(const std::string &raw,
                                     const std::string &go_vector)
{
    auto ours = std::get<msg::TestDataResponse>(msg::decode_response(raw));
    auto theirs =
        std::get<msg::TestDataResponse>(msg::decode_response(go_vector));
    rapidjson::Document a, b;
    a.Parse(ours.test_data.c_str());
    b.Parse(theirs.test_data.c_str());
    ASSERT_FALSE(a.HasParseError()) << ours.test_data;
    ASSERT_TRUE(a.IsObject());
    ASSERT_EQ(a.MemberCount(), b.MemberCount()) << ours.test_data;
    for (auto it = b.MemberBegin(); it != b.MemberEnd(); ++it) {
        ASSERT_TRUE(a.HasMember(it->name)) << ours.test_data;
        const auto &mine = a[it->name];
        ASSERT_TRUE(mine.IsObject());
        for (auto m = it->value.MemberBegin(); m != it->value.MemberEnd();
             ++m) {
            ASSERT_TRUE(mine.HasMember(m->name))
                << "metric " << m->name.GetString()
                << " missing: " << ours.test_data;
            EXPECT_TRUE(mine[m->name].IsNumber()) << ours.test_data;
        }
        EXPECT_EQ(mine["packet_loss"].GetDouble(), 0.0) << ours.test_data;
        EXPECT_GT(mine["avg_latency_ms"].GetDouble(), 0.0) << ours.test_data;
    }
    // Key order and field names as Go: agent_uuid, type, test_uuid, test_data.
    EXPECT_EQ(raw.rfind("{\"agent_uuid\":", 0), 0u) << raw;
    EXPECT_NE(raw.find("\",\"type\":\"TestData\",\"test_uuid\":\""),
              std::string::npos)
        << raw;
    EXPECT_EQ(raw.substr(raw.size() - 2), "\"}");
}

/** The hand-driven ping run: install -> ready, execute -> testing and
 *  TestData (re-sent until deleted), delete -> no more re-sends. */
inline void scenario_ping_run(AgentHarness &h)
{
    const std::string test = "hand-test-0001";
    auto expect = [&](const std::string &vec) {
        std::string e = vector_text(vec);
        return replace_all(e, vector_agent_uuid(e), h.uuid());
    };
    h.publish_task(vector_text("hand-task-installtestrun.json"));
    auto ready = h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), test, "ready");
    });
    ASSERT_TRUE(ready) << "no ready status";
    EXPECT_EQ(*ready, expect("go-agent-response-status-ready-handtest.json"));

    h.publish_task(vector_text("hand-task-executetestrun.json"));
    auto testing = h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), test, "testing");
    });
    ASSERT_TRUE(testing);
    EXPECT_EQ(
        *testing,
        replace_all(expect("go-agent-response-status-ready-handtest.json"),
                    "\"ready\"", "\"testing\""));
    auto data = h.responses.wait_for(
        [&](const std::string &p) { return is_data(p, h.uuid(), test); });
    ASSERT_TRUE(data) << "no TestData";
    expect_ping_data_like_go(
        *data, vector_text("go-agent-response-testdata-handtest.json"));

    // Re-sent (same bytes) until DeleteTestData arrives.
    ASSERT_TRUE(eventually([&] {
        return h.responses.count(
                   [&](const std::string &p) { return p == *data; }) >= 2;
    })) << "TestData was not re-sent";
    h.publish_task(vector_text("hand-task-deletetestdata.json"));
    // The run is gone, so no re-send timer can find its data any more.
    ASSERT_TRUE(eventually([&] { return !h.agent->has_test_run(test); }));
    size_t sent =
        h.responses.count([&](const std::string &p) { return p == *data; });
    // A second run is the clock, not a sleep: its data is re-sent on the
    // same schedule (100 ms doubling to the 400 ms cap), so by its fourth
    // send more than a whole re-send period of the deleted run has passed
    // since the delete, and anything already on its way has arrived.
    const std::string clock = "hand-test-0003";
    auto second = [&](const std::string &vec) {
        return replace_all(vector_text(vec), test, clock);
    };
    h.publish_task(second("hand-task-installtestrun.json"));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), clock, "ready");
    }));
    h.publish_task(second("hand-task-executetestrun.json"));
    ASSERT_TRUE(eventually([&] {
        return h.responses.count([&](const std::string &p) {
            return is_data(p, h.uuid(), clock);
        }) >= 4;
    })) << "the second run's data was not re-sent";
    EXPECT_EQ(
        h.responses.count([&](const std::string &p) { return p == *data; }),
        sent)
        << "TestData still re-sent after DeleteTestData";
    h.publish_task(second("hand-task-deletetestdata.json"));
    ASSERT_TRUE(eventually([&] { return !h.agent->has_test_run(clock); }));
    EXPECT_EQ(h.responses.count([&](const std::string &p) {
        return is_status(p, h.uuid(), test, "fail");
    }),
              0u);
}

} // namespace todd::test
