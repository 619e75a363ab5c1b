// SPDX-License-Identifier: Apache-2.0
// todd-agent: a ToDD agent over any comms plugin (see docs/agent.md).
#include <todd/agent/cli.hpp>

int main(int argc, char **argv)
{
    return todd::agent::agent_main(argc, argv);
}
