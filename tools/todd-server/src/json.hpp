// SPDX-License-Identifier: Apache-2.0
// JSON text as Go's encoding/json writes it: HTML-safe string escapes,
// shortest float form, optional 2-space indentation (json.MarshalIndent).
#pragma once

#include <rapidjson/document.h>

#include <string>
#include <string_view>

namespace todd::server::json {

/** Append s as a Go-quoted JSON string (<, >, & escaped). */
void quote(std::string &out, std::string_view s);
/** Go-quoted JSON string. */
std::string quote(std::string_view s);
/** Append a number as Go prints a float64. */
void number(std::string &out, double v);

/**
 * Encode a value; indent 0 = compact, else that many spaces per level.
 * sort_keys orders object members bytewise (Go maps); otherwise the
 * document order is kept (Go structs).
 */
std::string encode(const rapidjson::Value &v, int indent = 0,
                   bool sort_keys = false);

/** Parse text; returns false and sets error to a one-line reason. */
bool parse(rapidjson::Document &doc, std::string_view text, std::string &error);

} // namespace todd::server::json
