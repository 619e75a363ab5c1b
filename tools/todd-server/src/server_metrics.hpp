// SPDX-License-Identifier: Apache-2.0
// The server's Prometheus metrics: event counters kept in a prometheus-cpp
// registry, and the latest numeric result of every testrun, agent, target
// and metric as a time series with the time it was measured. The gauges
// of the registry of agents are the server's to give at scrape time
// (Snapshot). docs/observability.md lists every metric and its labels.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <todd/service/metrics.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>

namespace todd::server {

/** Bounds of the result series ([Metrics] keys, docs/observability.md). */
struct ResultSeriesLimits {
    /** Series kept at once; a new one beyond it is dropped and counted. */
    size_t max_series = 10000;
    /** A series not refreshed this long is forgotten: Prometheus refuses
     *  samples much older than its head block anyway. */
    std::chrono::milliseconds ttl{3600 * 1000};
};

/** Thread-safe counters; the result series are the I/O thread's alone. */
class ServerMetrics {
  public:
    explicit ServerMetrics(ResultSeriesLimits limits);

    // Event counters (any thread) ---------------------------------------
    /** outcome: accepted, invalid (bad UUID), assets_missing. */
    void advert(std::string_view outcome);
    void agent_registered();
    void agent_expired();
    void task_sent(std::string_view type);
    void task_failed(std::string_view type);
    /** type: AgentStatus or TestData; outcome: accepted, ignored (for no
     *  run in progress, or a repeat), invalid (TestData refused). */
    void response(std::string_view type, std::string_view outcome);
    /** origin: api or schedule. */
    void run_started(std::string_view origin);
    /** reason: notfound, invalidtopology, still_running (a scheduled run
     *  whose previous run has not finished). */
    void run_refused(std::string_view reason);
    /** outcome: ok, partial, failed. */
    void run_finished(std::string_view outcome, double seconds);

    // Result series (I/O thread) -----------------------------------------
    /**
     * Record a finished run's clean data, {agent: {target: {metric: v}}}
     * as compact JSON; numbers and numeric strings become samples at
     * time_ms, anything else is skipped.
     */
    void record_results(const std::string &testrun, const std::string &data,
                        int64_t time_ms);
    /** Forget every series of a testrun (its object was deleted). */
    void forget_testrun(const std::string &testrun);
    size_t series_count() const { return series_.size(); }

    /** What the server reports of its state at scrape time. */
    struct Snapshot {
        size_t agents = 0;
        std::map<std::string, size_t> group_agents; // "" = no group
        size_t active_runs = 0;
        size_t scheduled_testruns = 0;
    };
    /** The whole exposition: registry, snapshot, series, process, comms. */
    std::string scrape(const Snapshot &s, core::Comms &comms);

  private:
    using Key = std::tuple<std::string, std::string, std::string,
                           std::string>; // testrun, agent, target, metric
    struct Point {
        double value;
        int64_t time_ms;
    };
    void expire(int64_t now_ms);

    ResultSeriesLimits limits_;
    std::shared_ptr<prometheus::Registry> registry_;
    prometheus::Family<prometheus::Counter> &adverts_, &registrations_,
        &expirations_, &tasks_, &task_failures_, &responses_, &runs_started_,
        &runs_refused_, &runs_, &series_dropped_;
    prometheus::Histogram &duration_;
    std::map<Key, Point> series_;
};

} // namespace todd::server
