// SPDX-License-Identifier: Apache-2.0
// `todd-comms check` against a broker transport and a private broker of its
// kind (free ports, own directories; see tests/common/*_broker.hpp). Built
// once per broker plugin: TODD_CHECK_RABBITMQ, _KAFKA or _NATS, with
// TODD_CHECK_PLUGIN the plugin's file.
#include "kafka_broker.hpp"
#include "nats_server.hpp"
#include "rabbitmq_broker.hpp"

#include <gtest/gtest.h>

#include <iostream>
#include <string>
#include <vector>

namespace {

/** Run the checker on the plugin with these --comms-opt values and expect
 *  every rule to pass. */
void expect_conforms(const std::string &name,
                     const std::vector<std::string> &options)
{
    std::vector<std::string> argv = {TODD_CHECKER};
    if (std::string(TODD_CHECKER_SUBCOMMAND) != "")
        argv.push_back(TODD_CHECKER_SUBCOMMAND);
    argv.push_back(TODD_CHECK_PLUGIN);
    for (const auto &o : options) {
        argv.push_back("--comms-opt");
        argv.push_back(o);
    }
    argv.insert(argv.end(), {"--timeout-ms", "5000"});
    auto r = todd::test::run_capture(argv, std::chrono::seconds(120));
    std::cout << r.output;
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << "the " << name << " plugin does not conform";
    EXPECT_EQ(r.output.find("\nFAIL "), std::string::npos);
    EXPECT_NE(r.output.find("PASS ABI-8 "), std::string::npos);
    EXPECT_NE(r.output.find("todd-comms check: " + name + " "),
              std::string::npos);
}

} // namespace

#if defined(TODD_CHECK_RABBITMQ)
TEST(CheckRabbitmq, PluginConformsAgainstAPrivateBroker)
{
    TODD_SKIP_WITHOUT_RABBITMQ();
    todd::test::RabbitmqBroker broker;
    expect_conforms("rabbitmq", {"host=" + broker.host(),
                                 "port=" + std::to_string(broker.port())});
}
#elif defined(TODD_CHECK_KAFKA)
TEST(CheckKafka, PluginConformsAgainstAPrivateBroker)
{
    TODD_SKIP_WITHOUT_KAFKA();
    todd::test::KafkaBroker broker;
    expect_conforms("kafka", {"bootstrap_servers=" + broker.bootstrap()});
}
#elif defined(TODD_CHECK_NATS)
TEST(CheckNats, PluginConformsAgainstAPrivateServer)
{
    TODD_SKIP_WITHOUT_NATS();
    todd::test::NatsServer server;
    expect_conforms("nats", {"servers=" + server.url()});
}
#endif
