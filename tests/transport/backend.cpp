// SPDX-License-Identifier: Apache-2.0
#include "backend.hpp"

#include "kafka_broker.hpp"
#include "nats_server.hpp"
#include "rabbitmq_broker.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>

namespace todd::test::transport {

using core::LinkState;
using core::Options;

void StateLog::attach(core::Transport &t)
{
    t.on_state([this](LinkState s, int32_t st, const std::string &d) {
        std::lock_guard g(m_);
        log_.push_back({s, st, d});
        cv_.notify_all();
    });
}

bool StateLog::wait(LinkState s, size_t n, std::chrono::milliseconds limit)
{
    std::unique_lock lk(m_);
    return cv_.wait_for(lk, limit, [&] {
        size_t k = 0;
        for (auto &e : log_)
            k += e.state == s;
        return k >= n;
    });
}

size_t StateLog::count(LinkState s)
{
    std::lock_guard g(m_);
    size_t k = 0;
    for (auto &e : log_)
        k += e.state == s;
    return k;
}

std::vector<StateLog::Entry> StateLog::all()
{
    std::lock_guard g(m_);
    return log_;
}

namespace {

/** Instances meet in the plugin itself (loopback's in-process broker). */
class NoService : public Backend {
  public:
    Options options(const std::string &) override { return {}; }
};

/**
 * The server-role instance runs the engine: the first one of a test binds
 * port 0 on 127.0.0.1 and reports the port it got in its connected state;
 * agents, and a server restarted in the same test, use that endpoint.
 */
class ZeroMqService : public Backend {
  public:
    std::optional<std::string> begin() override
    {
        endpoint_.clear();
        return std::nullopt;
    }
    Options options(const std::string &role) override
    {
        if (role != "server" && endpoint_.empty())
            throw std::logic_error(
                "zeromq: open the server before an agent (its port is not "
                "known yet)");
        return {
            {"endpoint", endpoint_.empty() ? "tcp://127.0.0.1:0" : endpoint_},
            {"heartbeat_ms", "100"},
            {"heartbeat_timeout_ms", "1000"}};
    }
    void started(const std::string &role, StateLog &states) override
    {
        if (role != "server" || !endpoint_.empty())
            return;
        const std::string prefix = "engine on ";
        for (auto &e : states.all())
            if (e.state == LinkState::connected &&
                e.detail.rfind(prefix, 0) == 0)
                endpoint_ = e.detail.substr(prefix.size());
        if (endpoint_.empty() || endpoint_.ends_with(":0"))
            throw std::runtime_error(
                "zeromq: the server did not report the endpoint it bound");
    }

  private:
    std::string endpoint_;
};

/** One private broker of type B for the binary, started by the first test
 *  that needs it (a broker takes seconds to start: never one per test) and
 *  stopped when the test program ends. */
template <class B> class BrokerEnvironment : public ::testing::Environment {
  public:
    void TearDown() override { broker.reset(); }
    static inline std::unique_ptr<B> broker;
};
[[maybe_unused]] auto *const rabbitmq_env =
    ::testing::AddGlobalTestEnvironment(new BrokerEnvironment<RabbitmqBroker>);
[[maybe_unused]] auto *const kafka_env =
    ::testing::AddGlobalTestEnvironment(new BrokerEnvironment<KafkaBroker>);
[[maybe_unused]] auto *const nats_env =
    ::testing::AddGlobalTestEnvironment(new BrokerEnvironment<NatsServer>);

/** A backend whose instances meet in a private broker of type B. */
template <class B> class BrokerService : public Backend {
  public:
    /** what names the broker in the reason a test cannot run. */
    explicit BrokerService(std::string what) : what_(std::move(what)) {}
    std::optional<std::string> begin() override
    {
        auto &b = BrokerEnvironment<B>::broker;
        if (b)
            return std::nullopt;
        if (auto why = B::unavailable())
            return why;
        try {
            b = std::make_unique<B>();
        } catch (const std::exception &e) {
            return "no private " + what_ + " could be started: " + e.what();
        }
        return std::nullopt;
    }

  protected:
    static B &broker() { return *BrokerEnvironment<B>::broker; }

  private:
    std::string what_;
};

class RabbitmqService : public BrokerService<RabbitmqBroker> {
  public:
    RabbitmqService() : BrokerService("rabbitmq-server") {}
    bool required() const override
    {
        return std::getenv("TODD_REQUIRE_RABBITMQ") != nullptr;
    }
    Options options(const std::string &) override
    {
        return {{"host", "127.0.0.1"},
                {"port", std::to_string(broker().port())},
                {"reconnect_max", "1000"},
                {"heartbeat", "5"}};
    }
};

/** Destinations are unique per test, so the tests need no topic prefix of
 *  their own on the shared broker. */
class KafkaService : public BrokerService<KafkaBroker> {
  public:
    KafkaService() : BrokerService("Kafka broker") {}
    bool required() const override { return kafka_required(); }
    Options options(const std::string &) override
    {
        return {{"bootstrap_servers", broker().bootstrap()},
                {"reconnect_max_ms", "1000"}};
    }
};

/** Destinations are unique per test: one stream serves every test. */
class NatsService : public BrokerService<NatsServer> {
  public:
    NatsService() : BrokerService("nats-server") {}
    bool required() const override { return nats_required(); }
    Options options(const std::string &) override
    {
        return {{"servers", broker().url()}, {"reconnect_wait_ms", "100"}};
    }
};

} // namespace

std::unique_ptr<Backend> backend_for(const std::string &plugin)
{
    if (plugin == "zeromq")
        return std::make_unique<ZeroMqService>();
    if (plugin == "rabbitmq")
        return std::make_unique<RabbitmqService>();
    if (plugin == "kafka")
        return std::make_unique<KafkaService>();
    if (plugin == "nats")
        return std::make_unique<NatsService>();
    return std::make_unique<NoService>();
}

} // namespace todd::test::transport
