// SPDX-License-Identifier: Apache-2.0
// Poison messages and the dead_letter_exchange option, against the private
// broker: with the option a message that fails to decode (host verdict
// REJECT) ends up in a queue bound to that exchange; without it the
// behaviour is ToDD's (dropped, queue declared without arguments). Either
// way the host counts it per destination.
#include "files.hpp"
#include "rabbitmq_test_util.hpp"

#include <todd/core/comms.hpp>

using namespace rmqtest;
using todd::core::Comms;
using todd::core::CommsError;

namespace {

[[maybe_unused]] auto *const env =
    ::testing::AddGlobalTestEnvironment(new SharedBroker);

class DeadLetters : public ::testing::Test {
  protected:
    void SetUp() override { TODD_SKIP_WITHOUT_RABBITMQ(); }
    int port() { return SharedBroker::get().port(); }
    std::string queue_arguments(const std::string &q)
    {
        return queue_field(q, "arguments");
    }
    /** One column of `rabbitmqctl list_queues` for queue q. */
    std::string queue_field(const std::string &q, const std::string &field)
    {
        std::string out =
            SharedBroker::get().rabbitmqctl({"list_queues", "name", field});
        for (size_t at = 0; at < out.size();) {
            size_t nl = out.find('\n', at);
            std::string line = out.substr(at, nl - at);
            if (line.rfind(q + "\t", 0) == 0)
                return line.substr(q.size() + 1);
            if (nl == std::string::npos)
                break;
            at = nl + 1;
        }
        return "(queue not found)";
    }
};

bool wait_count(const Transport &t, const std::string &dest, uint64_t n)
{
    auto end = std::chrono::steady_clock::now() + 30s;
    while (t.rejected(dest) < n) {
        if (std::chrono::steady_clock::now() > end)
            return false;
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

TEST_F(DeadLetters, PoisonGoesToTheDeadLetterExchange)
{
    std::string agent = unique("agent"), dlx = unique("dlx"),
                poison = unique("poison");
    RawPeer raw(port());
    raw.declare_dead_letter(dlx, poison);
    Comms comms(make(opts(port(), {{"dead_letter_exchange", dlx}})));
    int handled = 0;
    auto sub = comms.listen_for_tasks(agent, [&](const auto &) {
        ++handled;
        return Verdict::ack;
    });
    EXPECT_NE(queue_arguments(agent).find("x-dead-letter-exchange"),
              std::string::npos)
        << queue_arguments(agent);
    raw.publish(agent, "this is not JSON");
    ASSERT_TRUE(wait_count(comms.transport(), agent, 1));
    auto m = raw.get(poison);
    ASSERT_TRUE(m.has_value()) << "no dead letter in " << poison;
    EXPECT_EQ(m->body, "this is not JSON");
    EXPECT_EQ(handled, 0);
    raw.publish(agent, "{\"neither\": 1}");
    ASSERT_TRUE(wait_count(comms.transport(), agent, 2));
    EXPECT_EQ(comms.transport().rejected().at(agent), 2u);
    ASSERT_TRUE(raw.get(poison).has_value());
}

TEST_F(DeadLetters, WithoutTheOptionPoisonIsDroppedAsBefore)
{
    std::string agent = unique("agent"), dlx = unique("dlx"),
                poison = unique("poison");
    RawPeer raw(port());
    raw.declare_dead_letter(dlx, poison);
    Comms comms(make(opts(port())));
    auto sub = comms.listen_for_tasks(
        agent, [&](const auto &) { return Verdict::ack; });
    EXPECT_EQ(queue_arguments(agent), "[]");
    raw.publish(agent, "this is not JSON");
    ASSERT_TRUE(wait_count(comms.transport(), agent, 1));
    // The broker has settled the rejection once the agent's queue holds the
    // message neither ready nor unacknowledged: not requeued, and from then
    // on an empty poison queue is evidence (no wait for a letter).
    ASSERT_TRUE(todd::test::eventually(
        [&] { return queue_field(agent, "messages") == "0"; }, 30s))
        << "messages in " << agent << ": " << queue_field(agent, "messages");
    EXPECT_EQ(raw.count(poison), 0u) << "dead-lettered without the option";
}

// A queue declared the Go way (no arguments) cannot be redeclared with a
// dead-letter exchange: the broker refuses with 406 and the subscribe
// fails naming the queue (docs/rabbitmq.md says how to migrate).
TEST_F(DeadLetters, ExistingQueueWithoutArgumentsIsRefused)
{
    std::string agent = unique("agent");
    RawPeer raw(port());
    raw.declare(agent);
    Comms comms(make(opts(port(), {{"dead_letter_exchange", unique("dlx")}})));
    try {
        auto sub = comms.listen_for_tasks(
            agent, [&](const auto &) { return Verdict::ack; });
        FAIL() << "subscribe succeeded";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_PROTOCOL) << e.what();
        EXPECT_NE(std::string(e.what()).find("406"), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find(agent), std::string::npos)
            << e.what();
    }
}

} // namespace
