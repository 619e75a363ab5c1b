// SPDX-License-Identifier: Apache-2.0
// What the dashboard page (share/server/dashboard.html, compiled in) reads
// besides ToDD's own endpoints: recent test runs and each testrun's results
// over time, as JSON built from the runs in memory and the store.
#pragma once

#include "store.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace todd::server {

/** The page, and the Content-Security-Policy that allows only its own
 *  inline script (by hash), from embed.py. */
extern const unsigned char dashboard_html[];
extern const std::size_t dashboard_html_size;
extern const char dashboard_csp[];

/** A run the server still holds in memory. */
struct RunSummary {
    std::string uuid, label;
    int64_t started_ms = 0, ended_ms = 0;        // ended 0 = running
    std::map<std::string, std::string> statuses; // agent -> status
};

/** Most rows any dashboard listing returns, whatever the query asks. */
inline constexpr size_t dashboard_max_runs = 200;

/**
 * GET /v1/dashboard/runs: {"runs":[{uuid,label,started_ms,ended_ms,done,
 * agents,failed,statuses}]}, newest first: the live runs, then stored ones
 * not among them, limit in all.
 */
std::string dashboard_runs(const std::vector<RunSummary> &live,
                           const std::vector<StoredResult> &stored,
                           size_t limit);

/**
 * GET /v1/dashboard/series: {"label","series":[{agent,target,metric,
 * points:[[time_ms,value]]}]}: every numeric result of the stored runs
 * (newest first, as Store::recent_results gives them), points oldest first.
 */
std::string dashboard_series(const std::string &label,
                             const std::vector<StoredResult> &stored);

} // namespace todd::server
