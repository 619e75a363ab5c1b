// SPDX-License-Identifier: Apache-2.0
// todd-server's JSON reader and writer (tools/todd-server/src/json.cpp), as
// used on REST bodies and on the test data agents send: parse, then encode
// compact with sorted keys (what is stored) and indented (what is served).
// What is written must read back, and from then on write the same again
// (the first encoding may change bytes: invalid UTF-8 becomes \ufffd, as
// Go writes it, which reads back as U+FFFD).
#include "fuzz_common.hpp"

#include "../../tools/todd-server/src/json.hpp"

namespace json = todd::server::json;
using todd::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rapidjson::Document doc;
    std::string err;
    if (!json::parse(doc, todd::fuzz::as_text(data, size), err)) {
        check(!err.empty(), "a refusal without a reason");
        return 0;
    }
    for (int indent : {0, 2}) {
        const std::string first = json::encode(doc, indent, indent == 0);
        rapidjson::Document again;
        check(json::parse(again, first, err), "encoded JSON does not parse");
        const std::string text = json::encode(again, indent, indent == 0);
        check(json::parse(again, text, err), "encoded JSON does not parse");
        check(json::encode(again, indent, indent == 0) == text,
              "encode -> parse -> encode is not stable");
    }
    return 0;
}
