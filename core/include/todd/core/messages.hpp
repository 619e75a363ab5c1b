// SPDX-License-Identifier: Apache-2.0
// ToDD's server<->agent messages and their JSON, compatible with the Go ToDD
// byte for byte where Go is deterministic (see docs/wire-format.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace todd::msg {

/** A malformed or unknown message; what() names the problem. */
class DecodeError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/** Nanosecond-precision wall-clock time, as Go's time.Time. */
using Time = std::chrono::time_point<std::chrono::system_clock,
                                     std::chrono::nanoseconds>;

/** RFC 3339 in UTC with trailing zeros of the fraction dropped, as Go. */
std::string format_rfc3339(Time t);
/** Parse RFC 3339 (any offset, optional fraction); throws DecodeError. */
Time parse_rfc3339(std::string_view text);

using Facts = std::map<std::string, std::vector<std::string>>;
using Hashes = std::map<std::string, std::string>; // file name -> sha256 hex

/** Agent advertisement, queue "agentadvert". */
struct AgentAdvert {
    std::string uuid;           // "Uuid"
    std::string default_addr;   // "DefaultAddr"
    int64_t expires_ns = 0;     // "Expires", integer nanoseconds
    Time local_time{};          // "LocalTime"
    std::optional<Facts> facts; // "Facts"; nullopt encodes as null
    Hashes fact_collectors;     // "FactCollectors"
    Hashes testlets;            // "Testlets"
    bool operator==(const AgentAdvert &) const = default;
};

/** defs.TestRun, nested in InstallTestRun. */
struct TestRun {
    std::string uuid;
    std::vector<std::string> targets; // empty encodes as null, as Go
    std::string testlet;
    std::string args; // one string, not split
    bool operator==(const TestRun &) const = default;
};

struct DownloadAssetTask {
    std::vector<std::string> assets; // URLs
    bool operator==(const DownloadAssetTask &) const = default;
};
struct KeyValueTask {
    std::string key, value;
    bool operator==(const KeyValueTask &) const = default;
};
/** Group membership. as_keyvalue marks the Go server's form
 *  {"type":"KeyValue","groupName":...}; it re-encodes the same way. */
struct SetGroupTask {
    std::string group_name;
    bool as_keyvalue = false;
    bool operator==(const SetGroupTask &) const = default;
};
struct InstallTestRunTask {
    TestRun test_run;
    bool operator==(const InstallTestRunTask &) const = default;
};
struct ExecuteTestRunTask {
    std::string test_uuid;
    int64_t time_limit = 0; // seconds
    bool operator==(const ExecuteTestRunTask &) const = default;
};
struct DeleteTestDataTask {
    std::string test_uuid; // travels as "key"
    bool operator==(const DeleteTestDataTask &) const = default;
};

/** Server -> agent task, queue "<agent uuid>" (or a group queue). */
using Task =
    std::variant<DownloadAssetTask, KeyValueTask, SetGroupTask,
                 InstallTestRunTask, ExecuteTestRunTask, DeleteTestDataTask>;

/** Status words of AgentStatus. */
inline constexpr std::string_view status_init = "init";
inline constexpr std::string_view status_ready = "ready";
inline constexpr std::string_view status_testing = "testing";
inline constexpr std::string_view status_finished = "finished";
inline constexpr std::string_view status_fail = "fail";

struct AgentStatusResponse {
    std::string agent_uuid, test_uuid, status;
    bool operator==(const AgentStatusResponse &) const = default;
};
/** test_data is JSON text ({target: {metric: value}}), sent as a string. */
struct TestDataResponse {
    std::string agent_uuid, test_uuid, test_data;
    bool operator==(const TestDataResponse &) const = default;
};

/** Agent -> server response, queue "agentresponses". */
using Response = std::variant<AgentStatusResponse, TestDataResponse>;

/** The "type" string of a task or response. */
std::string_view type_name(const Task &t);
std::string_view type_name(const Response &r);

std::string encode(const AgentAdvert &a);
std::string encode(const Task &t);
std::string encode(const Response &r);

/** Decoders accept what Go accepts: keys case-insensitive, unknown keys
 *  ignored, missing keys zero. They throw DecodeError on anything else. */
AgentAdvert decode_advert(std::string_view json);
Task decode_task(std::string_view json);
Response decode_response(std::string_view json);

/** Encode a string as Go's encoding/json does (quotes included). */
std::string go_quote(std::string_view s);

} // namespace todd::msg
