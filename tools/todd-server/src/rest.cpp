// SPDX-License-Identifier: Apache-2.0
// ToDD's REST API, /metrics, the health checks, the dashboard page and
// the data it reads, and the asset server's replies.
#include "server_impl.hpp"

#include <sstream>

namespace todd::server {

namespace {

std::string url_decode(std::string_view in)
{
    std::string out;
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] == '+') {
            out += ' ';
        } else if (in[i] == '%' && i + 2 < in.size() &&
                   std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
                   std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
            out += static_cast<char>(
                std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
            i += 2;
        } else {
            out += in[i];
        }
    }
    return out;
}

/** First value of a query parameter ("" when absent). */
std::string query_param(std::string_view query, std::string_view key)
{
    while (!query.empty()) {
        auto amp = query.find('&');
        auto part = query.substr(0, amp);
        auto eq = part.find('=');
        if (url_decode(part.substr(0, eq)) == key)
            return eq == std::string_view::npos
                       ? std::string()
                       : url_decode(part.substr(eq + 1));
        if (amp == std::string_view::npos)
            break;
        query.remove_prefix(amp + 1);
    }
    return {};
}

} // namespace

http::Response Server::Impl::rest(const http::Request &req)
{
    std::string target(req.target());
    auto q = target.find('?');
    std::string path = target.substr(0, q);
    std::string query = q == std::string::npos ? "" : target.substr(q + 1);
    if (path == "/v1/agent")
        return http::ok(req, list_agents(query_param(query, "uuid")));
    if (path == "/v1/groups")
        return http::ok(req, group_map_json());
    if (path == "/v1/object/group" || path == "/v1/object/testrun" ||
        path == "/v1/object/list")
        return list_objects(req, target);
    if (path == "/v1/object/create")
        return create_object(req);
    if (path == "/v1/object/delete")
        return delete_object(req);
    if (path == "/v1/testrun/run")
        return run_testrun(req);
    if (path == "/v1/testdata")
        return testdata(req, query_param(query, "testUuid"));
    if (path == "/v1/testrun/status")
        return run_status(req, query_param(query, "testUuid"));
    if (path == "/metrics")
        return service::metrics_reply(req, scrape());
    if (path == "/healthz")
        return service::health_reply(req, {});
    if (path == "/readyz")
        return service::health_reply(req, readiness());
    if (path == "/dashboard" || path == "/dashboard/") {
        auto res = http::ok(
            req, std::string(reinterpret_cast<const char *>(dashboard_html),
                             dashboard_html_size));
        res.set(bhttp::field::content_type, "text/html; charset=utf-8");
        // The page talks only to this server and runs only its own
        // script.
        res.set("Content-Security-Policy", dashboard_csp);
        res.set(bhttp::field::cache_control, "no-cache");
        return res;
    }
    if (path == "/v1/dashboard/runs")
        return http::ok(req, dashboard_runs_json(query));
    if (path == "/v1/dashboard/series") {
        std::string label = query_param(query, "label");
        if (label.empty())
            return http::error(req, status::bad_request, "label is required");
        return http::ok(
            req, dashboard_series(label, store->recent_results(
                                             label, limit_param(query, 100))));
    }
    return http::not_found(req);
}

std::string Server::Impl::scrape()
{
    ServerMetrics::Snapshot snap;
    snap.agents = agents.size();
    for (const auto &[id, a] : agents)
        ++snap.group_agents[a.group];
    for (const auto &[id, r] : runs)
        snap.active_runs += r->phase != Run::Phase::done;
    snap.scheduled_testruns = schedules.size();
    return metrics.scrape(snap, *comms);
}

std::vector<service::Check> Server::Impl::readiness()
{
    std::vector<service::Check> checks;
    auto state = comms->transport().state();
    checks.push_back({"transport", state == core::LinkState::connected,
                      comms->transport().plugin().name + " " +
                          std::string(core::to_string(state))});
    try {
        store->ping();
        checks.push_back({"store", true, store->path()});
    } catch (const std::exception &e) {
        checks.push_back({"store", false, e.what()});
    }
    return checks;
}

size_t Server::Impl::limit_param(const std::string &query, size_t def)
{
    std::string v = query_param(query, "limit");
    if (v.empty() || v.size() > 6 ||
        v.find_first_not_of("0123456789") != std::string::npos)
        return def;
    return std::clamp<size_t>(std::stoul(v), 1, dashboard_max_runs);
}

std::string Server::Impl::dashboard_runs_json(const std::string &query)
{
    const size_t limit = limit_param(query, 20);
    std::vector<RunSummary> live;
    for (const auto &[id, r] : runs) {
        RunSummary s{r->uuid, r->label, r->started_ms, r->ended_ms, {}};
        for (const auto &[aid, p] : r->parts)
            s.statuses[aid] =
                p.failed ? std::string(msg::status_fail) : p.status;
        live.push_back(std::move(s));
    }
    return dashboard_runs(live, store->recent_results("", limit), limit);
}

std::string Server::Impl::list_agents(const std::string &prefix)
{
    std::vector<const std::pair<const std::string, Agent> *> sel;
    for (const auto &e : agents)
        if (!prefix.empty() && e.first.rfind(prefix, 0) == 0) {
            sel.push_back(&e);
            break;
        }
    if (sel.empty()) // as ToDD: no match shows every agent
        for (const auto &e : agents)
            sel.push_back(&e);
    rj::Document doc(rj::kArrayType);
    auto &al = doc.GetAllocator();
    auto s = [&](const std::string &v) {
        return rj::Value(v.data(), static_cast<rj::SizeType>(v.size()), al);
    };
    auto now = steady::now();
    for (const auto *e : sel) {
        const msg::AgentAdvert &a = e->second.advert;
        rj::Value o(rj::kObjectType);
        o.AddMember("Uuid", s(a.uuid), al);
        o.AddMember("DefaultAddr", s(a.default_addr), al);
        auto left =
            std::chrono::duration_cast<milliseconds>(e->second.deadline - now)
                .count();
        int64_t secs = left <= 0 ? 0 : (left + 999) / 1000;
        o.AddMember("Expires",
                    rj::Value(static_cast<int64_t>(secs * 1000000000LL)), al);
        o.AddMember("LocalTime", s(msg::format_rfc3339(a.local_time)), al);
        if (a.facts) {
            rj::Value f(rj::kObjectType);
            for (const auto &[k, vs] : *a.facts) {
                rj::Value arr(rj::kArrayType);
                for (const auto &v : vs)
                    arr.PushBack(s(v), al);
                f.AddMember(s(k), arr, al);
            }
            o.AddMember("Facts", f, al);
        } else {
            o.AddMember("Facts", rj::Value(), al);
        }
        for (auto [key, h] : {std::pair{"FactCollectors", &a.fact_collectors},
                              std::pair{"Testlets", &a.testlets}}) {
            rj::Value m(rj::kObjectType);
            for (const auto &[k, v] : *h)
                m.AddMember(s(k), s(v), al);
            o.AddMember(rj::StringRef(key), m, al);
        }
        doc.PushBack(o, al);
    }
    return json::encode(doc, 2);
}

std::string Server::Impl::group_map_json()
{
    rj::Document doc(rj::kObjectType);
    auto &al = doc.GetAllocator();
    for (const auto &[id, a] : agents)
        if (!a.group.empty())
            doc.AddMember(rj::Value(id.c_str(), al),
                          rj::Value(a.group.c_str(), al), al);
    return json::encode(doc, 2);
}

http::Response Server::Impl::list_objects(const http::Request &req,
                                          const std::string &target)
{
    // ToDD takes the type from the raw URI, query included.
    std::vector<std::string> pieces;
    std::stringstream ss(target);
    for (std::string p; std::getline(ss, p, '/');)
        pieces.push_back(p);
    std::string type = pieces.size() > 3 ? pieces[3] : "";
    rj::Document doc(rj::kArrayType);
    auto &al = doc.GetAllocator();
    for (const auto &o : store->list_objects(type)) {
        rj::Document od;
        std::string err;
        if (!json::parse(od, o.json, err))
            return http::error(req, status::internal_server_error,
                               "Internal Error");
        rj::Value v(od, al);
        doc.PushBack(v, al);
    }
    return http::ok(req, json::encode(doc, 2));
}

http::Response Server::Impl::create_object(const http::Request &req)
{
    NormalisedObject n;
    try {
        n = normalise_object(req.body());
    } catch (const ObjectError &e) {
        log::info(C, std::string("create refused: ") + e.what());
        return http::error(req, status::bad_request, e.what());
    }
    store->put_object({n.type, n.label, n.json});
    log::info(C, "object " + n.type + "/" + n.label + " stored");
    if (n.type == "group") {
        reload_groups();
        recompute_groups();
    } else {
        reschedule();
    }
    return http::ok(req, "");
}

http::Response Server::Impl::delete_object(const http::Request &req)
{
    rj::Document doc;
    std::string err;
    if (req.body().find_first_not_of(" \t\r\n") == std::string::npos)
        return http::error(req, status::bad_request,
                           "empty request body, expected "
                           "{\"label\":...,\"type\":...}");
    if (!json::parse(doc, req.body(), err))
        return http::error(req, status::bad_request, err);
    if (!doc.IsObject())
        return http::error(req, status::bad_request, "expected a JSON object");
    std::string label, type;
    for (const auto &m : doc.GetObject()) {
        std::string k = m.name.GetString();
        for (auto &c : k)
            c = static_cast<char>(std::tolower(c));
        if ((k == "label" || k == "type") && !m.value.IsString())
            return http::error(req, status::bad_request,
                               k + " must be a string");
        if (k == "label")
            label = m.value.GetString();
        else if (k == "type")
            type = m.value.GetString();
    }
    if (label.empty() || type.empty())
        return http::error(req, status::bad_request,
                           "both label and type are required");
    if (!store->delete_object(type, label))
        return http::error(req, status::not_found,
                           "object " + type + "/" + label + " not found");
    log::info(C, "object " + type + "/" + label + " deleted");
    if (type == "group") {
        reload_groups();
        recompute_groups();
    } else if (type == "testrun") {
        reschedule();
        metrics.forget_testrun(label);
    }
    return http::ok(req, "");
}

http::Response Server::Impl::run_testrun(const http::Request &req)
{
    rj::Document doc;
    std::string err;
    if (req.body().find_first_not_of(" \t\r\n") == std::string::npos)
        return http::error(req, status::bad_request,
                           "empty request body, expected "
                           "{\"testRunName\":...}");
    if (!json::parse(doc, req.body(), err))
        return http::error(req, status::bad_request, err);
    if (!doc.IsObject())
        return http::error(req, status::bad_request, "expected a JSON object");
    std::map<std::string, std::string> f;
    for (const auto &m : doc.GetObject()) {
        std::string k = m.name.GetString();
        for (auto &c : k)
            c = static_cast<char>(std::tolower(c));
        if (m.value.IsNull())
            continue;
        if (!m.value.IsString())
            return http::error(req, status::bad_request,
                               std::string(m.name.GetString()) +
                                   " must be a string");
        f[k] = m.value.GetString();
    }
    return http::ok(req, start_run(f["testrunname"], f, "api"));
}

http::Response Server::Impl::testdata(const http::Request &req,
                                      const std::string &id)
{
    if (id.empty())
        return http::error(req, status::bad_request,
                           "Error, test UUID not provided.");
    if (auto it = runs.find(id);
        it != runs.end() && it->second->phase == Run::Phase::done)
        return http::ok(req, it->second->cleandata);
    if (runs.count(id))
        return http::error(req, status::not_found,
                           "Error, test UUID not found.");
    auto r = store->get_result(id);
    if (!r)
        return http::error(req, status::not_found,
                           "Error, test UUID not found.");
    return http::ok(req, r->cleandata);
}

http::Response Server::Impl::run_status(const http::Request &req,
                                        const std::string &id)
{
    if (id.empty())
        return http::error(req, status::bad_request,
                           "Error, test UUID not provided.");
    std::string label, statuses;
    bool done = true;
    if (auto it = runs.find(id); it != runs.end()) {
        const Run &run = *it->second;
        label = run.label;
        done = run.phase == Run::Phase::done;
        if (done) {
            statuses = run.statuses;
        } else {
            statuses = "{";
            for (const auto &[aid, p] : run.parts) {
                if (statuses.size() > 1)
                    statuses += ',';
                json::quote(statuses, aid);
                statuses += std::string(":{\"role\":") +
                            (p.source ? "\"source\"" : "\"target\"") +
                            ",\"status\":";
                json::quote(statuses, p.failed ? std::string(msg::status_fail)
                                               : p.status);
                statuses += ",\"reason\":";
                json::quote(statuses, p.reason);
                statuses += '}';
            }
            statuses += '}';
        }
    } else if (auto r = store->get_result(id)) {
        label = r->label;
        statuses = r->statuses;
    } else {
        return http::error(req, status::not_found,
                           "Error, test UUID not found.");
    }
    std::string body = "{\"uuid\":" + json::quote(id) +
                       ",\"label\":" + json::quote(label) +
                       ",\"done\":" + (done ? "true" : "false") +
                       ",\"agents\":" + statuses + "}";
    rj::Document doc;
    std::string err;
    json::parse(doc, body, err);
    return http::ok(req, json::encode(doc, 2));
}

http::Response Server::Impl::serve_asset(const http::Request &req)
{
    AssetReply r = read_asset(assets->root(), std::string(req.target()));
    if (r.status != 200) {
        log::debug(C, "asset " + std::string(req.target()) +
                          " refused: " + r.body);
        if (r.status == 404)
            return http::not_found(req);
        return http::error(req, static_cast<status>(r.status),
                           r.status == 400 ? "Bad Request" : "Internal Error");
    }
    auto res = http::ok(req, std::move(r.body));
    res.set(bhttp::field::content_type, "application/octet-stream");
    log::debug(C, "served asset " + std::string(req.target()));
    return res;
}

} // namespace todd::server
