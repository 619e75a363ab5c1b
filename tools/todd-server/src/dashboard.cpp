// SPDX-License-Identifier: Apache-2.0
#include "dashboard.hpp"

#include "json.hpp"

#include <todd/core/messages.hpp>

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>

namespace todd::server {

namespace rj = rapidjson;

namespace {

void put_run(std::string &out, const RunSummary &r)
{
    size_t failed = 0;
    for (const auto &[a, st] : r.statuses)
        failed += st == msg::status_fail;
    out += "{\"uuid\":";
    json::quote(out, r.uuid);
    out += ",\"label\":";
    json::quote(out, r.label);
    out += ",\"started_ms\":" + std::to_string(r.started_ms) +
           ",\"ended_ms\":" + std::to_string(r.ended_ms) +
           ",\"done\":" + (r.ended_ms ? "true" : "false") +
           ",\"agents\":" + std::to_string(r.statuses.size()) +
           ",\"failed\":" + std::to_string(failed) + ",\"statuses\":{";
    bool first = true;
    for (const auto &[a, st] : r.statuses) {
        if (!first)
            out += ',';
        first = false;
        json::quote(out, a);
        out += ':';
        json::quote(out, st);
    }
    out += "}}";
}

/** A stored result as a summary: statuses is {agent: {"status": ...}}. */
RunSummary summarise(const StoredResult &r)
{
    RunSummary s{r.uuid, r.label, r.started_ms, r.ended_ms, {}};
    rj::Document doc;
    std::string err;
    if (json::parse(doc, r.statuses, err) && doc.IsObject())
        for (const auto &m : doc.GetObject())
            if (m.value.IsObject())
                if (auto st = m.value.FindMember("status");
                    st != m.value.MemberEnd() && st->value.IsString())
                    s.statuses[m.name.GetString()] = st->value.GetString();
    if (s.ended_ms == 0) // never 0 for a finished run
        s.ended_ms = 1;
    return s;
}

} // namespace

std::string dashboard_runs(const std::vector<RunSummary> &live,
                           const std::vector<StoredResult> &stored,
                           size_t limit)
{
    std::vector<RunSummary> all(live);
    std::set<std::string> seen;
    for (const auto &r : live)
        seen.insert(r.uuid);
    for (const auto &r : stored)
        if (!seen.count(r.uuid))
            all.push_back(summarise(r));
    // Running first, then by start, newest first.
    std::stable_sort(all.begin(), all.end(), [](const auto &a, const auto &b) {
        return std::tuple(a.ended_ms == 0, a.started_ms, a.ended_ms) >
               std::tuple(b.ended_ms == 0, b.started_ms, b.ended_ms);
    });
    if (all.size() > limit)
        all.resize(limit);
    std::string out = "{\"runs\":[";
    for (size_t i = 0; i < all.size(); ++i) {
        if (i)
            out += ',';
        put_run(out, all[i]);
    }
    return out + "]}";
}

std::string dashboard_series(const std::string &label,
                             const std::vector<StoredResult> &stored)
{
    using Key = std::tuple<std::string, std::string, std::string>;
    std::map<Key, std::vector<std::pair<int64_t, double>>> series;
    for (auto r = stored.rbegin(); r != stored.rend(); ++r)
        json::for_each_result(r->cleandata, [&](const char *agent,
                                                const char *target,
                                                const char *metric, double v) {
            series[{agent, target, metric}].push_back({r->ended_ms, v});
        });
    std::string out = "{\"label\":";
    json::quote(out, label);
    out += ",\"series\":[";
    bool first = true;
    for (const auto &[k, pts] : series) {
        if (!first)
            out += ',';
        first = false;
        out += "{\"agent\":";
        json::quote(out, std::get<0>(k));
        out += ",\"target\":";
        json::quote(out, std::get<1>(k));
        out += ",\"metric\":";
        json::quote(out, std::get<2>(k));
        out += ",\"points\":[";
        for (size_t i = 0; i < pts.size(); ++i) {
            if (i)
                out += ',';
            out += '[' + std::to_string(pts[i].first) + ',';
            json::number(out, pts[i].second);
            out += ']';
        }
        out += "]}";
    }
    return out + "]}";
}

} // namespace todd::server
