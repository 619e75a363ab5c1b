// SPDX-License-Identifier: Apache-2.0
#include "json.hpp"

#include <todd/core/json_limits.hpp>
#include <todd/core/messages.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace todd::server::json {

void quote(std::string &out, std::string_view s)
{
    out += msg::go_quote(s);
}

std::string quote(std::string_view s)
{
    return msg::go_quote(s);
}

void number(std::string &out, double v)
{
    if (!std::isfinite(v)) {
        out += "null"; // Go refuses these; never produced by a parser
        return;
    }
    char buf[64];
    double a = std::fabs(v);
    bool sci = a != 0 && (a < 1e-6 || a >= 1e21);
    auto r = std::to_chars(buf, buf + sizeof buf, v,
                           sci ? std::chars_format::scientific
                               : std::chars_format::fixed);
    std::string text(buf, r.ptr);
    if (sci) {
        // Go's encoder cleans e-07 up to e-7 (negative exponents only).
        size_t n = text.size();
        if (n >= 4 && text[n - 4] == 'e' && text[n - 3] == '-' &&
            text[n - 2] == '0')
            text.erase(n - 2, 1);
    }
    out += text;
}

namespace {

void newline(std::string &out, int indent, int depth)
{
    out += '\n';
    out.append(static_cast<size_t>(indent * depth), ' ');
}

void write(std::string &out, const rapidjson::Value &v, int indent,
           bool sort_keys, int depth)
{
    // Documents come from json::parse (depth-bounded) plus a few levels of
    // ours; this only keeps a future mistake from becoming a stack overflow.
    if (depth > static_cast<int>(encode_max_depth))
        throw std::length_error("JSON to encode: " +
                                todd::json::too_deep(encode_max_depth));
    switch (v.GetType()) {
    case rapidjson::kNullType: out += "null"; break;
    case rapidjson::kFalseType: out += "false"; break;
    case rapidjson::kTrueType: out += "true"; break;
    case rapidjson::kStringType:
        quote(out, std::string_view(v.GetString(), v.GetStringLength()));
        break;
    case rapidjson::kNumberType:
        if (v.IsInt64() && std::llabs(v.GetInt64()) < (1LL << 53))
            out += std::to_string(v.GetInt64());
        else
            number(out, v.GetDouble());
        break;
    case rapidjson::kArrayType: {
        if (v.Empty()) {
            out += "[]";
            break;
        }
        out += '[';
        bool first = true;
        for (const auto &e : v.GetArray()) {
            if (!first)
                out += ',';
            first = false;
            if (indent)
                newline(out, indent, depth + 1);
            write(out, e, indent, sort_keys, depth + 1);
        }
        if (indent)
            newline(out, indent, depth);
        out += ']';
        break;
    }
    case rapidjson::kObjectType: {
        if (v.MemberCount() == 0) {
            out += "{}";
            break;
        }
        std::vector<const rapidjson::Value::Member *> members;
        for (const auto &m : v.GetObject())
            members.push_back(&m);
        if (sort_keys)
            std::stable_sort(
                members.begin(), members.end(), [](auto *a, auto *b) {
                    return std::string_view(a->name.GetString(),
                                            a->name.GetStringLength()) <
                           std::string_view(b->name.GetString(),
                                            b->name.GetStringLength());
                });
        out += '{';
        bool first = true;
        for (auto *m : members) {
            if (!first)
                out += ',';
            first = false;
            if (indent)
                newline(out, indent, depth + 1);
            quote(out, std::string_view(m->name.GetString(),
                                        m->name.GetStringLength()));
            out += indent ? ": " : ":";
            write(out, m->value, indent, sort_keys, depth + 1);
        }
        if (indent)
            newline(out, indent, depth);
        out += '}';
        break;
    }
    }
}

} // namespace

std::string encode(const rapidjson::Value &v, int indent, bool sort_keys)
{
    std::string out;
    write(out, v, indent, sort_keys, 0);
    return out;
}

bool parse(rapidjson::Document &doc, std::string_view text, std::string &error,
           unsigned max_depth)
{
    // Trailing whitespace is fine (the CLI ends its run request with \n);
    // anything else after the value is an error, as with Go's Unmarshal.
    // Invalid UTF-8 is refused: a label stored from it would not be the
    // label its JSON shows. (Go's agents and CLI only send valid UTF-8.)
    todd::json::ParseOptions o;
    o.max_depth = max_depth;
    o.validate_utf8 = true;
    if (auto err = todd::json::parse(doc, text, o)) {
        error = std::string(err->too_deep ? "JSON refused at offset "
                                          : "invalid JSON at offset ") +
                std::to_string(err->offset) + ": " + err->reason;
        return false;
    }
    return true;
}

bool result_number(const rapidjson::Value &v, double &out)
{
    if (v.IsNumber()) {
        out = v.GetDouble();
        return std::isfinite(out);
    }
    if (!v.IsString() || v.GetStringLength() == 0 || v.GetStringLength() > 64)
        return false;
    // Decimal only: strtod would also take leading blanks and hex.
    const char *s = v.GetString();
    if (std::strchr("+-.0123456789", s[0]) == nullptr ||
        std::strpbrk(s, "xX") != nullptr)
        return false;
    char *end = nullptr;
    out = std::strtod(s, &end);
    return end == v.GetString() + v.GetStringLength() && std::isfinite(out);
}

bool for_each_result(std::string_view cleandata,
                     const std::function<void(const char *, const char *,
                                              const char *, double)> &fn)
{
    rapidjson::Document doc;
    std::string err;
    if (!parse(doc, cleandata, err) || !doc.IsObject())
        return false;
    for (const auto &agent : doc.GetObject()) {
        if (!agent.value.IsObject())
            continue;
        for (const auto &target : agent.value.GetObject()) {
            if (!target.value.IsObject())
                continue;
            for (const auto &metric : target.value.GetObject()) {
                double v;
                if (result_number(metric.value, v))
                    fn(agent.name.GetString(), target.name.GetString(),
                       metric.name.GetString(), v);
            }
        }
    }
    return true;
}

} // namespace todd::server::json
