// SPDX-License-Identifier: Apache-2.0
// Prometheus exposition shared by todd-server and todd-agent: the
// process_* and todd_comms_* families read at scrape time, a collectable
// made from a function, and the /metrics, /healthz and /readyz replies.
// prometheus-cpp (Debian prometheus-cpp-dev) holds the registry and writes
// the text format; docs/observability.md lists every metric.
#pragma once

#include <todd/core/comms.hpp>
#include <todd/service/http.hpp>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace todd::service {

using prometheus::MetricFamily;

/** A collectable whose families a function computes at each scrape, on
 *  the scraping thread (the caller's I/O thread). */
class FunctionCollector : public prometheus::Collectable {
  public:
    using Fn = std::function<std::vector<MetricFamily>()>;
    explicit FunctionCollector(Fn fn) : fn_(std::move(fn)) {}
    std::vector<MetricFamily> Collect() const override { return fn_(); }

  private:
    Fn fn_;
};

/** An empty family of a type, to fill with sample(). */
MetricFamily family(std::string name, std::string help,
                    prometheus::MetricType type);
/** Append one sample; timestamp_ms 0 means "at scrape time". */
void sample(MetricFamily &f,
            std::vector<std::pair<std::string, std::string>> labels,
            double value, int64_t timestamp_ms = 0);

/** process_cpu_seconds_total, process_resident_memory_bytes,
 *  process_virtual_memory_bytes, process_open_fds, process_max_fds and
 *  process_start_time_seconds of this process, from /proc/self. */
std::vector<MetricFamily> process_families();

/** The transport's host-side counters (core::TransportCounters), the
 *  facade's refusals and the link state, as todd_comms_*, labelled with
 *  the plugin's name. Thread-safe: reads atomics only. */
std::vector<MetricFamily> comms_families(core::Comms &comms);

/** Every family of the collectables, in the text format 0.0.4. */
std::string
exposition(const std::vector<std::shared_ptr<prometheus::Collectable>> &from);

/** GET /metrics: 200 with the text format's content type. */
http::Response metrics_reply(const http::Request &req, std::string text);

/** One check of /readyz: its name, whether it passes, and what it saw. */
struct Check {
    std::string name;
    bool ok = false;
    std::string detail;
};

/** /healthz and /readyz: 200 when every check passes, else 503; the body
 *  is JSON {"status":"ok"|"unavailable","checks":{name:{ok,detail}}}. */
http::Response health_reply(const http::Request &req,
                            const std::vector<Check> &checks);

} // namespace todd::service
