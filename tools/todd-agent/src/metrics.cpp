// SPDX-License-Identifier: Apache-2.0
#include <todd/agent/metrics.hpp>

#include <string>

namespace todd::agent {

using prometheus::BuildCounter;

AgentMetrics::AgentMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      tasks_(BuildCounter()
                 .Name("todd_agent_tasks_total")
                 .Help("Tasks received from the server, by task type.")
                 .Register(*registry_)),
      statuses_(BuildCounter()
                    .Name("todd_agent_statuses_sent_total")
                    .Help("AgentStatus responses sent, by the status "
                          "(ready, testing, fail).")
                    .Register(*registry_)),
      data_(BuildCounter()
                .Name("todd_agent_test_data_sent_total")
                .Help("TestData responses sent (re-sends included).")
                .Register(*registry_)),
      send_failures_(BuildCounter()
                         .Name("todd_agent_send_failures_total")
                         .Help("Responses the transport did not take, by "
                               "response type.")
                         .Register(*registry_)),
      adverts_(BuildCounter()
                   .Name("todd_agent_adverts_total")
                   .Help("Adverts, by whether the transport took them.")
                   .Register(*registry_)),
      assets_(BuildCounter()
                  .Name("todd_agent_assets_total")
                  .Help("Assets of DownloadAsset tasks, by outcome.")
                  .Register(*registry_))
{
    data_.Add({});
    for (const char *o : {"sent", "failed"})
        adverts_.Add({{"outcome", o}});
}

void AgentMetrics::task(std::string_view type)
{
    tasks_.Add({{"type", std::string(type)}}).Increment();
}

void AgentMetrics::response(std::string_view type, std::string_view status,
                            bool sent)
{
    if (!sent)
        send_failures_.Add({{"type", std::string(type)}}).Increment();
    else if (status.empty())
        data_.Add({}).Increment();
    else
        statuses_.Add({{"status", std::string(status)}}).Increment();
}

void AgentMetrics::advert(bool sent)
{
    adverts_.Add({{"outcome", sent ? "sent" : "failed"}}).Increment();
}

void AgentMetrics::asset(bool fetched)
{
    assets_.Add({{"outcome", fetched ? "fetched" : "failed"}}).Increment();
}

} // namespace todd::agent
