// SPDX-License-Identifier: Apache-2.0
// ToDD's message encoder: writes exactly what Go's encoding/json writes for
// the Go structs. The decoders are in messages_decode.cpp, the time format in
// messages_time.cpp, the UTF-8 rules and quoting in messages_text.cpp.
// docs/wire-format.md lists every rule and quirk.
#include <todd/core/messages.hpp>

#include "messages_text.hpp"

#include <array>
#include <cstdio>
#include <type_traits>

namespace todd::msg {
namespace {

using detail::append_quoted;

// --------------------------------------------------------------------------
// Encoding helpers

void append_strings(std::string &o, const std::vector<std::string> &v)
{
    if (v.empty()) { // a nil slice in Go
        o += "null";
        return;
    }
    o += '[';
    for (size_t i = 0; i < v.size(); ++i) {
        if (i)
            o += ',';
        append_quoted(o, v[i]);
    }
    o += ']';
}

void append_hashes(std::string &o, const Hashes &h)
{
    o += '{';
    bool first = true;
    for (const auto &[k, v] : h) { // std::map: bytewise order, as Go sorts
        if (!first)
            o += ',';
        first = false;
        append_quoted(o, k);
        o += ':';
        append_quoted(o, v);
    }
    o += '}';
}

template <class... Ts> struct overloaded : Ts... {
    using Ts::operator()...;
};
template <class... Ts> overloaded(Ts...) -> overloaded<Ts...>;

} // namespace

std::string_view type_name(const Task &t)
{
    return std::visit(
        overloaded{
            [](const DownloadAssetTask &) { return "DownloadAsset"; },
            [](const KeyValueTask &) { return "KeyValue"; },
            [](const SetGroupTask &s) {
                return s.as_keyvalue ? "KeyValue" : "SetGroup";
            },
            [](const InstallTestRunTask &) { return "InstallTestRun"; },
            [](const ExecuteTestRunTask &) { return "ExecuteTestRun"; },
            [](const DeleteTestDataTask &) { return "DeleteTestData"; },
        },
        t);
}

std::string_view type_name(const Response &r)
{
    return std::holds_alternative<AgentStatusResponse>(r) ? "AgentStatus"
                                                          : "TestData";
}

std::string encode(const AgentAdvert &a)
{
    std::string o;
    o.reserve(512);
    o += "{\"Uuid\":";
    append_quoted(o, a.uuid);
    o += ",\"DefaultAddr\":";
    append_quoted(o, a.default_addr);
    o += ",\"Expires\":";
    o += std::to_string(a.expires_ns);
    o += ",\"LocalTime\":\"";
    o += format_rfc3339(a.local_time);
    o += "\",\"Facts\":";
    if (!a.facts) {
        o += "null";
    } else {
        o += '{';
        bool first = true;
        for (const auto &[k, v] : *a.facts) {
            if (!first)
                o += ',';
            first = false;
            append_quoted(o, k);
            o += ':';
            // A fact collector's empty list decodes in Go as [], not nil.
            if (v.empty())
                o += "[]";
            else
                append_strings(o, v);
        }
        o += '}';
    }
    o += ",\"FactCollectors\":";
    append_hashes(o, a.fact_collectors);
    o += ",\"Testlets\":";
    append_hashes(o, a.testlets);
    o += '}';
    return o;
}

std::string encode(const Task &t)
{
    std::string o = "{\"type\":\"";
    o += type_name(t);
    o += '"';
    std::visit(overloaded{
                   [&](const DownloadAssetTask &x) {
                       o += ",\"assets\":";
                       append_strings(o, x.assets);
                   },
                   [&](const KeyValueTask &x) {
                       o += ",\"key\":";
                       append_quoted(o, x.key);
                       o += ",\"value\":";
                       append_quoted(o, x.value);
                   },
                   [&](const SetGroupTask &x) {
                       o += ",\"groupName\":";
                       append_quoted(o, x.group_name);
                   },
                   [&](const InstallTestRunTask &x) {
                       o += ",\"test_run\":{\"uuid\":";
                       append_quoted(o, x.test_run.uuid);
                       o += ",\"targets\":";
                       append_strings(o, x.test_run.targets);
                       o += ",\"testlet\":";
                       append_quoted(o, x.test_run.testlet);
                       o += ",\"args\":";
                       append_quoted(o, x.test_run.args);
                       o += '}';
                   },
                   [&](const ExecuteTestRunTask &x) {
                       o += ",\"test_uuid\":";
                       append_quoted(o, x.test_uuid);
                       o += ",\"time_limit\":";
                       o += std::to_string(x.time_limit);
                   },
                   [&](const DeleteTestDataTask &x) {
                       o += ",\"key\":";
                       append_quoted(o, x.test_uuid);
                   },
               },
               t);
    o += '}';
    return o;
}

std::string encode(const Response &r)
{
    std::string o = "{\"agent_uuid\":";
    std::visit(overloaded{
                   [&](const AgentStatusResponse &x) {
                       append_quoted(o, x.agent_uuid);
                       o += ",\"type\":\"AgentStatus\",\"test_uuid\":";
                       append_quoted(o, x.test_uuid);
                       o += ",\"status\":";
                       append_quoted(o, x.status);
                   },
                   [&](const TestDataResponse &x) {
                       append_quoted(o, x.agent_uuid);
                       o += ",\"type\":\"TestData\",\"test_uuid\":";
                       append_quoted(o, x.test_uuid);
                       o += ",\"test_data\":";
                       append_quoted(o, x.test_data);
                   },
               },
               r);
    o += '}';
    return o;
}

} // namespace todd::msg
