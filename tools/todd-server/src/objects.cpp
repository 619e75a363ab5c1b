// SPDX-License-Identifier: Apache-2.0
#include "objects.hpp"
#include "json.hpp"

#include <re2/re2.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <strings.h>

namespace todd::server {

namespace rj = rapidjson;

bool MatchStatement::matches(const msg::Facts &facts) const
{
    if (hostname) {
        auto it = facts.find("Hostname");
        if (it != facts.end() && !it->second.empty() &&
            RE2::PartialMatch(it->second.front(), *hostname))
            return true;
    }
    if (subnet) {
        auto it = facts.find("Addresses");
        if (it != facts.end())
            for (const auto &a : it->second)
                if (subnet->contains(a))
                    return true;
    }
    return false;
}

std::vector<std::string> drop_long_facts(msg::Facts &facts, size_t max_bytes)
{
    std::vector<std::string> dropped;
    for (auto it = facts.begin(); it != facts.end();) {
        size_t longest = 0;
        for (const auto &v : it->second)
            longest = std::max(longest, v.size());
        if (longest <= max_bytes) {
            ++it;
            continue;
        }
        dropped.push_back("fact \"" + it->first.substr(0, 64) +
                          "\" dropped: a value of " + std::to_string(longest) +
                          " bytes is over the bound of " +
                          std::to_string(max_bytes));
        it = facts.erase(it);
    }
    return dropped;
}

bool GroupObject::matches_agent(const msg::Facts &facts) const
{
    for (const auto &m : matches)
        if (m.matches(facts))
            return true;
    return false;
}

namespace {

std::string str(const rj::Value &v)
{
    return std::string(v.GetString(), v.GetStringLength());
}

/** A string member, "" when absent or null; ObjectError for other types. */
std::string string_member(const rj::Value &obj, const char *key,
                          const std::string &where)
{
    // Go matches keys case-insensitively; prefer the exact one.
    const rj::Value *found = nullptr;
    for (const auto &m : obj.GetObject()) {
        if (strcasecmp(m.name.GetString(), key) == 0) {
            if (!found || std::strcmp(m.name.GetString(), key) == 0)
                found = &m.value;
        }
    }
    if (!found || found->IsNull())
        return {};
    if (!found->IsString())
        throw ObjectError(where + "." + key + " must be a string");
    return str(*found);
}

const rj::Value *member(const rj::Value &obj, const char *key)
{
    const rj::Value *found = nullptr;
    for (const auto &m : obj.GetObject())
        if (strcasecmp(m.name.GetString(), key) == 0)
            if (!found || std::strcmp(m.name.GetString(), key) == 0)
                found = &m.value;
    return found;
}

/** A string->string map; null allowed (returns false). */
bool string_map(const rj::Value *v, const std::string &where,
                std::map<std::string, std::string> &out)
{
    if (!v || v->IsNull())
        return false;
    if (!v->IsObject())
        throw ObjectError(where + " must be a map of strings");
    for (const auto &m : v->GetObject()) {
        if (!m.value.IsString())
            throw ObjectError(where + "." + str(m.name) + " must be a string");
        out[str(m.name)] = str(m.value);
    }
    return true;
}

void put_map(std::string &out, const std::map<std::string, std::string> &m)
{
    out += '{';
    bool first = true;
    for (const auto &[k, v] : m) {
        if (!first)
            out += ',';
        first = false;
        json::quote(out, k);
        out += ':';
        json::quote(out, v);
    }
    out += '}';
}

MatchStatement compile(const std::map<std::string, std::string> &m,
                       const std::string &where)
{
    MatchStatement st;
    if (auto it = m.find("hostname"); it != m.end()) {
        RE2::Options o;
        o.set_log_errors(false); // the error goes to the client instead
        o.set_max_mem(max_regex_memory);
        auto re = std::make_shared<const RE2>(it->second, o);
        if (!re->ok())
            throw ObjectError(where +
                              ".hostname: invalid regular expression \"" +
                              it->second + "\": " + re->error());
        st.hostname = std::move(re);
    }
    if (auto it = m.find("within_subnet"); it != m.end()) {
        try {
            st.subnet = core::Cidr::parse(it->second);
        } catch (const std::invalid_argument &e) {
            throw ObjectError(where + ".within_subnet: " + e.what());
        }
    }
    return st;
}

} // namespace

NormalisedObject normalise_object(std::string_view body)
{
    rj::Document doc;
    std::string err;
    if (body.find_first_not_of(" \t\r\n") == std::string_view::npos)
        throw ObjectError("empty request body, expected a JSON object");
    if (!json::parse(doc, body, err))
        throw ObjectError(err);
    if (!doc.IsObject())
        throw ObjectError("expected a JSON object");
    NormalisedObject n;
    n.type = string_member(doc, "type", "object");
    n.label = string_member(doc, "label", "object");
    if (n.type != "group" && n.type != "testrun")
        throw ObjectError("unknown object type \"" + n.type +
                          "\" (expected group or testrun)");
    if (n.label.empty())
        throw ObjectError("object has no label");
    const rj::Value *spec = member(doc, "spec");
    static const rj::Value empty_obj(rj::kObjectType);
    if (!spec || spec->IsNull())
        spec = &empty_obj;
    if (!spec->IsObject())
        throw ObjectError("spec must be a map");

    std::string &out = n.json;
    out = "{\"label\":";
    json::quote(out, n.label);
    out += ",\"type\":";
    json::quote(out, n.type);
    out += ",\"spec\":{";
    if (n.type == "group") {
        out += "\"group\":";
        json::quote(out, string_member(*spec, "group", "spec"));
        out += ",\"matches\":";
        const rj::Value *matches = member(*spec, "matches");
        if (!matches || matches->IsNull()) {
            out += "null";
        } else {
            if (!matches->IsArray())
                throw ObjectError("spec.matches must be a list");
            out += '[';
            size_t i = 0;
            for (const auto &m : matches->GetArray()) {
                std::string where = "spec.matches[" + std::to_string(i) + "]";
                std::map<std::string, std::string> sm;
                if (i++)
                    out += ',';
                if (!string_map(&m, where, sm)) {
                    out += "null";
                    continue;
                }
                compile(sm, where); // refuse bad regex / CIDR now
                put_map(out, sm);
            }
            out += ']';
        }
    } else {
        std::string targettype = string_member(*spec, "targettype", "spec");
        out += "\"targettype\":";
        json::quote(out, targettype);
        out += ",\"source\":";
        std::map<std::string, std::string> source;
        if (string_map(member(*spec, "source"), "spec.source", source))
            put_map(out, source);
        else
            out += "null";
        out += ",\"target\":";
        const rj::Value *target = member(*spec, "target");
        if (targettype == "group") {
            std::map<std::string, std::string> t;
            if (!string_map(target, "spec.target", t))
                throw ObjectError(
                    "spec.target of a group testrun must be a map with "
                    "name, app and args");
            for (const char *k : {"name", "app", "args"})
                if (!t.count(k))
                    throw ObjectError(std::string("spec.target.") + k +
                                      " is missing (give args: \"\" if "
                                      "there are none)");
            put_map(out, t);
        } else if (!target || target->IsNull()) {
            out += "null";
        } else {
            if (!target->IsArray())
                throw ObjectError("spec.target of an uncontrolled testrun "
                                  "must be a list of addresses");
            for (const auto &t : target->GetArray())
                if (!t.IsString())
                    throw ObjectError("spec.target entries must be strings");
            out += json::encode(*target);
        }
        // Ours: the server runs the testrun itself this often. Go's server
        // and CLI ignore the key, as they ignore every unknown one.
        if (const rj::Value *iv = member(*spec, "interval");
            iv && !iv->IsNull()) {
            std::string text;
            if (iv->IsString())
                text = str(*iv);
            else if (iv->IsUint64())
                text = std::to_string(iv->GetUint64()) + "s";
            else
                throw ObjectError("spec.interval must be a duration such as "
                                  "\"30s\", \"5m\" or \"1h\"");
            if (!text.empty()) {
                parse_interval(text); // refuse a bad one now
                out += ",\"interval\":";
                json::quote(out, text);
            }
        }
    }
    out += "}}";
    return n;
}

std::chrono::milliseconds parse_interval(const std::string &text)
{
    using std::chrono::milliseconds;
    auto bad = [&](const std::string &why) {
        return ObjectError("spec.interval \"" + text + "\": " + why +
                           " (a duration such as \"30s\", \"5m\", "
                           "\"1h30m\"; 1s to 24h)");
    };
    if (text.empty() || text.size() > 32)
        throw bad("not a duration");
    int64_t total = 0;
    size_t i = 0;
    // A bare number is seconds; otherwise Go's units ms, s, m and h.
    if (text.find_first_not_of("0123456789") == std::string::npos)
        return parse_interval(text + "s");
    while (i < text.size()) {
        size_t j = i;
        while (j < text.size() &&
               std::isdigit(static_cast<unsigned char>(text[j])))
            ++j;
        if (j == i || j - i > 9)
            throw bad("expected a whole number at offset " + std::to_string(i));
        int64_t v = std::stoll(text.substr(i, j - i));
        size_t k = j;
        while (k < text.size() &&
               std::isalpha(static_cast<unsigned char>(text[k])))
            ++k;
        std::string unit = text.substr(j, k - j);
        int64_t ms;
        if (unit == "ms")
            ms = 1;
        else if (unit == "s")
            ms = 1000;
        else if (unit == "m")
            ms = 60 * 1000;
        else if (unit == "h")
            ms = 3600 * 1000;
        else
            throw bad("unknown unit \"" + unit + "\"");
        total += v * ms;
        if (total > int64_t{24} * 3600 * 1000)
            throw bad("longer than 24h");
        i = k;
    }
    if (total < 1000)
        throw bad("shorter than 1s");
    return milliseconds(total);
}

GroupObject parse_group(const std::string &text)
{
    rj::Document doc;
    std::string err;
    if (!json::parse(doc, text, err) || !doc.IsObject())
        throw ObjectError("stored group is corrupt: " + err);
    GroupObject g;
    g.label = string_member(doc, "label", "object");
    const rj::Value *spec = member(doc, "spec");
    if (!spec || !spec->IsObject())
        return g;
    const rj::Value *matches = member(*spec, "matches");
    if (!matches || !matches->IsArray())
        return g;
    for (const auto &m : matches->GetArray()) {
        std::map<std::string, std::string> sm;
        if (string_map(&m, "spec.matches", sm))
            g.matches.push_back(compile(sm, "spec.matches"));
    }
    return g;
}

TestRunObject parse_testrun(const std::string &text)
{
    rj::Document doc;
    std::string err;
    if (!json::parse(doc, text, err) || !doc.IsObject())
        throw ObjectError("stored testrun is corrupt: " + err);
    TestRunObject t;
    t.label = string_member(doc, "label", "object");
    const rj::Value *spec = member(doc, "spec");
    if (!spec || !spec->IsObject())
        return t;
    t.group_target = string_member(*spec, "targettype", "spec") == "group";
    string_map(member(*spec, "source"), "spec.source", t.source);
    const rj::Value *target = member(*spec, "target");
    if (t.group_target)
        string_map(target, "spec.target", t.target);
    else if (target && target->IsArray())
        for (const auto &v : target->GetArray())
            if (v.IsString())
                t.targets.push_back(str(v));
    if (const rj::Value *iv = member(*spec, "interval"); iv && iv->IsString())
        t.interval = parse_interval(str(*iv));
    return t;
}

} // namespace todd::server
