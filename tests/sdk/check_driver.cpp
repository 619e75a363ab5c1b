// SPDX-License-Identifier: Apache-2.0
// Runs `todd-comms check` in the test suite while tools/todd-comms (which
// dispatches to the same function) is not part of the build.
#include "check.hpp"

int main(int argc, char **argv)
{
    return todd_comms_check_main(argc, argv);
}
