// SPDX-License-Identifier: Apache-2.0
// The private broker helper itself: starts, answers, restarts, cleans up.
#include "rabbitmq_broker.hpp"

#include <filesystem>
#include <gtest/gtest.h>

using todd::test::RabbitmqBroker;

TEST(RabbitmqBrokerHelper, StartsRestartsAndCleansUp)
{
    TODD_SKIP_WITHOUT_RABBITMQ();
    std::string dir;
    {
        RabbitmqBroker b;
        dir = b.dir();
        EXPECT_TRUE(b.running());
        EXPECT_GT(b.port(), 0);
        EXPECT_NE(b.port(), b.dist_port());
        std::string out = b.rabbitmqctl({"list_exchanges", "name"});
        EXPECT_NE(out.find("amq.direct"), std::string::npos) << out;
        b.rabbitmqctl({"add_vhost", "probe"});
        b.restart();
        EXPECT_TRUE(b.running());
        // mnesia survives a node restart: the vhost is still there.
        EXPECT_NE(b.rabbitmqctl({"list_vhosts"}).find("probe"),
                  std::string::npos);
        b.stop();
        EXPECT_FALSE(b.running());
        int code = 0;
        b.rabbitmqctl({"status"}, &code);
        EXPECT_NE(code, 0);
    }
    EXPECT_FALSE(std::filesystem::exists(dir));
}
