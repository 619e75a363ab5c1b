// SPDX-License-Identifier: Apache-2.0
// REST bodies of POST /v1/object/create as todd-server validates them
// (tools/todd-server/src/objects.cpp). A refusal is ObjectError; what is
// accepted is stored and read back later, so its normalised JSON must parse
// again as the same object, and normalising it must settle after one round
// (invalid UTF-8 is written as \ufffd the first time, as Go does).
#include "fuzz_common.hpp"

#include "../../tools/todd-server/src/objects.hpp"

namespace server = todd::server;
using todd::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    server::NormalisedObject n;
    try {
        n = server::normalise_object(todd::fuzz::as_text(data, size));
    } catch (const server::ObjectError &) {
        return 0;
    }
    check(!n.label.empty(), "an accepted object has no label");
    server::NormalisedObject again;
    try {
        again = server::normalise_object(n.json);
    } catch (const server::ObjectError &) {
        todd::fuzz::fail("the stored JSON of an accepted object is refused");
    }
    check(again.type == n.type, "the stored JSON changes the object's type");
    try {
        const auto third = server::normalise_object(again.json);
        check(third.json == again.json && third.label == again.label,
              "normalising does not settle after one round");
    } catch (const server::ObjectError &) {
        todd::fuzz::fail("a normalised object is refused");
    }
    try {
        if (n.type == "group") {
            const server::GroupObject g = server::parse_group(n.json);
            check(g.label == n.label, "group label changed when read back");
            // An agent's facts as an advert carries them.
            const todd::msg::Facts facts = {
                {"Hostname", {"todd-agent-1"}},
                {"Addresses", {"10.1.2.3", "fe80::1%eth0", "::1"}}};
            (void)g.matches_agent(facts);
        } else if (n.type == "testrun") {
            const server::TestRunObject t = server::parse_testrun(n.json);
            check(t.label == n.label, "testrun label changed when read back");
        }
    } catch (const server::ObjectError &) {
        todd::fuzz::fail("the stored JSON of an accepted object is unreadable");
    }
    return 0;
}
