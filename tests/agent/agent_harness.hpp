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

/** Raw payloads of one queue, decoded lazily by the tests. */
class Inbox {
  public:
    core::Verdict operator()(const core::Delivery &d)
    {
        std::lock_guard lk(mu_);
        got_.emplace_back(d.payload);
        cv_.notify_all();
        return core::Verdict::ack;
    }
    /** Wait until some payload satisfies pred; returns it. */
    std::optional<std::string>
    wait_for(const std::function<bool(const std::string &)> &pred,
             std::chrono::milliseconds limit = 30s)
    {
        std::unique_lock lk(mu_);
        std::optional<std::string> hit;
        cv_.wait_for(lk, limit, [&] {
            for (const auto &p : got_)
                if (pred(p)) {
                    hit = p;
                    return true;
                }
            return false;
        });
        return hit;
    }
    size_t count(const std::function<bool(const std::string &)> &pred)
    {
        std::lock_guard lk(mu_);
        size_t n = 0;
        for (const auto &p : got_)
            n += pred(p) ? 1 : 0;
        return n;
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::string> got_;
};

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

/** Collects log lines (the agent's reasons) for assertions. */
class LogCapture {
  public:
    LogCapture()
    {
        prev_ = log::set_sink(
            [this](log::Level l, std::string_view c, std::string_view m) {
                std::lock_guard lk(mu_);
                lines_.push_back(std::string(c) + ": " + std::string(m));
                if (l <= log::Level::warn)
                    std::fprintf(stderr, "[log] %.*s: %.*s\n", int(c.size()),
                                 c.data(), int(m.size()), m.data());
            });
    }
    ~LogCapture() { log::set_sink(prev_); }
    size_t count(const std::string &needle)
    {
        std::lock_guard lk(mu_);
        size_t n = 0;
        for (const auto &l : lines_)
            n += l.find(needle) != std::string::npos ? 1 : 0;
        return n;
    }
    bool wait_for(const std::string &needle,
                  std::chrono::milliseconds limit = 30s)
    {
        return eventually([&] { return count(needle) > 0; }, limit);
    }

  private:
    std::mutex mu_;
    std::vector<std::string> lines_;
    log::Sink prev_;
};

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
    Inbox responses, adverts;
    std::unique_ptr<agent::Agent> agent;

  private:
    std::unique_ptr<core::Comms> test_comms_;
    core::Subscription responses_sub_, adverts_sub_;
};

} // namespace todd::test
