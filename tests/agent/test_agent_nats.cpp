// SPDX-License-Identifier: Apache-2.0
// todd-agent over a real nats-server with JetStream (a private one started
// by the binary): the broker suite of agent_broker_suite.hpp, with an
// agent.cfg naming `Plugin = nats` and `servers`, and a server restart
// (same port, same store) in the middle.
#include "agent_broker_suite.hpp"
#include "nats_server.hpp"

using namespace todd;
using namespace todd::test;

namespace {

struct Nats {
    using Shared = SharedNatsServer;
    static void require()
    {
        TODD_SKIP_WITHOUT_NATS();
        ASSERT_NE(SharedNatsServer::get(), nullptr)
            << SharedNatsServer::error();
    }
    static std::unique_ptr<core::Transport> transport()
    {
        static auto plugin = core::PluginRegistry({NATS_DIR}).load("nats");
        return core::Transport::create(
            plugin, {{"servers", SharedNatsServer::get()->url()},
                     {"reconnect_wait_ms", "100"}});
    }
    static std::string agent_cfg_comms()
    {
        return "Plugin = nats\nservers = " + SharedNatsServer::get()->url() +
               "\n";
    }
    static std::vector<std::string> program_args()
    {
        return {std::string("--plugin-dir=") + NATS_DIR, "--comms-opt",
                "reconnect_wait_ms=100"};
    }
    static void restart() { SharedNatsServer::get()->restart(); }
};

} // namespace

namespace todd::test {
INSTANTIATE_TYPED_TEST_SUITE_P(Nats, AgentOverBroker, Nats);
} // namespace todd::test
