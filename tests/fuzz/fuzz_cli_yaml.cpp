// SPDX-License-Identifier: Apache-2.0
// The todd CLI's YAML object files (tools/todd/objects.cpp): any YAML error
// or invalid object is an ObjectError. The JSON it makes is sent to the
// server, so it must be valid JSON, and the server must take it as the
// object sent or refuse it with its own clear error (e.g. a bad regex).
#include "fuzz_common.hpp"

#include "../../tools/todd-server/src/json.hpp"
#include "../../tools/todd-server/src/objects.hpp"
#include "../../tools/todd/json_text.hpp"
#include "../../tools/todd/objects.hpp"

using todd::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    todd::cli::ObjectJson obj;
    try {
        obj = todd::cli::yaml_object_to_json(todd::fuzz::as_text(data, size),
                                             "fuzz.yml");
    } catch (const todd::cli::ObjectError &) {
        return 0;
    }
    std::string why;
    check(todd::cli::json_is_valid(obj.json, &why),
          "the CLI made invalid JSON");
    (void)todd::cli::json_indent(obj.json, "  ");
    // obj.label is the YAML's text; the JSON carries it Go-quoted (invalid
    // UTF-8 as U+FFFD), so compare with the label as sent.
    rapidjson::Document sent;
    check(todd::server::json::parse(sent, obj.json, why) && sent.IsObject() &&
              sent.HasMember("label") && sent["label"].IsString(),
          "the CLI's JSON has no label");
    try {
        const auto n = todd::server::normalise_object(obj.json);
        check(n.type == obj.type, "the server reads another type");
        check(n.label == std::string(sent["label"].GetString(),
                                     sent["label"].GetStringLength()),
              "the server reads another label than the CLI sent");
    } catch (const todd::server::ObjectError &) {
    }
    return 0;
}
