// SPDX-License-Identifier: Apache-2.0
// Test harness: a real agent (todd-agent-lib) over a real transport plugin,
// and a test-side Comms on the same transport that publishes tasks onto the
// agent's queue and listens on agentresponses and agentadvert.
#pragma once

#include <todd/agent/agent.hpp>
#include <todd/core/comms.hpp>
#include <todd/core/log.hpp>
#include <todd/core/messages.hpp>
#include <todd/core/plugin_registry.hpp>

#include "../common/inbox.hpp"
#include "../common/log_capture.hpp"
#include "files.hpp"
#include "temp_dir.hpp"
#include "todd_build_config.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace todd::test {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

inline std::string vector_text(const std::string &name)
{
    std::string s = read_file(std::string(TODD_VECTORS_DIR) + "/" + name);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
        s.pop_back();
    return s;
}

/** A response's fields, or nullopt when it does not decode. */
inline std::optional<msg::Response> response_of(const std::string &raw)
{
    try {
        return msg::decode_response(raw);
    } catch (const msg::DecodeError &) {
        return std::nullopt;
    }
}

inline bool is_status(const std::string &raw, const std::string &agent,
                      const std::string &test, std::string_view status)
{
    auto r = response_of(raw);
    if (!r)
        return false;
    auto *s = std::get_if<msg::AgentStatusResponse>(&*r);
    return s && s->agent_uuid == agent && s->test_uuid == test &&
           s->status == status;
}

inline bool is_data(const std::string &raw, const std::string &agent,
                    const std::string &test)
{
    auto r = response_of(raw);
    if (!r)
        return false;
    auto *d = std::get_if<msg::TestDataResponse>(&*r);
    return d && d->agent_uuid == agent && d->test_uuid == test;
}

/** Replace every occurrence of from by to. */
inline std::string replace_all(std::string s, const std::string &from,
                               const std::string &to)
{
    for (size_t p = 0; (p = s.find(from, p)) != std::string::npos;
         p += to.size())
        s.replace(p, from.size(), to);
    return s;
}

/** The agent_uuid of a Go vector response. */
inline std::string vector_agent_uuid(const std::string &raw)
{
    auto r = msg::decode_response(raw);
    return std::visit([](const auto &x) { return x.agent_uuid; }, r);
}

/** One agent plus the test's own view of the same transport. */
class AgentHarness {
  public:
    using ConfigFn = std::function<void(agent::AgentConfig &)>;

    AgentHarness(std::function<std::unique_ptr<core::Transport>()> make,
                 const ConfigFn &tweak = {})
    {
        test_comms_ = std::make_unique<core::Comms>(make());
        test_comms_->start();
        responses_sub_ = test_comms_->transport().subscribe(
            core::queue_agentresponses, std::ref(responses));
        adverts_sub_ = test_comms_->transport().subscribe(
            core::queue_agentadvert, std::ref(adverts));

        agent::AgentConfig cfg;
        cfg.state_dir = dir.path() + "/state";
        cfg.opt_dir = dir.path() + "/opt";
        cfg.builtin_testlet_dir =
            std::string(TODD_SOURCE_ROOT) + "/share/testlets";
        cfg.builtin_factcollector_dir = dir.path() + "/no-builtin-collectors";
        cfg.search_path_for_toddping = false;
        cfg.advert_interval = 1h; // only the first advert and asset changes
        cfg.resend_initial = 100ms;
        cfg.resend_max = 400ms;
        cfg.check_timeout = 20s;
        if (tweak)
            tweak(cfg);
        agent = std::make_unique<agent::Agent>(
            cfg, std::make_unique<core::Comms>(make()));
        agent->start();
    }
    ~AgentHarness()
    {
        if (agent)
            agent->stop();
        responses_sub_.reset();
        adverts_sub_.reset();
        test_comms_->stop();
    }

    const std::string &uuid() const { return agent->uuid(); }
    /** Publish raw bytes onto the agent's own task queue. */
    void publish_task(const std::string &payload)
    {
        test_comms_->send_raw(uuid(), payload);
    }
    void publish(const std::string &queue, const std::string &payload)
    {
        test_comms_->send_raw(queue, payload);
    }
    std::optional<msg::AgentAdvert>
    wait_advert(const std::function<bool(const msg::AgentAdvert &)> &pred,
                std::chrono::milliseconds limit = 30s)
    {
        auto raw = adverts.wait_for(
            [&](const std::string &p) {
                try {
                    auto a = msg::decode_advert(p);
                    return a.uuid == uuid() && pred(a);
                } catch (const msg::DecodeError &) {
                    return false;
                }
            },
            limit);
        if (!raw)
            return std::nullopt;
        return msg::decode_advert(*raw);
    }

    TempDir dir;
    PayloadInbox responses, adverts; // raw payloads, decoded by the tests
    std::unique_ptr<agent::Agent> agent;

  private:
    std::unique_ptr<core::Comms> test_comms_;
    core::Subscription responses_sub_, adverts_sub_;
};

} // namespace todd::test
