// SPDX-License-Identifier: Apache-2.0
// The message codec against the bytes the Go ToDD really sent (tests/vectors)
// and against the rules of Go's encoding/json that those bytes follow.
#include <todd/core/messages.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace fs = std::filesystem;
using namespace todd::msg;

namespace {

std::string read_file(const fs::path &p)
{
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<std::string> vector_files()
{
    std::vector<std::string> names;
    for (const auto &e : fs::directory_iterator(TODD_VECTORS_DIR))
        if (e.is_regular_file() && e.path().extension() != ".md")
            names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

bool contains(std::string_view hay, std::string_view needle)
{
    return hay.find(needle) != std::string_view::npos;
}

/** What a test expects a DecodeError to say, or "" for "must decode". */
std::string expected_refusal(const std::string &name)
{
    if (name == "hand-task-not-json.txt")
        return "task is not JSON";
    if (name == "hand-task-bogus-type.json")
        return "task: unknown type \"Bogus\"";
    return "";
}

Time at(int64_t ns)
{
    return Time(std::chrono::nanoseconds(ns));
}

std::string error_of(void (*f)(std::string_view), std::string_view in)
{
    try {
        f(in);
    } catch (const DecodeError &e) {
        return e.what();
    }
    return "<no error>";
}

void task(std::string_view s)
{
    (void)decode_task(s);
}
void advert(std::string_view s)
{
    (void)decode_advert(s);
}
void response(std::string_view s)
{
    (void)decode_response(s);
}

} // namespace

// -------------------------------------------------------------------------
// Every vector file: decode, re-encode, compare bytes (or a clear refusal)

class Vector : public ::testing::TestWithParam<std::string> {};

TEST_P(Vector, DecodesAndReencodesByteForByte)
{
    const std::string name = GetParam();
    const std::string bytes = read_file(fs::path(TODD_VECTORS_DIR) / name);
    ASSERT_FALSE(bytes.empty()) << name;

    const std::string refusal = expected_refusal(name);
    if (!refusal.empty()) {
        try {
            (void)decode_task(bytes);
            FAIL() << name << " was accepted";
        } catch (const DecodeError &e) {
            EXPECT_TRUE(contains(e.what(), refusal))
                << name << ": " << e.what();
        }
        return;
    }

    std::string again;
    if (contains(name, "advert"))
        again = encode(decode_advert(bytes));
    else if (contains(name, "response"))
        again = encode(decode_response(bytes));
    else if (contains(name, "task"))
        again = encode(decode_task(bytes));
    else
        FAIL() << "unclassified vector " << name
               << ": teach this test what it is";
    EXPECT_EQ(again, bytes) << name;
}

INSTANTIATE_TEST_SUITE_P(GoVectors, Vector, ::testing::ValuesIn(vector_files()),
                         [](const ::testing::TestParamInfo<std::string> &i) {
                             std::string n = i.param;
                             for (char &c : n)
                                 if (!std::isalnum(
                                         static_cast<unsigned char>(c)))
                                     c = '_';
                             return n;
                         });

TEST(Vectors, AllTwentyThreeMessageFilesAreCovered)
{
    EXPECT_EQ(vector_files().size(), 23u);
}

TEST(Vectors, DecodedValuesAreWhatGoMeant)
{
    const fs::path dir(TODD_VECTORS_DIR);
    const auto full =
        decode_advert(read_file(dir / "go-agent-advert-full.json"));
    EXPECT_EQ(full.uuid, "a6c65b80665399c590d8aad0f3e936a4f4a6cb48bc118abb42b4"
                         "139a18cbf650");
    EXPECT_EQ(full.default_addr, "127.0.0.1");
    EXPECT_EQ(full.expires_ns, 0);
    EXPECT_EQ(format_rfc3339(full.local_time),
              "2026-11-25T19:11:48.859551656Z");
    ASSERT_TRUE(full.facts.has_value());
    EXPECT_EQ(full.facts->at("Addresses"),
              (std::vector<std::string>{"127.0.0.1", "::1"}));
    EXPECT_EQ(full.testlets.size(), 2u);

    const auto bare =
        decode_advert(read_file(dir / "go-agent-advert-bare.json"));
    ASSERT_TRUE(bare.facts.has_value()); // {} is not null
    EXPECT_TRUE(bare.facts->empty());

    const auto grp =
        decode_task(read_file(dir / "go-server-task-setgroup.json"));
    ASSERT_TRUE(std::holds_alternative<SetGroupTask>(grp));
    EXPECT_EQ(std::get<SetGroupTask>(grp).group_name, "loopgroup");
    EXPECT_TRUE(std::get<SetGroupTask>(grp).as_keyvalue);

    const auto hs = decode_task(read_file(dir / "hand-task-setgroup.json"));
    ASSERT_TRUE(std::holds_alternative<SetGroupTask>(hs));
    EXPECT_FALSE(std::get<SetGroupTask>(hs).as_keyvalue);

    const auto kv =
        decode_task(read_file(dir / "hand-grouptask-keyvalue.json"));
    ASSERT_TRUE(std::holds_alternative<KeyValueTask>(kv));
    EXPECT_EQ(std::get<KeyValueTask>(kv).key, "viaGroup");

    const auto ex =
        decode_task(read_file(dir / "go-server-task-executetestrun.json"));
    EXPECT_EQ(std::get<ExecuteTestRunTask>(ex).time_limit, 30);

    const auto del =
        decode_task(read_file(dir / "go-server-task-deletetestdata.json"));
    EXPECT_EQ(
        std::get<DeleteTestDataTask>(del).test_uuid,
        "86100ed6dbf2cccf3290b3b6fecb4e07729f507c58754218a82720b409fdb971");

    const auto td =
        decode_response(read_file(dir / "go-agent-response-testdata.json"));
    ASSERT_TRUE(std::holds_alternative<TestDataResponse>(td));
    EXPECT_EQ(std::get<TestDataResponse>(td).test_data,
              "{\"127.0.0.1\":{\"avg_latency_ms\":0.0094139995,"
              "\"packet_loss\":0}}");
    EXPECT_EQ(type_name(td), "TestData");
}

// -------------------------------------------------------------------------
// Encoding rules

TEST(Encode, StringsAreEscapedAsGoDoes)
{
    EXPECT_EQ(go_quote("plain"), "\"plain\"");
    EXPECT_EQ(go_quote("http://<nil>:8090/a&b"),
              "\"http://\\u003cnil\\u003e:8090/a\\u0026b\"");
    EXPECT_EQ(go_quote("\"\\\n\r\t"), "\"\\\"\\\\\\n\\r\\t\"");
    EXPECT_EQ(go_quote(std::string("\x01\b\f\x1f\x7f", 5)),
              "\"\\u0001\\u0008\\u000c\\u001f\x7f\"");
    EXPECT_EQ(go_quote(std::string("a\0b", 3)), "\"a\\u0000b\"");
    EXPECT_EQ(go_quote("\xE2\x80\xA8x\xE2\x80\xA9"), "\"\\u2028x\\u2029\"");
    EXPECT_EQ(go_quote("é日本🙂"), "\"é日本🙂\"");
    EXPECT_EQ(go_quote("/'"), "\"/'\""); // Go leaves these alone
}

TEST(Encode, InvalidUtf8BecomesReplacementPerByte)
{
    EXPECT_EQ(go_quote("a\xff"
                       "b"),
              "\"a\\ufffdb\"");
    EXPECT_EQ(go_quote("\xE2\x82"), "\"\\ufffd\\ufffd\""); // truncated
    EXPECT_EQ(go_quote("\xED\xA0\x80"),
              "\"\\ufffd\\ufffd\\ufffd\"");                // surrogate
    EXPECT_EQ(go_quote("\xC0\x80"), "\"\\ufffd\\ufffd\""); // overlong
    EXPECT_EQ(go_quote("\xF4\x90\x80\x80"),
              "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); // above U+10FFFF
}

TEST(Encode, NilAndEmptyFollowGo)
{
    AgentAdvert a;
    a.uuid = "u";
    EXPECT_EQ(encode(a),
              "{\"Uuid\":\"u\",\"DefaultAddr\":\"\",\"Expires\":0,"
              "\"LocalTime\":\"1970-01-01T00:00:00Z\",\"Facts\":null,"
              "\"FactCollectors\":{},\"Testlets\":{}}");
    a.facts = Facts{};
    EXPECT_TRUE(contains(encode(a), "\"Facts\":{},"));
    a.facts = Facts{{"b", {"2"}}, {"B", {}}, {"a", {"x", "y"}}};
    a.fact_collectors = {{"z", "1"}, {"Z", "2"}};
    a.expires_ns = -5;
    const std::string e = encode(a);
    EXPECT_TRUE(contains(e, "\"Facts\":{\"B\":[],\"a\":[\"x\",\"y\"],"
                            "\"b\":[\"2\"]}"))
        << e;
    EXPECT_TRUE(contains(e, "\"FactCollectors\":{\"Z\":\"2\",\"z\":\"1\"}"));
    EXPECT_TRUE(contains(e, "\"Expires\":-5,"));
    EXPECT_EQ(decode_advert(e), a);

    EXPECT_EQ(encode(Task{InstallTestRunTask{{"t", {}, "ping", ""}}}),
              "{\"type\":\"InstallTestRun\",\"test_run\":{\"uuid\":\"t\","
              "\"targets\":null,\"testlet\":\"ping\",\"args\":\"\"}}");
    EXPECT_EQ(encode(Task{DownloadAssetTask{}}),
              "{\"type\":\"DownloadAsset\",\"assets\":null}");
}

TEST(Encode, EveryTaskAndResponseType)
{
    EXPECT_EQ(encode(Task{KeyValueTask{"k", "v"}}),
              "{\"type\":\"KeyValue\",\"key\":\"k\",\"value\":\"v\"}");
    EXPECT_EQ(encode(Task{SetGroupTask{"red", false}}),
              "{\"type\":\"SetGroup\",\"groupName\":\"red\"}");
    EXPECT_EQ(encode(Task{SetGroupTask{"red", true}}),
              "{\"type\":\"KeyValue\",\"groupName\":\"red\"}");
    EXPECT_EQ(encode(Task{ExecuteTestRunTask{"t", -3}}),
              "{\"type\":\"ExecuteTestRun\",\"test_uuid\":\"t\","
              "\"time_limit\":-3}");
    EXPECT_EQ(encode(Task{DeleteTestDataTask{"t"}}),
              "{\"type\":\"DeleteTestData\",\"key\":\"t\"}");
    EXPECT_EQ(encode(Response{AgentStatusResponse{"a", "t", "ready"}}),
              "{\"agent_uuid\":\"a\",\"type\":\"AgentStatus\","
              "\"test_uuid\":\"t\",\"status\":\"ready\"}");
    EXPECT_EQ(encode(Response{TestDataResponse{"a", "t", "{\"x\":\"<1>\"}"}}),
              "{\"agent_uuid\":\"a\",\"type\":\"TestData\",\"test_uuid\":"
              "\"t\",\"test_data\":\"{\\\"x\\\":\\\"\\u003c1\\u003e\\\"}\"}");
    for (const Task &t :
         {Task{DownloadAssetTask{{"http://x/testlets/a"}}},
          Task{KeyValueTask{"k", "v"}}, Task{SetGroupTask{"g", true}},
          Task{SetGroupTask{"g", false}},
          Task{InstallTestRunTask{{"u", {"1", "2"}, "ping", "-c 1"}}},
          Task{ExecuteTestRunTask{"u", 9}}, Task{DeleteTestDataTask{"u"}}})
        EXPECT_EQ(decode_task(encode(t)), t) << encode(t);
}

// -------------------------------------------------------------------------
// Time

TEST(Time, FormatDropsTrailingZerosOfTheFraction)
{
    EXPECT_EQ(format_rfc3339(at(0)), "1970-01-01T00:00:00Z");
    EXPECT_EQ(format_rfc3339(at(1'500'000'000)), "1970-01-01T00:00:01.5Z");
    EXPECT_EQ(format_rfc3339(at(1'000'000'001)),
              "1970-01-01T00:00:01.000000001Z");
    EXPECT_EQ(format_rfc3339(at(-1)), "1969-12-31T23:59:59.999999999Z");
    EXPECT_EQ(format_rfc3339(at(951782400'000000000)), // leap day
              "2000-02-29T00:00:00Z");
    EXPECT_EQ(format_rfc3339(Time::min()), "0001-01-01T00:00:00Z");
}

TEST(Time, ParseAcceptsRfc3339WithAnyOffset)
{
    EXPECT_EQ(parse_rfc3339("2018-12-06T06:45:12.1234567Z"),
              parse_rfc3339("2018-12-06T07:45:12.1234567+01:00"));
    EXPECT_EQ(format_rfc3339(parse_rfc3339("2018-12-06T01:15:12-05:30")),
              "2018-12-06T06:45:12Z");
    EXPECT_EQ(format_rfc3339(parse_rfc3339("2018-12-06T06:45:12.100Z")),
              "2018-12-06T06:45:12.1Z");
    // Beyond nanoseconds the extra digits are dropped.
    EXPECT_EQ(format_rfc3339(parse_rfc3339("2018-12-06T06:45:12.1234567899Z")),
              "2018-12-06T06:45:12.123456789Z");
    EXPECT_EQ(parse_rfc3339("2020-02-29T00:00:00Z"), at(1582934400'000000000));
    // Go's zero time round-trips; times outside int64 ns saturate.
    EXPECT_EQ(parse_rfc3339("0001-01-01T00:00:00Z"), Time::min());
    EXPECT_EQ(parse_rfc3339("9999-12-31T23:59:59Z"), Time::max());
}

TEST(Time, ParseRefusesWhatGoRefuses)
{
    for (const char *bad :
         {"", "2018-12-06", "2018-12-06 06:45:12Z", "2018-12-06T06:45:12",
          "2018-12-06t06:45:12Z", "2018-13-06T06:45:12Z",
          "2019-02-29T06:45:12Z", "2018-04-31T00:00:00Z",
          "2018-12-06T24:00:00Z", "2018-12-06T23:60:00Z",
          "2018-12-06T23:59:60Z", "2018-12-06T06:45:12.Z",
          "2018-12-06T06:45:12+0100", "2018-12-06T06:45:12+01:00x",
          "2018-12-06T06:45:12z", "18-12-06T06:45:12Z",
          "2018-1a-06T06:45:12Z"}) {
        try {
            (void)parse_rfc3339(bad);
            ADD_FAILURE() << "accepted " << bad;
        } catch (const DecodeError &e) {
            EXPECT_TRUE(contains(e.what(), "is not RFC 3339")) << e.what();
        }
    }
    const std::string err =
        error_of(advert, R"({"Uuid":"u","LocalTime":"2018-12-06 06:45:12Z"})");
    EXPECT_TRUE(contains(err, "advert: field \"LocalTime\": time "
                              "\"2018-12-06 06:45:12Z\" is not RFC 3339"))
        << err;
    EXPECT_TRUE(contains(error_of(advert, R"({"LocalTime":12})"),
                         "expected an RFC 3339 time string, got a number"));
}

// -------------------------------------------------------------------------
// Decoding: what a Go peer accepts

TEST(Decode, KeysAreCaseInsensitiveButUnderscoresCount)
{
    const auto t = decode_task(
        R"({"TYPE":"ExecuteTestRun","Test_UUID":"x","TIME_LIMIT":5,"testuuid":"no"})");
    EXPECT_EQ(t, Task(ExecuteTestRunTask{"x", 5}));
    const auto a =
        decode_advert(R"({"uuid":"u","DEFAULTADDR":"d","expires":7})");
    EXPECT_EQ(a.uuid, "u");
    EXPECT_EQ(a.default_addr, "d");
    EXPECT_EQ(a.expires_ns, 7);
    // Go's folding: the Kelvin sign matches k, the long s matches s.
    const auto kv = decode_task(
        "{\"type\":\"KeyValue\",\"\\u212aey\":\"k\",\"value\":\"v\"}");
    EXPECT_EQ(kv, Task(KeyValueTask{"k", "v"}));
    const auto st = decode_response(
        "{\"type\":\"AgentStatus\",\"\\u017ftatus\":\"ready\"}");
    EXPECT_EQ(std::get<AgentStatusResponse>(st).status, "ready");
    // Type values are matched exactly, as Go's switch does.
    EXPECT_TRUE(contains(error_of(task, R"({"type":"keyvalue"})"),
                         "unknown type \"keyvalue\""));
}

TEST(Decode, UnknownKeysIgnoredMissingKeysZeroLastWins)
{
    EXPECT_EQ(decode_task(R"({"type":"KeyValue","extra":{"a":[1,2,{"b":null}]},
                             "key":"k"})"),
              Task(KeyValueTask{"k", ""}));
    EXPECT_EQ(decode_task(R"({"type":"KeyValue","key":"a","Key":"b"})"),
              Task(KeyValueTask{"b", ""}));
    EXPECT_EQ(decode_task(R"({"type":"InstallTestRun"})"),
              Task(InstallTestRunTask{}));
    const auto a = decode_advert("{}");
    EXPECT_EQ(a, AgentAdvert{});
    EXPECT_FALSE(a.facts.has_value());
}

TEST(Decode, NullLeavesStringsAndNumbersAndClearsLists)
{
    EXPECT_EQ(decode_task(R"({"type":"KeyValue","key":"a","key":null})"),
              Task(KeyValueTask{"a", ""}));
    EXPECT_EQ(decode_task(R"({"type":"ExecuteTestRun","time_limit":4,
                             "time_limit":null})"),
              Task(ExecuteTestRunTask{"", 4}));
    EXPECT_EQ(decode_task(R"({"type":"DownloadAsset","assets":["a"],
                             "assets":null})"),
              Task(DownloadAssetTask{}));
    EXPECT_EQ(decode_task(R"({"type":"DownloadAsset","assets":["a",null]})"),
              Task(DownloadAssetTask{{"a", ""}}));
    EXPECT_EQ(decode_task(R"({"type":"InstallTestRun","test_run":null})"),
              Task(InstallTestRunTask{}));
    const auto a = decode_advert(
        R"({"Facts":null,"FactCollectors":null,"LocalTime":null,
            "Testlets":{"a":null}})");
    EXPECT_FALSE(a.facts.has_value());
    EXPECT_EQ(a.testlets, (Hashes{{"a", ""}}));
    EXPECT_EQ(a.local_time, Time{});
    // Go merges a repeated object into the map it already has.
    const auto m =
        decode_advert(R"({"Testlets":{"a":"1"},"testlets":{"b":"2"}})");
    EXPECT_EQ(m.testlets, (Hashes{{"a", "1"}, {"b", "2"}}));
}

TEST(Decode, GoServerGroupMessageIsSetGroup)
{
    EXPECT_EQ(decode_task(R"({"type":"KeyValue","groupName":"red"})"),
              Task(SetGroupTask{"red", true}));
    EXPECT_EQ(decode_task(R"({"type":"KeyValue","GROUPNAME":null})"),
              Task(SetGroupTask{"", true}));
    // With a key it is a real KeyValue (groupName then is an unknown key).
    EXPECT_EQ(decode_task(R"({"type":"KeyValue","groupName":"red","key":"k"})"),
              Task(KeyValueTask{"k", ""}));
    EXPECT_EQ(decode_task(R"({"type":"KeyValue"})"), Task(KeyValueTask{}));
}

TEST(Decode, InvalidUtf8InStringsBecomesReplacement)
{
    const auto t =
        decode_task("{\"type\":\"KeyValue\",\"key\":\"a\xff\",\"value\":"
                    "\"\xE2\x82\"}");
    EXPECT_EQ(t,
              Task(KeyValueTask{"a\xEF\xBF\xBD", "\xEF\xBF\xBD\xEF\xBF\xBD"}));
    EXPECT_EQ(encode(t),
              "{\"type\":\"KeyValue\",\"key\":\"a\xEF\xBF\xBD\",\"value\":"
              "\"\xEF\xBF\xBD\xEF\xBF\xBD\"}");
    EXPECT_EQ(decode_task(R"({"type":"KeyValue","key":"\u003c\u2028"})"),
              Task(KeyValueTask{"<\xE2\x80\xA8", ""}));
}

TEST(Decode, RefusesMalformedInputWithAClearReason)
{
    struct Case {
        void (*f)(std::string_view);
        std::string in, says;
    };
    const Case cases[] = {
        {task, "", "task is not JSON: The document is empty"},
        {task, "hello", "task is not JSON: Invalid value. (at byte 0)"},
        {task, "{\"type\":\"KeyValue\"} x", "task is not JSON"},
        {task, "{\"type\":\"KeyValue\"", "task is not JSON"},
        {task, "[]", "task is not a JSON object (got an array)"},
        {task, "null", "task is not a JSON object (got null)"},
        {advert, "\"x\"", "advert is not a JSON object (got a string)"},
        {response, "5", "response is not a JSON object (got a number)"},
        {task, "{}", "task has no \"type\" field"},
        {task, R"({"type":""})", "task has an empty \"type\""},
        {task, R"({"type":5})",
         "field \"type\": expected a string, got a number"},
        {task, R"({"type":"Bogus"})",
         "task: unknown type \"Bogus\" (expected "
         "DownloadAsset, KeyValue, SetGroup"},
        {response, R"({"type":"KeyValue"})",
         "response: unknown type \"KeyValue\" (expected AgentStatus, "
         "TestData)"},
        {response, R"({"agent_uuid":"a"})", "response has no \"type\" field"},
        {task, R"({"type":"ExecuteTestRun","time_limit":1.5})",
         "task: field \"time_limit\": expected an integer, got 1.5"},
        {task, R"({"type":"ExecuteTestRun","time_limit":1e3})",
         "expected an integer, got 1000"},
        {task, R"({"type":"ExecuteTestRun","time_limit":"30"})",
         "field \"time_limit\": expected an integer, got a string"},
        {task, R"({"type":"ExecuteTestRun","time_limit":18446744073709551615})",
         "expected an integer, got 18446744073709551615"},
        {advert, R"({"Expires":0.5})",
         "advert: field \"Expires\": expected an integer, got 0.5"},
        {task, R"({"type":"DownloadAsset","assets":"x"})",
         "field \"assets\": expected an array of strings, got a string"},
        {task, R"({"type":"DownloadAsset","assets":["a",1]})",
         "field \"assets\" item 1: expected a string, got a number"},
        {task, R"({"type":"InstallTestRun","test_run":[]})",
         "field \"test_run\": expected an object, got an array"},
        {task, R"({"type":"InstallTestRun","test_run":{"targets":{}}})",
         "field \"test_run.targets\": expected an array of strings"},
        {task, R"({"type":"KeyValue","key":true})",
         "field \"key\": expected a string, got a boolean"},
        {response, R"({"type":"TestData","test_data":{"a":1}})",
         "field \"test_data\": expected a string, got an object"},
        {advert, R"({"Facts":{"h":"x"}})",
         "field \"Facts.h\": expected an array of strings, got a string"},
        {advert, R"({"Testlets":{"h":1}})",
         "field \"Testlets\" key \"h\": expected a string, got a number"},
        {advert, R"({"Testlets":[]})",
         "field \"Testlets\": expected an object of strings, got an array"},
    };
    for (const auto &c : cases) {
        const std::string err = error_of(c.f, c.in);
        EXPECT_TRUE(contains(err, c.says))
            << "input " << c.in << "\n  said: " << err
            << "\n  want: " << c.says;
    }
}

// -------------------------------------------------------------------------
// Hostile input: no crash, no hang

TEST(Hostile, DeepNestingIsRefusedWithoutRecursion)
{
    const std::string deep(200000, '[');
    EXPECT_TRUE(contains(error_of(task, deep),
                         "task refused: nesting deeper than 64 levels"));
    std::string deep_obj;
    for (int i = 0; i < 200000; ++i)
        deep_obj += "{\"Facts\":";
    EXPECT_TRUE(contains(error_of(advert, deep_obj), "nesting deeper than 64"));
    // Brackets inside strings do not count.
    std::string s =
        R"({"type":"KeyValue","key":")" + std::string(20000, '[') + "\"}";
    EXPECT_EQ(std::get<KeyValueTask>(decode_task(s)).key.size(), 20000u);
}

// The bound counts the message object itself: 64 levels in all are decoded,
// 65 are refused, for every message kind.
std::string nested_under_unknown_key(std::string head, int levels)
{
    // head opens level 1; the unknown key "x" holds levels 2..levels.
    std::string s = head + R"(,"x":)";
    s += std::string(levels - 1, '[') + std::string(levels - 1, ']') + "}";
    return s;
}

TEST(Hostile, DepthBoundIsExactForEveryMessageKind)
{
    const std::string t = R"({"type":"KeyValue","key":"k")";
    EXPECT_EQ(decode_task(nested_under_unknown_key(t, 64)),
              Task(KeyValueTask{"k", ""}));
    EXPECT_TRUE(contains(error_of(task, nested_under_unknown_key(t, 65)),
                         "task refused: nesting deeper than 64 levels"));

    const std::string a = R"({"Uuid":"u")";
    EXPECT_EQ(decode_advert(nested_under_unknown_key(a, 64)).uuid, "u");
    EXPECT_TRUE(contains(error_of(advert, nested_under_unknown_key(a, 65)),
                         "advert refused: nesting deeper than 64 levels"));

    const std::string r = R"({"type":"AgentStatus","status":"ready")";
    EXPECT_EQ(std::get<AgentStatusResponse>(
                  decode_response(nested_under_unknown_key(r, 64)))
                  .status,
              "ready");
    EXPECT_TRUE(contains(error_of(response, nested_under_unknown_key(r, 65)),
                         "response refused: nesting deeper than 64 levels"));
}

TEST(Hostile, HugeInputDecodes)
{
    const std::string big(8 << 20, 'x');
    const auto t = decode_task(R"({"type":"KeyValue","key":")" + big + "\"}");
    EXPECT_EQ(std::get<KeyValueTask>(t).key.size(), big.size());
    std::string many = R"({"type":"DownloadAsset","assets":[)";
    for (int i = 0; i < 100000; ++i)
        many += (i ? ",\"" : "\"") + std::to_string(i) + "\"";
    many += "]}";
    const auto d = decode_task(many);
    EXPECT_EQ(std::get<DownloadAssetTask>(d).assets.size(), 100000u);
    EXPECT_EQ(encode(d), many);
}

TEST(Hostile, MutatedVectorsNeverCrash)
{
    std::vector<std::string> seeds;
    for (const auto &n : vector_files())
        seeds.push_back(read_file(fs::path(TODD_VECTORS_DIR) / n));
    std::mt19937 rng(12345); // fixed seed: deterministic
    int accepted = 0, refused = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string s = seeds[rng() % seeds.size()];
        const int edits = 1 + static_cast<int>(rng() % 4);
        for (int e = 0; e < edits && !s.empty(); ++e) {
            const size_t pos = rng() % s.size();
            switch (rng() % 4) {
            case 0: s[pos] = static_cast<char>(rng()); break;
            case 1: s.erase(pos, 1 + rng() % 8); break;
            case 2: s.insert(pos, 1, "{}[]\",:\\0"[rng() % 9]); break;
            case 3: s.resize(pos); break;
            }
        }
        for (auto f : {task, advert, response}) {
            try {
                f(s);
                ++accepted;
            } catch (const DecodeError &e) {
                EXPECT_GT(std::string_view(e.what()).size(), 10u);
                ++refused;
            }
        }
    }
    EXPECT_GT(accepted, 0);
    EXPECT_GT(refused, 0);
}
