// SPDX-License-Identifier: Apache-2.0
// A consumer in its own process for tests/zeromq: an agent-role instance
// that subscribes to a destination, says "ready" once connected, prints
// "got <payload>" for its first delivery and then never settles it, until
// the test kills it with SIGKILL. With "ack", it acknowledges every
// delivery instead (and prints "got <payload>" for each).
//   zeromq-test-helper <plugin-dir> <endpoint> <destination> [ack]
#include <todd/core/transport.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

using namespace todd::core;

int main(int argc, char **argv)
{
    if (argc != 4 && !(argc == 5 && std::string(argv[4]) == "ack")) {
        std::fprintf(stderr,
                     "usage: %s PLUGIN_DIR ENDPOINT DESTINATION [ack]\n",
                     argv[0]);
        return 2;
    }
    const bool ack = argc == 5;
    try {
        auto plugin = PluginRegistry({argv[1]}).load("zeromq");
        auto t = Transport::create(plugin, {{"role", "agent"},
                                            {"endpoint", argv[2]},
                                            {"heartbeat_ms", "100"},
                                            {"heartbeat_timeout_ms", "1000"}});
        t->on_state([](LinkState s, int32_t, const std::string &) {
            if (s == LinkState::connected) {
                std::printf("ready\n");
                std::fflush(stdout);
            }
        });
        // Subscribed before start: "ready" then means subscribed too.
        auto sub = t->subscribe(argv[3], [ack](const Delivery &d) {
            std::printf("got %.*s\n", static_cast<int>(d.payload.size()),
                        d.payload.data());
            std::fflush(stdout);
            while (!ack) // hold the delivery unsettled until killed
                std::this_thread::sleep_for(std::chrono::seconds(1));
            return Verdict::ack;
        });
        t->start();
        for (;;)
            std::this_thread::sleep_for(std::chrono::seconds(1));
    } catch (const std::exception &e) {
        std::fprintf(stderr, "helper: %s\n", e.what());
        return 1;
    }
}
