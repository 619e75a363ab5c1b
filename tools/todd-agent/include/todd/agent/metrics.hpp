// SPDX-License-Identifier: Apache-2.0
// The agent's own Prometheus counters (docs/observability.md). Thread-safe:
// prometheus-cpp's counters are atomic, so the control thread, the worker
// threads and the metrics endpoint's thread all use them without a lock.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <memory>
#include <string_view>

namespace todd::agent {

class AgentMetrics {
  public:
    AgentMetrics();

    void task(std::string_view type);
    /** A response the transport took (sent) or refused (failed); status is
     *  the AgentStatus sent, "" for TestData. */
    void response(std::string_view type, std::string_view status, bool sent);
    void advert(bool sent);
    void asset(bool fetched);

    std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  private:
    std::shared_ptr<prometheus::Registry> registry_;
    prometheus::Family<prometheus::Counter> &tasks_, &statuses_, &data_,
        &send_failures_, &adverts_, &assets_;
};

} // namespace todd::agent
