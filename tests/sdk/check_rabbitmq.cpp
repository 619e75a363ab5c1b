// SPDX-License-Identifier: Apache-2.0
// `todd-comms check` against the RabbitMQ plugin and a private broker (free
// port, own node and directories; see tests/common/rabbitmq_broker.hpp).
#include "rabbitmq_broker.hpp"

#include <gtest/gtest.h>

#include <iostream>
#include <string>
#include <vector>

TEST(CheckRabbitmq, PluginConformsAgainstAPrivateBroker)
{
    TODD_SKIP_WITHOUT_RABBITMQ();
    todd::test::RabbitmqBroker broker;
    std::vector<std::string> argv = {TODD_CHECKER};
    if (std::string(TODD_CHECKER_SUBCOMMAND) != "")
        argv.push_back(TODD_CHECKER_SUBCOMMAND);
    argv.insert(argv.end(),
                {TODD_RABBITMQ_PLUGIN, "--comms-opt", "host=" + broker.host(),
                 "--comms-opt", "port=" + std::to_string(broker.port()),
                 "--timeout-ms", "5000"});
    auto r = todd::test::run_capture(argv, std::chrono::seconds(120));
    std::cout << r.output;
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << "the RabbitMQ plugin does not conform";
    EXPECT_EQ(r.output.find("\nFAIL "), std::string::npos);
    EXPECT_NE(r.output.find("PASS ABI-8 "), std::string::npos);
    EXPECT_NE(r.output.find("todd-comms check: rabbitmq "), std::string::npos);
}
