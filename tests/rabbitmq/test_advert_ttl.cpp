// SPDX-License-Identifier: Apache-2.0
// The advert time-to-live on a real broker: a real todd-agent's advert that
// no server consumes expires from the "agentadvert" queue after its TTL
// (core::advert_ttl, 5 s, as the Go agent), so a server that comes later
// is handed the agent's fresh advert, not a stale one.
#include "../signals/program.hpp"
#include "rabbitmq_test_util.hpp"

#include <todd/core/comms.hpp>

#include <filesystem>

using namespace rmqtest;
using sigtest::Program;

namespace {

[[maybe_unused]] auto *const env =
    ::testing::AddGlobalTestEnvironment(new SharedBroker);

struct QueueState {
    long messages = -1, consumers = -1; // -1: no such queue
};

QueueState queue_state(const std::string &name)
{
    std::istringstream in(SharedBroker::get().rabbitmqctl(
        {"list_queues", "name", "messages", "consumers"}));
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string n;
        QueueState s;
        if (f >> n >> s.messages >> s.consumers && n == name)
            return s;
    }
    return {};
}

/** Polls the broker until `pred` holds on the queue's state (bounded). */
template <class Pred>
bool wait_queue(const std::string &name, Pred pred,
                std::chrono::milliseconds limit, QueueState *last)
{
    auto end = std::chrono::steady_clock::now() + limit;
    do {
        *last = queue_state(name);
        if (pred(*last))
            return true;
        std::this_thread::sleep_for(100ms);
    } while (std::chrono::steady_clock::now() < end);
    return false;
}

class AdvertTtl : public ::testing::Test {
  protected:
    void SetUp() override { TODD_SKIP_WITHOUT_RABBITMQ(); }

    /** A todd-agent advertising `addr`, once at start (the next advert
     *  would be an hour later). */
    std::unique_ptr<Program> agent(const std::string &addr)
    {
        std::string d = dir_.path();
        std::filesystem::create_directories(d + "/state");
        std::filesystem::create_directories(d + "/empty");
        int port = SharedBroker::get().port();
        return std::make_unique<Program>(
            std::vector<std::string>{TODD_AGENT_EXE,
                                     "--comms",
                                     "rabbitmq",
                                     "--plugin-dir",
                                     RABBITMQ_PLUGIN_DIR,
                                     "--comms-opt",
                                     "host=127.0.0.1",
                                     "--comms-opt",
                                     "port=" + std::to_string(port),
                                     "--state-dir",
                                     d + "/state",
                                     "--opt-dir",
                                     d + "/opt",
                                     "--testlet-dir",
                                     d + "/empty",
                                     "--factcollector-dir",
                                     d + "/empty",
                                     "--ip-addr-override",
                                     addr,
                                     "--advert-interval",
                                     "3600"});
    }

    sigtest::TempDir dir_;
};

TEST_F(AdvertTtl, AnUnconsumedAdvertExpiresAndAFreshOneIsDelivered)
{
    const std::string q = todd::core::queue_agentadvert;
    QueueState s;
    {
        auto first = agent("127.0.0.2");
        ASSERT_TRUE(wait_queue(
            q, [](const QueueState &x) { return x.messages == 1; }, 30s, &s))
            << "messages " << s.messages << "\n"
            << first->output();
        std::chrono::milliseconds took{};
        ASSERT_EQ(first->terminate(10s, &took), "exit 0") << first->output();
    }
    // Nobody consumes it: it leaves the queue by expiring. Bounded well
    // above the 5 s TTL; without a TTL it would stay for ever.
    EXPECT_EQ(s.consumers, 0);
    ASSERT_TRUE(wait_queue(
        q, [](const QueueState &x) { return x.messages == 0; },
        todd::core::advert_ttl + 20s, &s))
        << "the advert is still on the broker: " << s.messages << " message(s)";
    EXPECT_EQ(s.consumers, 0);

    // A server-side consumer now: the first advert it is handed is the
    // agent's next one (a stale one would have come first, FIFO).
    std::mutex mu;
    std::condition_variable cv;
    std::vector<todd::msg::AgentAdvert> got;
    todd::core::Comms server(make(opts(SharedBroker::get().port())));
    auto sub = server.listen_for_agent([&](const todd::msg::AgentAdvert &a) {
        std::lock_guard lk(mu);
        got.push_back(a);
        cv.notify_all();
        return Verdict::ack;
    });
    ASSERT_TRUE(wait_queue(
        q, [](const QueueState &x) { return x.consumers == 1; }, 30s, &s));
    auto second = agent("127.0.0.3");
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 30s, [&] { return !got.empty(); }))
        << second->output();
    EXPECT_EQ(got.front().default_addr, "127.0.0.3")
        << "the first advert handed over is the stale one";
}

} // namespace
