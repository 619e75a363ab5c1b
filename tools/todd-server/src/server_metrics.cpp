// SPDX-License-Identifier: Apache-2.0
#include "server_metrics.hpp"

#include "json.hpp"

#include <todd/core/json_limits.hpp>
#include <todd/core/log.hpp>

#include <cmath>
#include <cstdlib>

namespace todd::server {

using prometheus::BuildCounter;
using prometheus::MetricType;
using service::family;
using service::sample;

namespace {

int64_t now_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

} // namespace

ServerMetrics::ServerMetrics(ResultSeriesLimits limits)
    : limits_(limits), registry_(std::make_shared<prometheus::Registry>()),
      adverts_(BuildCounter()
                   .Name("todd_adverts_total")
                   .Help("Agent adverts received, by what became of them.")
                   .Register(*registry_)),
      registrations_(BuildCounter()
                         .Name("todd_agent_registrations_total")
                         .Help("Agents registered (first accepted advert).")
                         .Register(*registry_)),
      expirations_(BuildCounter()
                       .Name("todd_agent_expirations_total")
                       .Help("Agents dropped for sending no advert in time.")
                       .Register(*registry_)),
      tasks_(BuildCounter()
                 .Name("todd_tasks_sent_total")
                 .Help("Tasks the transport accepted, by task type.")
                 .Register(*registry_)),
      task_failures_(BuildCounter()
                         .Name("todd_task_send_failures_total")
                         .Help("Tasks that could not be sent, by task type.")
                         .Register(*registry_)),
      responses_(BuildCounter()
                     .Name("todd_responses_total")
                     .Help("Agent responses received, by type and outcome.")
                     .Register(*registry_)),
      runs_started_(BuildCounter()
                        .Name("todd_testruns_started_total")
                        .Help("Test runs started, by who started them.")
                        .Register(*registry_)),
      runs_refused_(BuildCounter()
                        .Name("todd_testruns_refused_total")
                        .Help("Test runs asked for but not started, by why.")
                        .Register(*registry_)),
      runs_(BuildCounter()
                .Name("todd_testruns_total")
                .Help("Test runs finished, by outcome (ok: every agent "
                      "succeeded; partial: some did; failed: none did).")
                .Register(*registry_)),
      series_dropped_(
          BuildCounter()
              .Name("todd_testrun_result_series_dropped_total")
              .Help("Result samples not kept: the series bound was reached.")
              .Register(*registry_)),
      duration_(
          prometheus::BuildHistogram()
              .Name("todd_testrun_duration_seconds")
              .Help("Wall time of finished test runs, from start to "
                    "the last agent's result.")
              .Register(*registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{
                           0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}))
{
    // Zero series for the outcomes a dashboard alerts on, so that rate()
    // works before the first event.
    for (const char *o : {"ok", "partial", "failed"})
        runs_.Add({{"outcome", o}});
    series_dropped_.Add({});
}

void ServerMetrics::advert(std::string_view outcome)
{
    adverts_.Add({{"outcome", std::string(outcome)}}).Increment();
}
void ServerMetrics::agent_registered()
{
    registrations_.Add({}).Increment();
}
void ServerMetrics::agent_expired()
{
    expirations_.Add({}).Increment();
}
void ServerMetrics::task_sent(std::string_view type)
{
    tasks_.Add({{"type", std::string(type)}}).Increment();
}
void ServerMetrics::task_failed(std::string_view type)
{
    task_failures_.Add({{"type", std::string(type)}}).Increment();
}
void ServerMetrics::response(std::string_view type, std::string_view outcome)
{
    responses_
        .Add({{"type", std::string(type)}, {"outcome", std::string(outcome)}})
        .Increment();
}
void ServerMetrics::run_started(std::string_view origin)
{
    runs_started_.Add({{"origin", std::string(origin)}}).Increment();
}
void ServerMetrics::run_refused(std::string_view reason)
{
    runs_refused_.Add({{"reason", std::string(reason)}}).Increment();
}
void ServerMetrics::run_finished(std::string_view outcome, double seconds)
{
    runs_.Add({{"outcome", std::string(outcome)}}).Increment();
    duration_.Observe(seconds);
}

void ServerMetrics::record_results(const std::string &testrun,
                                   const std::string &data, int64_t time_ms)
{
    uint64_t dropped = 0;
    json::for_each_result(data, [&](const char *agent, const char *target,
                                    const char *metric, double v) {
        Key k{testrun, agent, target, metric};
        auto it = series_.find(k);
        if (it != series_.end())
            it->second = {v, time_ms};
        else if (series_.size() < limits_.max_series)
            series_.emplace(std::move(k), Point{v, time_ms});
        else
            ++dropped;
    });
    if (dropped) {
        series_dropped_.Add({}).Increment(static_cast<double>(dropped));
        log::warn("server", "testrun " + testrun + ": " +
                                std::to_string(dropped) +
                                " result sample(s) not exported: " +
                                std::to_string(limits_.max_series) +
                                " series are kept at most "
                                "([Metrics] MaxResultSeries)");
    }
}

void ServerMetrics::forget_testrun(const std::string &testrun)
{
    auto it = series_.lower_bound({testrun, "", "", ""});
    while (it != series_.end() && std::get<0>(it->first) == testrun)
        it = series_.erase(it);
}

void ServerMetrics::expire(int64_t now)
{
    const int64_t cutoff = now - limits_.ttl.count();
    for (auto it = series_.begin(); it != series_.end();)
        it = it->second.time_ms < cutoff ? series_.erase(it) : std::next(it);
}

std::string ServerMetrics::scrape(const Snapshot &s, core::Comms &comms)
{
    expire(now_ms());
    auto state = std::make_shared<service::FunctionCollector>([&] {
        std::vector<service::MetricFamily> out;
        auto agents =
            family("todd_agents", "Agents registered now.", MetricType::Gauge);
        sample(agents, {}, static_cast<double>(s.agents));
        out.push_back(std::move(agents));
        auto groups = family("todd_group_agents",
                             "Registered agents per group (\"\" = in none).",
                             MetricType::Gauge);
        for (const auto &[g, n] : s.group_agents)
            sample(groups, {{"group", g}}, static_cast<double>(n));
        out.push_back(std::move(groups));
        auto active = family("todd_testruns_active",
                             "Test runs started and not yet finished.",
                             MetricType::Gauge);
        sample(active, {}, static_cast<double>(s.active_runs));
        out.push_back(std::move(active));
        auto sched = family("todd_testruns_scheduled",
                            "Testrun objects the server runs on an interval.",
                            MetricType::Gauge);
        sample(sched, {}, static_cast<double>(s.scheduled_testruns));
        out.push_back(std::move(sched));
        auto count = family("todd_testrun_result_series",
                            "Result series exported now (bounded by "
                            "[Metrics] MaxResultSeries).",
                            MetricType::Gauge);
        sample(count, {}, static_cast<double>(series_.size()));
        out.push_back(std::move(count));
        auto results = family(
            "todd_testrun_result",
            "Latest numeric result per testrun, agent, target and metric, "
            "stamped with the time the server received it.",
            MetricType::Gauge);
        for (const auto &[k, p] : series_)
            sample(results,
                   {{"agent", std::get<1>(k)},
                    {"metric", std::get<3>(k)},
                    {"target", std::get<2>(k)},
                    {"testrun", std::get<0>(k)}},
                   p.value, p.time_ms);
        out.push_back(std::move(results));
        auto p = service::process_families();
        auto c = service::comms_families(comms);
        std::move(p.begin(), p.end(), std::back_inserter(out));
        std::move(c.begin(), c.end(), std::back_inserter(out));
        return out;
    });
    return service::exposition({registry_, state});
}

} // namespace todd::server
