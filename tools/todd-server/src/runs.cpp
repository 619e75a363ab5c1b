// SPDX-License-Identifier: Apache-2.0
// Test runs, from InstallTestRun to the stored result, and the
// schedules of testruns with an interval.
#include "server_impl.hpp"

#include <random>

namespace todd::server {

namespace {

int64_t wall_ms()
{
    return std::chrono::duration_cast<milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/** "1.5" for 1500 ms, "30" for 30000 ms. */
std::string seconds_text(milliseconds d)
{
    std::string secs = std::to_string(d.count() / 1000.0);
    secs.erase(secs.find_last_not_of('0') + 1);
    if (secs.back() == '.')
        secs.pop_back();
    return secs;
}

int status_rank(const std::string &s)
{
    if (s == msg::status_ready)
        return 1;
    if (s == msg::status_testing)
        return 2;
    if (s == msg::status_finished)
        return 3;
    return 0; // init
}

std::string random_uuid()
{
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    static const char hex[] = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 4; ++i) {
        uint64_t v = rng();
        for (int j = 0; j < 16; ++j, v >>= 4)
            s += hex[v & 0xf];
    }
    return s;
}

} // namespace

void Server::Impl::notify(Run &run)
{
    ++run.version;
    auto w = std::move(run.waiters);
    run.waiters.clear();
    for (auto &f : w)
        asio::post(ioc, std::move(f));
}

void Server::Impl::fail_part(Run &run, const std::string &agent,
                             const std::string &reason)
{
    Part &p = run.parts[agent];
    if (p.failed)
        return;
    p.failed = true;
    p.reason = reason;
    log::warn(C, "testrun " + run.uuid + ": agent " + agent +
                     " failed: " + reason);
    notify(run);
}

void Server::Impl::send_for_run(const std::shared_ptr<Run> &run,
                                const std::string &agent, msg::Task task)
{
    std::weak_ptr<Run> w = run;
    sender->push(
        agent, std::move(task), [this, w, agent](const std::string &err) {
            asio::post(ioc, [this, w, agent, err] {
                if (auto r = w.lock(); r && r->phase != Run::Phase::done) {
                    fail_part(*r, agent, err);
                    advance(r);
                }
            });
        });
}

void Server::Impl::arm(const std::shared_ptr<Run> &run, milliseconds d)
{
    std::weak_ptr<Run> w = run;
    auto phase = run->phase;
    run->timer.expires_after(d);
    run->timer.async_wait([this, w, phase](boost::system::error_code ec) {
        auto r = w.lock();
        if (ec || !r || r->phase != phase)
            return;
        on_timeout(r, d_of(*r));
    });
}

milliseconds Server::Impl::d_of(const Run &r)
{
    return r.phase == Run::Phase::executing ? r.exec_wait : cfg.install_timeout;
}

void Server::Impl::on_timeout(const std::shared_ptr<Run> &run,
                              milliseconds waited)
{
    const std::string secs = seconds_text(waited);
    for (auto &[id, p] : run->parts) {
        if (p.failed)
            continue;
        int r = status_rank(p.status);
        switch (run->phase) {
        case Run::Phase::installing:
            if (r < 1)
                fail_part(*run, id, "not ready within " + secs + " s");
            break;
        case Run::Phase::starting_targets:
            if (!p.source && r < 2)
                fail_part(*run, id,
                          "did not start testing within " + secs + " s");
            break;
        case Run::Phase::executing:
            if (r < 3)
                fail_part(*run, id, "no test data within " + secs + " s");
            break;
        case Run::Phase::done: break;
        }
    }
    advance(run);
}

bool Server::Impl::any_live(const Run &run, bool source) const
{
    for (const auto &[id, p] : run.parts)
        if (p.source == source && !p.failed)
            return true;
    return false;
}

void Server::Impl::fail_live_sources(Run &run, const std::string &why)
{
    for (auto &[id, p] : run.parts)
        if (p.source && !p.failed)
            fail_part(run, id, why);
}

void Server::Impl::execute(const std::shared_ptr<Run> &run, bool sources)
{
    int64_t limit = sources ? cfg.source_time_limit : cfg.target_time_limit;
    for (auto &[id, p] : run->parts)
        if (p.source == sources && !p.failed)
            send_for_run(run, id, msg::ExecuteTestRunTask{run->uuid, limit});
}

void Server::Impl::start_sources(const std::shared_ptr<Run> &run)
{
    run->phase = Run::Phase::executing;
    execute(run, true);
    run->exec_wait =
        std::chrono::seconds(std::max(
            cfg.source_time_limit,
            run->spec.group_target ? cfg.target_time_limit : int64_t{0})) +
        cfg.result_grace;
    arm(run, run->exec_wait);
    notify(*run);
}

void Server::Impl::advance(const std::shared_ptr<Run> &run)
{
    switch (run->phase) {
    case Run::Phase::installing:
        for (const auto &[id, p] : run->parts)
            if (!p.failed && status_rank(p.status) < 1)
                return;
        if (!any_live(*run, true))
            return finish(run);
        if (run->spec.group_target) {
            if (!any_live(*run, false)) {
                fail_live_sources(*run, "no target agent is ready");
                return finish(run);
            }
            run->phase = Run::Phase::starting_targets;
            execute(run, false);
            arm(run, cfg.install_timeout);
            notify(*run);
            return;
        }
        return start_sources(run);
    case Run::Phase::starting_targets:
        for (const auto &[id, p] : run->parts)
            if (!p.source && !p.failed && status_rank(p.status) < 2)
                return;
        if (!any_live(*run, false)) {
            fail_live_sources(*run, "no target agent started testing");
            return finish(run);
        }
        return start_sources(run);
    case Run::Phase::executing:
        for (const auto &[id, p] : run->parts)
            if (!p.failed && status_rank(p.status) < 3)
                return;
        return finish(run);
    case Run::Phase::done: return;
    }
}

void Server::Impl::finish(const std::shared_ptr<Run> &run)
{
    // Whoever was never executed (e.g. targets once every source failed)
    // did not succeed either.
    for (auto &[id, p] : run->parts)
        if (!p.failed && p.status != msg::status_finished)
            fail_part(*run, id, "not run: no source agent was left");
    run->phase = Run::Phase::done;
    run->timer.cancel();
    run->ended = steady::now();
    run->ended_ms = wall_ms();
    std::string clean = "{", st = "{";
    bool first_c = true, first_s = true;
    int failed = 0;
    for (const auto &[id, p] : run->parts) {
        if (p.source && !p.failed && p.has_data) {
            if (!first_c)
                clean += ',';
            first_c = false;
            json::quote(clean, id);
            clean += ':' + p.data;
        }
        if (!first_s)
            st += ',';
        first_s = false;
        json::quote(st, id);
        st += ":{\"role\":";
        st += p.source ? "\"source\"" : "\"target\"";
        st += ",\"status\":";
        json::quote(st, p.failed ? std::string(msg::status_fail) : p.status);
        st += ",\"reason\":";
        json::quote(st, p.reason);
        st += '}';
        failed += p.failed;
    }
    run->cleandata = clean + "}";
    run->statuses = st + "}";
    const size_t n = run->parts.size();
    metrics.run_finished(
        failed == 0                       ? "ok"
        : static_cast<size_t>(failed) < n ? "partial"
                                          : "failed",
        std::chrono::duration<double>(run->ended - run->started).count());
    // A testrun deleted while this run went on has had its series removed:
    // they must not come back.
    bool exists = true;
    try {
        exists = store->get_object("testrun", run->label).has_value();
    } catch (const std::exception &) {
        // The store's failure is logged with put_result's below.
    }
    if (exists)
        metrics.record_results(run->label, run->cleandata, run->ended_ms);
    try {
        store->put_result({run->uuid, run->label, run->statuses, run->cleandata,
                           run->started_ms, run->ended_ms});
    } catch (const std::exception &e) {
        log::error(C, "testrun " + run->uuid +
                          ": result kept in memory only: " + e.what());
    }
    log::info(C, "testrun " + run->uuid + " (" + run->label + ") finished: " +
                     std::to_string(run->parts.size() - failed) + " of " +
                     std::to_string(run->parts.size()) + " agent(s) succeeded");
    notify(*run);
    if (obs.on_run_finished)
        obs.on_run_finished(run->uuid);
    // Forget it once a late stream client can no longer want it.
    auto t = std::make_shared<asio::steady_timer>(ioc);
    t->expires_after(cfg.stream_linger + std::chrono::seconds(1));
    t->async_wait([this, t, id = run->uuid](boost::system::error_code ec) {
        if (!ec)
            runs.erase(id);
    });
}

void Server::Impl::on_response(msg::Response r)
{
    if (auto *s = std::get_if<msg::AgentStatusResponse>(&r)) {
        auto it = runs.find(s->test_uuid);
        if (it == runs.end()) {
            log::debug(C, "status for unknown testrun " + s->test_uuid);
            metrics.response("AgentStatus", "ignored");
            return;
        }
        auto run = it->second;
        auto p = run->parts.find(s->agent_uuid);
        if (run->phase == Run::Phase::done || p == run->parts.end() ||
            p->second.failed) {
            metrics.response("AgentStatus", "ignored");
            return;
        }
        metrics.response("AgentStatus", "accepted");
        if (s->status == msg::status_fail) {
            fail_part(*run, s->agent_uuid, "agent reported fail");
        } else if (status_rank(s->status) > status_rank(p->second.status) &&
                   s->status != msg::status_finished) {
            p->second.status = s->status;
            notify(*run);
        }
        advance(run);
        return;
    }
    auto &d = std::get<msg::TestDataResponse>(r);
    // Always acknowledge, so the agent stops resending it.
    sender->push(d.agent_uuid, msg::DeleteTestDataTask{d.test_uuid});
    auto it = runs.find(d.test_uuid);
    if (it == runs.end()) {
        metrics.response("TestData", "ignored");
        return;
    }
    auto run = it->second;
    auto p = run->parts.find(d.agent_uuid);
    if (run->phase == Run::Phase::done || p == run->parts.end() ||
        p->second.failed || p->second.has_data) {
        metrics.response("TestData", "ignored");
        return;
    }
    rj::Document doc;
    std::string err;
    bool ok =
        json::parse(doc, d.test_data, err, todd::json::test_data_max_depth);
    if (ok && !doc.IsObject()) {
        ok = false;
        err = "not a JSON object";
    }
    if (ok)
        for (const auto &m : doc.GetObject())
            if (!m.value.IsObject()) {
                ok = false;
                err = "value for target \"" + std::string(m.name.GetString()) +
                      "\" is not an object";
                break;
            }
    metrics.response("TestData", ok ? "accepted" : "invalid");
    if (!ok) {
        fail_part(*run, d.agent_uuid, "invalid test data: " + err);
    } else {
        p->second.has_data = true;
        p->second.data = json::encode(doc, 0, true);
        p->second.status = msg::status_finished;
        notify(*run);
    }
    advance(run);
}

std::string Server::Impl::start_run(const std::string &label,
                                    std::map<std::string, std::string> f,
                                    const char *origin)
{
    auto obj = store->get_object("testrun", label);
    if (!obj) {
        metrics.run_refused("notfound");
        return "notfound";
    }
    auto run = std::make_shared<Run>(ioc);
    run->origin = origin;
    run->started_ms = wall_ms();
    run->spec = parse_testrun(obj->json);
    run->label = obj->label;
    if (!f["sourceapp"].empty())
        run->spec.source["app"] = f["sourceapp"];
    if (!f["sourceargs"].empty())
        run->spec.source["args"] = f["sourceargs"];
    if (!f["sourcegroup"].empty())
        run->spec.source["name"] = f["sourcegroup"];
    const std::string src_group = run->spec.source["name"];
    const std::string tgt_group =
        run->spec.group_target ? run->spec.target["name"] : "";
    std::vector<std::string> target_addrs;
    for (const auto &[id, a] : agents) {
        if (a.group.empty())
            continue;
        if (run->spec.group_target && a.group == tgt_group) {
            run->parts[id].source = false;
            target_addrs.push_back(a.advert.default_addr);
        } else if (a.group == src_group) {
            run->parts[id].source = true;
        }
    }
    if (!any_live(*run, true) ||
        (run->spec.group_target && !any_live(*run, false))) {
        metrics.run_refused("invalidtopology");
        return "invalidtopology";
    }
    run->uuid = random_uuid();
    run->seq = ++run_seq;
    runs[run->uuid] = run;
    msg::TestRun src{run->uuid,
                     run->spec.group_target ? target_addrs : run->spec.targets,
                     run->spec.source["app"], run->spec.source["args"]};
    msg::TestRun tgt{run->uuid,
                     {"0.0.0.0"},
                     run->spec.target["app"],
                     run->spec.target["args"]};
    for (const auto &[id, p] : run->parts)
        send_for_run(run, id, msg::InstallTestRunTask{p.source ? src : tgt});
    arm(run, cfg.install_timeout);
    metrics.run_started(origin);
    log::info(
        C,
        "testrun " + run->uuid + " (" + run->label + ") started with " +
            std::to_string(run->parts.size()) + " agent(s)" +
            (run->origin == std::string("schedule") ? " on its schedule" : ""));
    return run->uuid;
}

void Server::Impl::reschedule()
{
    std::map<std::string, milliseconds> want;
    for (const auto &o : store->list_objects("testrun")) {
        try {
            auto t = parse_testrun(o.json);
            if (t.interval.count() > 0)
                want[o.label] = t.interval;
        } catch (const std::exception &e) {
            log::error(C, "testrun " + o.label + " not scheduled: " + e.what());
        }
    }
    for (auto it = schedules.begin(); it != schedules.end();) {
        auto w = want.find(it->first);
        if (w == want.end() || w->second != it->second.interval) {
            it->second.timer->cancel();
            log::info(C, "testrun " + it->first + " unscheduled");
            it = schedules.erase(it);
        } else {
            ++it;
        }
    }
    for (const auto &[label, interval] : want) {
        if (schedules.count(label))
            continue;
        Schedule &sc = schedules[label];
        sc.interval = interval;
        sc.timer = std::make_unique<asio::steady_timer>(ioc);
        log::info(C, "testrun " + label + " runs every " +
                         seconds_text(interval) + " s");
        tick_later(label, steady::now() + interval);
    }
}

void Server::Impl::tick_later(const std::string &label, steady::time_point when)
{
    auto &sc = schedules.at(label);
    sc.timer->expires_at(when);
    sc.timer->async_wait([this, label, when](boost::system::error_code ec) {
        if (!ec)
            tick(label, when);
    });
}

void Server::Impl::tick(const std::string &label, steady::time_point due)
{
    auto it = schedules.find(label);
    if (it == schedules.end())
        return;
    Schedule &sc = it->second;
    // Keep the cadence, but never fire twice to catch up.
    auto next = due + sc.interval;
    if (next <= steady::now())
        next = steady::now() + sc.interval;
    tick_later(label, next);
    if (auto r = runs.find(sc.last_uuid);
        r != runs.end() && r->second->phase != Run::Phase::done) {
        metrics.run_refused("still_running");
        log::warn(C, "testrun " + label +
                         ": its previous run is still going; this "
                         "interval's run is skipped");
        return;
    }
    std::string got = start_run(label, {}, "schedule");
    if (got == "notfound" || got == "invalidtopology") {
        if (got != sc.last_refusal)
            log::info(C, "testrun " + label + " not run on its schedule: " +
                             (got == "notfound"
                                  ? "the object is gone"
                                  : "no agent is in its groups (again "
                                    "every interval until one is)"));
        sc.last_refusal = got;
        return;
    }
    sc.last_refusal.clear();
    sc.last_uuid = got;
}

} // namespace todd::server
