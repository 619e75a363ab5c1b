// SPDX-License-Identifier: Apache-2.0
// ToDD's messages: an encoder that writes exactly what Go's encoding/json
// writes for the Go structs, and RapidJSON-based decoders that accept what
// Go's decoder accepts. docs/wire-format.md lists every rule and quirk.
#include <todd/core/messages.hpp>

#include "json.hpp"

#include <todd/core/json_limits.hpp>

#include <array>
#include <cstdio>
#include <limits>
#include <type_traits>

namespace todd::msg {
namespace {

// --------------------------------------------------------------------------
// UTF-8 as Go's unicode/utf8 sees it

/** Width of the valid UTF-8 sequence at s[i] (storing its code point), or 0
 *  when the byte there starts no valid sequence (Go: RuneError, width 1). */
size_t utf8_rune(std::string_view s, size_t i, uint32_t &cp)
{
    const auto b = [&](size_t k) -> unsigned {
        return static_cast<unsigned char>(s[i + k]);
    };
    const size_t left = s.size() - i;
    const unsigned c0 = b(0);
    if (c0 < 0x80) {
        cp = c0;
        return 1;
    }
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c0 >= 0xC2 && c0 <= 0xDF) {
        n = 2;
    } else if (c0 >= 0xE0 && c0 <= 0xEF) {
        n = 3;
        if (c0 == 0xE0)
            lo = 0xA0; // no overlongs
        else if (c0 == 0xED)
            hi = 0x9F; // no surrogates
    } else if (c0 >= 0xF0 && c0 <= 0xF4) {
        n = 4;
        if (c0 == 0xF0)
            lo = 0x90;
        else if (c0 == 0xF4)
            hi = 0x8F; // nothing above U+10FFFF
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    if (b(1) < lo || b(1) > hi)
        return 0;
    for (size_t k = 2; k < n; ++k)
        if (b(k) < 0x80 || b(k) > 0xBF)
            return 0;
    cp = c0 & (0xFF >> (n + 1));
    for (size_t k = 1; k < n; ++k)
        cp = (cp << 6) | (b(k) & 0x3F);
    return n;
}

/** Replace every byte that starts no valid sequence with U+FFFD, as Go's
 *  decoder does for strings. */
std::string sanitize_utf8(const char *p, size_t n)
{
    std::string_view s(p, n);
    size_t i = 0;
    uint32_t cp;
    while (i < n) { // fast path: most input is valid
        size_t w = utf8_rune(s, i, cp);
        if (w == 0)
            break;
        i += w;
    }
    if (i == n)
        return std::string(s);
    std::string out(s.substr(0, i));
    while (i < n) {
        size_t w = utf8_rune(s, i, cp);
        if (w == 0) {
            out += "\xEF\xBF\xBD";
            ++i;
        } else {
            out.append(s.substr(i, w));
            i += w;
        }
    }
    return out;
}

constexpr char hexdigits[] = "0123456789abcdef";

void append_quoted(std::string &out, std::string_view s)
{
    out += '"';
    size_t start = 0, i = 0;
    const auto flush = [&] { out.append(s.substr(start, i - start)); };
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            if (c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' &&
                c != '&') {
                ++i;
                continue;
            }
            flush();
            switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default: // Go 1.9 writes \b and \f as \u0008 and \u000c too
                out += "\\u00";
                out += hexdigits[c >> 4];
                out += hexdigits[c & 0xF];
            }
            start = ++i;
            continue;
        }
        uint32_t cp = 0;
        const size_t w = utf8_rune(s, i, cp);
        if (w == 0) {
            flush();
            out += "\\ufffd";
            start = ++i;
            continue;
        }
        if (cp == 0x2028 || cp == 0x2029) {
            flush();
            out += "\\u202";
            out += hexdigits[cp & 0xF];
            i += w;
            start = i;
            continue;
        }
        i += w;
    }
    flush();
    out += '"';
}

/** A short, safe rendering of untrusted text for error messages. */
std::string excerpt(std::string_view s)
{
    constexpr size_t max = 64;
    if (s.size() <= max)
        return go_quote(s);
    return go_quote(s.substr(0, max)) + "...";
}

// --------------------------------------------------------------------------
// Time

constexpr int64_t ns_per_s = 1'000'000'000;
constexpr int64_t s_per_day = 86'400;

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const auto yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void civil_from_days(int64_t z, int64_t &y, unsigned &m, unsigned &d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const auto doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2);
}

bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

unsigned days_in_month(int64_t y, unsigned m)
{
    static constexpr unsigned dm[] = {31, 28, 31, 30, 31, 30,
                                      31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

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

const std::array<const char *, 6> task_types = {
    "DownloadAsset",  "KeyValue",       "SetGroup",
    "InstallTestRun", "ExecuteTestRun", "DeleteTestData"};

} // namespace

// --------------------------------------------------------------------------
// Public functions

std::string go_quote(std::string_view s)
{
    std::string out;
    out.reserve(s.size() + 2);
    append_quoted(out, s);
    return out;
}

std::string format_rfc3339(Time t)
{
    if (t == Time::min()) // stands for Go's zero time.Time
        return "0001-01-01T00:00:00Z";
    const int64_t ns = t.time_since_epoch().count();
    int64_t secs = ns / ns_per_s, frac = ns % ns_per_s;
    if (frac < 0) {
        frac += ns_per_s;
        --secs;
    }
    int64_t days = secs / s_per_day, sod = secs % s_per_day;
    if (sod < 0) {
        sod += s_per_day;
        --days;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days(days, y, m, d);
    char buf[48];
    int n = std::snprintf(
        buf, sizeof buf, "%04lld-%02u-%02uT%02d:%02d:%02d",
        static_cast<long long>(y), m, d, static_cast<int>(sod / 3600),
        static_cast<int>(sod / 60 % 60), static_cast<int>(sod % 60));
    std::string out(buf, static_cast<size_t>(n));
    if (frac != 0) {
        char f[16];
        std::snprintf(f, sizeof f, ".%09lld", static_cast<long long>(frac));
        std::string fs(f);
        while (fs.back() == '0')
            fs.pop_back();
        out += fs;
    }
    out += 'Z';
    return out;
}

Time parse_rfc3339(std::string_view text)
{
    const auto bad = [&](const std::string &why) -> DecodeError {
        return DecodeError("time " + excerpt(text) +
                           " is not RFC 3339: " + why);
    };
    const auto digit = [&](size_t i) {
        return i < text.size() && text[i] >= '0' && text[i] <= '9';
    };
    const auto num = [&](size_t i, size_t n, const char *what) -> int64_t {
        int64_t v = 0;
        for (size_t k = 0; k < n; ++k) {
            if (!digit(i + k))
                throw bad(std::string("expected ") + std::to_string(n) +
                          "-digit " + what + " at byte " +
                          std::to_string(i + k));
            v = v * 10 + (text[i + k] - '0');
        }
        return v;
    };
    const auto expect = [&](size_t i, char c) {
        if (i >= text.size() || text[i] != c)
            throw bad(std::string("expected '") + c + "' at byte " +
                      std::to_string(i));
    };
    const int64_t year = num(0, 4, "year");
    expect(4, '-');
    const auto month = static_cast<unsigned>(num(5, 2, "month"));
    expect(7, '-');
    const auto day = static_cast<unsigned>(num(8, 2, "day"));
    expect(10, 'T');
    const int64_t hour = num(11, 2, "hour");
    expect(13, ':');
    const int64_t min = num(14, 2, "minute");
    expect(16, ':');
    const int64_t sec = num(17, 2, "second");
    if (month < 1 || month > 12)
        throw bad("month out of range");
    if (day < 1 || day > days_in_month(year, month))
        throw bad("day out of range");
    if (hour > 23)
        throw bad("hour out of range");
    if (min > 59)
        throw bad("minute out of range");
    if (sec > 59)
        throw bad("second out of range");
    size_t i = 19;
    int64_t frac = 0;
    if (i < text.size() && text[i] == '.' && digit(i + 1)) {
        ++i;
        int nd = 0;
        for (; digit(i); ++i, ++nd)
            if (nd < 9) // digits beyond nanoseconds are dropped
                frac = frac * 10 + (text[i] - '0');
        for (; nd < 9; ++nd)
            frac *= 10;
    }
    int64_t offset = 0;
    if (i < text.size() && text[i] == 'Z') {
        ++i;
    } else if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
        const int sign = text[i] == '-' ? -1 : 1;
        const int64_t oh = num(i + 1, 2, "zone hour");
        expect(i + 3, ':');
        const int64_t om = num(i + 4, 2, "zone minute");
        if (oh > 23 || om > 59)
            throw bad("time zone offset out of range");
        offset = sign * (oh * 3600 + om * 60);
        i += 6;
    } else {
        throw bad("expected 'Z' or a zone offset like +01:00 at byte " +
                  std::to_string(i));
    }
    if (i != text.size())
        throw bad("extra text after the time at byte " + std::to_string(i));

    const int64_t secs = days_from_civil(year, month, day) * s_per_day +
                         hour * 3600 + min * 60 + sec - offset;
    // int64 nanoseconds span 1677..2262; outside that we saturate (the
    // minimum re-encodes as Go's zero time, 0001-01-01T00:00:00Z).
    constexpr int64_t lim = std::numeric_limits<int64_t>::max() / ns_per_s;
    if (secs < -lim)
        return Time::min();
    if (secs >= lim)
        return Time::max();
    return Time(std::chrono::nanoseconds(secs * ns_per_s + frac));
}

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
