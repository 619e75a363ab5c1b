// SPDX-License-Identifier: Apache-2.0
// The NATS plugin on a three-node JetStream cluster on loopback (stream and
// consumers with three replicas): the node the subscriber is connected to
// is killed in the middle of 10,000 tasks, and nothing acknowledged is
// lost; the programs' peers fail over to the other two.
#include "nats_test_util.hpp"
#include "stream_outage.hpp"

#include <iostream>

using namespace natstest;

namespace {

class Cluster : public ::testing::Test {
  protected:
    void SetUp() override { TODD_SKIP_WITHOUT_NATS(); }
};

/** The node whose client port the last "connected to" state names. */
size_t connected_node(const todd::test::NatsCluster &c, const StateLog &states)
{
    size_t node = 0;
    for (const auto &e : states.all())
        for (size_t i = 0; i < c.size(); ++i)
            if (e.state == LinkState::connected &&
                e.detail.find(":" + std::to_string(c.node(i).port())) !=
                    std::string::npos)
                node = i;
    return node;
}

TEST_F(Cluster, NodeKilledMidStreamLosesNothingAcknowledged)
{
    todd::test::NatsCluster cluster;
    const Options o = opts(
        cluster.urls(), {{"replicas", "3"}, {"publish_timeout_ms", "30000"}});
    size_t killed = 0;
    auto r = run_stream_outage(o, [&](const StateLog &states) {
        killed = connected_node(cluster, states);
        cluster.node(killed).kill();
    });
    std::cout << "killed node " << killed + 1 << " of 3; " << r.summary << "\n";
    EXPECT_TRUE(r.ok) << r.failure << "\n" << cluster.log_tail();
    // It comes back and catches up with the others.
    cluster.node(killed).start();
}

} // namespace
