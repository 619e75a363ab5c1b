// SPDX-License-Identifier: Apache-2.0
// A testlet's stdout as todd-agent reads it (compact_testlet_output in
// tools/todd-agent/src/agent.cpp). Output that is not a JSON object is an
// invalid_argument; what is accepted travels to the server inside TestData,
// so it must be compact, stable, and read by the server as an object.
#include "fuzz_common.hpp"

#include <todd/agent/agent.hpp>

#include "../../tools/todd-server/src/json.hpp"

#include <stdexcept>

using todd::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::string out;
    try {
        out = todd::agent::compact_testlet_output(
            todd::fuzz::as_text(data, size));
    } catch (const std::invalid_argument &) {
        return 0;
    }
    check(todd::agent::compact_testlet_output(out) == out,
          "compacting is not idempotent");
    const std::string sent = todd::agent::encode_test_data({{"10.0.0.1", out}});
    rapidjson::Document doc;
    std::string err;
    check(todd::server::json::parse(doc, sent, err),
          "the server cannot parse test data the agent accepted");
    check(doc.IsObject() && doc.MemberCount() == 1 &&
              doc.MemberBegin()->value.IsObject(),
          "the server does not see the target's object");
    return 0;
}
