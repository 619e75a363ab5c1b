// SPDX-License-Identifier: Apache-2.0
// ToDD's message decoders: RapidJSON-based, accepting what Go's decoder
// accepts. docs/wire-format.md lists every rule and quirk.
#include <todd/core/messages.hpp>

#include "json.hpp"
#include "messages_text.hpp"

#include <todd/core/json_limits.hpp>

#include <array>
#include <limits>
#include <type_traits>

namespace todd::msg {
namespace {

using detail::excerpt;
using detail::sanitize_utf8;

// --------------------------------------------------------------------------
// Decoding helpers

using Value = rapidjson::Value;

const char *kind(const Value &v)
{
    switch (v.GetType()) {
    case rapidjson::kNullType: return "null";
    case rapidjson::kFalseType:
    case rapidjson::kTrueType: return "a boolean";
    case rapidjson::kNumberType: return "a number";
    case rapidjson::kStringType: return "a string";
    case rapidjson::kArrayType: return "an array";
    case rapidjson::kObjectType: return "an object";
    }
    return "a value";
}

/** Go's decoder matches keys with bytes.EqualFold-like folding: ASCII case
 *  plus the Kelvin sign (K, U+212A) for 'k' and the long s (U+017F) for
 *  's'. Our field names are ASCII, so this folded form is enough. */
std::string fold_key(const Value &name)
{
    std::string_view s(name.GetString(), name.GetStringLength());
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
            ++i;
        } else if (s.substr(i, 3) == "\xE2\x84\xAA") {
            out += 'k';
            i += 3;
        } else if (s.substr(i, 2) == "\xC5\xBF") {
            out += 's';
            i += 2;
        } else {
            out += '\x80'; // matches no field name
            ++i;
        }
    }
    return out;
}

[[noreturn]] void type_error(std::string_view field, const char *want,
                             const Value &v)
{
    throw DecodeError("field \"" + std::string(field) + "\": expected " + want +
                      ", got " + kind(v));
}

// Go leaves a string (or number, or time) unchanged when it is null.
void set_string(const Value &v, std::string &out, std::string_view field)
{
    if (v.IsNull())
        return;
    if (!v.IsString())
        type_error(field, "a string", v);
    out = sanitize_utf8(v.GetString(), v.GetStringLength());
}

void set_int(const Value &v, int64_t &out, std::string_view field)
{
    if (v.IsNull())
        return;
    if (!v.IsNumber())
        type_error(field, "an integer", v);
    if (!v.IsInt64()) {
        char num[40];
        if (v.IsUint64())
            std::snprintf(num, sizeof num, "%llu",
                          static_cast<unsigned long long>(v.GetUint64()));
        else
            std::snprintf(num, sizeof num, "%.17g", v.GetDouble());
        throw DecodeError("field \"" + std::string(field) +
                          "\": expected an integer, got " + num);
    }
    out = v.GetInt64();
}

// A null array sets a Go slice to nil.
void set_strings(const Value &v, std::vector<std::string> &out,
                 std::string_view field)
{
    if (v.IsNull()) {
        out.clear();
        return;
    }
    if (!v.IsArray())
        type_error(field, "an array of strings", v);
    std::vector<std::string> res;
    res.reserve(v.Size());
    for (const auto &e : v.GetArray()) {
        res.emplace_back();
        if (e.IsNull())
            continue;
        if (!e.IsString())
            throw DecodeError("field \"" + std::string(field) + "\" item " +
                              std::to_string(res.size() - 1) +
                              ": expected a string, got " + kind(e));
        res.back() = sanitize_utf8(e.GetString(), e.GetStringLength());
    }
    out = std::move(res);
}

// Go merges an object into an existing map; null makes it nil.
void set_hashes(const Value &v, Hashes &out, std::string_view field)
{
    if (v.IsNull()) {
        out.clear();
        return;
    }
    if (!v.IsObject())
        type_error(field, "an object of strings", v);
    for (const auto &m : v.GetObject()) {
        std::string key =
            sanitize_utf8(m.name.GetString(), m.name.GetStringLength());
        std::string val;
        if (!m.value.IsNull() && !m.value.IsString())
            throw DecodeError("field \"" + std::string(field) + "\" key " +
                              excerpt(key) + ": expected a string, got " +
                              kind(m.value));
        if (m.value.IsString())
            val = sanitize_utf8(m.value.GetString(), m.value.GetStringLength());
        out[std::move(key)] = std::move(val);
    }
}

void set_facts(const Value &v, std::optional<Facts> &out,
               std::string_view field)
{
    if (v.IsNull()) {
        out.reset();
        return;
    }
    if (!v.IsObject())
        type_error(field, "an object of string arrays", v);
    if (!out)
        out.emplace();
    for (const auto &m : v.GetObject()) {
        std::string key =
            sanitize_utf8(m.name.GetString(), m.name.GetStringLength());
        std::vector<std::string> vals;
        set_strings(m.value, vals, std::string(field) + "." + key);
        (*out)[std::move(key)] = std::move(vals);
    }
}

void set_time(const Value &v, Time &out, std::string_view field)
{
    if (v.IsNull())
        return;
    if (!v.IsString())
        type_error(field, "an RFC 3339 time string", v);
    try {
        out =
            parse_rfc3339(std::string_view(v.GetString(), v.GetStringLength()));
    } catch (const DecodeError &e) {
        throw DecodeError("field \"" + std::string(field) + "\": " + e.what());
    }
}

/** Parse one JSON object; what names the message kind in errors. The
 *  depth bound is ours (Go allows 10000): see json::max_depth. */
void parse_object(rapidjson::Document &doc, std::string_view json,
                  const char *what)
{
    if (auto err = todd::json::parse(doc, json))
        throw DecodeError(std::string(what) +
                          (err->too_deep ? " refused: " : " is not JSON: ") +
                          err->reason + " (at byte " +
                          std::to_string(err->offset) + ")");
    if (!doc.IsObject())
        throw DecodeError(std::string(what) + " is not a JSON object (got " +
                          kind(doc) + ")");
}

/** The "type" field, found as Go finds it (case-insensitively, last wins). */
std::string type_field(const Value &obj, const char *what)
{
    std::string type;
    bool found = false;
    for (const auto &m : obj.GetObject()) {
        if (fold_key(m.name) != "type")
            continue;
        if (!m.value.IsNull() && !m.value.IsString())
            throw DecodeError(std::string(what) +
                              " field \"type\": expected a string, got " +
                              kind(m.value));
        found = true;
        if (m.value.IsString())
            type =
                sanitize_utf8(m.value.GetString(), m.value.GetStringLength());
    }
    if (!found)
        throw DecodeError(std::string(what) + " has no \"type\" field");
    if (type.empty())
        throw DecodeError(std::string(what) + " has an empty \"type\"");
    return type;
}

template <class F> auto with_context(const char *what, F &&f)
{
    try {
        return f();
    } catch (const DecodeError &e) {
        throw DecodeError(std::string(what) + ": " + e.what());
    }
}

void decode_test_run(const Value &v, TestRun &tr)
{
    if (v.IsNull())
        return;
    if (!v.IsObject())
        type_error("test_run", "an object", v);
    for (const auto &m : v.GetObject()) {
        const std::string k = fold_key(m.name);
        if (k == "uuid")
            set_string(m.value, tr.uuid, "test_run.uuid");
        else if (k == "targets")
            set_strings(m.value, tr.targets, "test_run.targets");
        else if (k == "testlet")
            set_string(m.value, tr.testlet, "test_run.testlet");
        else if (k == "args")
            set_string(m.value, tr.args, "test_run.args");
    }
}

const std::array<const char *, 6> task_types = {
    "DownloadAsset",  "KeyValue",       "SetGroup",
    "InstallTestRun", "ExecuteTestRun", "DeleteTestData"};

} // namespace

AgentAdvert decode_advert(std::string_view json)
{
    rapidjson::Document doc;
    parse_object(doc, json, "advert");
    return with_context("advert", [&] {
        AgentAdvert a;
        for (const auto &m : doc.GetObject()) {
            const std::string k = fold_key(m.name);
            if (k == "uuid")
                set_string(m.value, a.uuid, "Uuid");
            else if (k == "defaultaddr")
                set_string(m.value, a.default_addr, "DefaultAddr");
            else if (k == "expires")
                set_int(m.value, a.expires_ns, "Expires");
            else if (k == "localtime")
                set_time(m.value, a.local_time, "LocalTime");
            else if (k == "facts")
                set_facts(m.value, a.facts, "Facts");
            else if (k == "factcollectors")
                set_hashes(m.value, a.fact_collectors, "FactCollectors");
            else if (k == "testlets")
                set_hashes(m.value, a.testlets, "Testlets");
        }
        return a;
    });
}

Task decode_task(std::string_view json)
{
    rapidjson::Document doc;
    parse_object(doc, json, "task");
    const std::string type = type_field(doc, "task");
    return with_context("task", [&]() -> Task {
        const auto members = doc.GetObject();
        if (type == "DownloadAsset") {
            DownloadAssetTask t;
            for (const auto &m : members)
                if (fold_key(m.name) == "assets")
                    set_strings(m.value, t.assets, "assets");
            return t;
        }
        if (type == "KeyValue" || type == "SetGroup") {
            bool has_group = false, has_key = false;
            for (const auto &m : members) {
                const std::string k = fold_key(m.name);
                has_group |= k == "groupname";
                has_key |= k == "key";
            }
            // The Go server's group message is typed KeyValue (a Go bug):
            // {"type":"KeyValue","groupName":"red"}.
            if (type == "SetGroup" || (has_group && !has_key)) {
                SetGroupTask t;
                t.as_keyvalue = type == "KeyValue";
                for (const auto &m : members)
                    if (fold_key(m.name) == "groupname")
                        set_string(m.value, t.group_name, "groupName");
                return t;
            }
            KeyValueTask t;
            for (const auto &m : members) {
                const std::string k = fold_key(m.name);
                if (k == "key")
                    set_string(m.value, t.key, "key");
                else if (k == "value")
                    set_string(m.value, t.value, "value");
            }
            return t;
        }
        if (type == "InstallTestRun") {
            InstallTestRunTask t;
            for (const auto &m : members)
                if (fold_key(m.name) == "test_run")
                    decode_test_run(m.value, t.test_run);
            return t;
        }
        if (type == "ExecuteTestRun") {
            ExecuteTestRunTask t;
            for (const auto &m : members) {
                const std::string k = fold_key(m.name);
                if (k == "test_uuid")
                    set_string(m.value, t.test_uuid, "test_uuid");
                else if (k == "time_limit")
                    set_int(m.value, t.time_limit, "time_limit");
            }
            return t;
        }
        if (type == "DeleteTestData") {
            DeleteTestDataTask t;
            for (const auto &m : members)
                if (fold_key(m.name) == "key")
                    set_string(m.value, t.test_uuid, "key");
            return t;
        }
        std::string known;
        for (const char *n : task_types)
            known += std::string(known.empty() ? "" : ", ") + n;
        throw DecodeError("unknown type " + excerpt(type) + " (expected " +
                          known + ")");
    });
}

Response decode_response(std::string_view json)
{
    rapidjson::Document doc;
    parse_object(doc, json, "response");
    const std::string type = type_field(doc, "response");
    return with_context("response", [&]() -> Response {
        std::string agent, test, rest;
        const bool status = type == "AgentStatus";
        if (!status && type != "TestData")
            throw DecodeError("unknown type " + excerpt(type) +
                              " (expected AgentStatus, TestData)");
        const char *rest_key = status ? "status" : "test_data";
        for (const auto &m : doc.GetObject()) {
            const std::string k = fold_key(m.name);
            if (k == "agent_uuid")
                set_string(m.value, agent, "agent_uuid");
            else if (k == "test_uuid")
                set_string(m.value, test, "test_uuid");
            else if (k == rest_key)
                set_string(m.value, rest, rest_key);
        }
        if (status)
            return AgentStatusResponse{agent, test, rest};
        return TestDataResponse{agent, test, rest};
    });
}

} // namespace todd::msg
