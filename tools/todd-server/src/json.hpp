// SPDX-License-Identifier: Apache-2.0
// JSON text as Go's encoding/json writes it: HTML-safe string escapes,
// shortest float form, optional 2-space indentation (json.MarshalIndent).
#pragma once

#include <todd/core/json_limits.hpp>

#include <functional>
#include <string>
#include <string_view>

namespace todd::server::json {

/** Append s as a Go-quoted JSON string (<, >, & escaped). */
void quote(std::string &out, std::string_view s);
/** Go-quoted JSON string. */
std::string quote(std::string_view s);
/** Append a number as Go prints a float64. */
void number(std::string &out, double v);

/** The encoder refuses (std::length_error) documents deeper than this:
 *  parsed ones are bounded by todd::json::max_depth, and ours add a few. */
inline constexpr unsigned encode_max_depth = 2 * todd::json::max_depth;

/**
 * Encode a value; indent 0 = compact, else that many spaces per level.
 * sort_keys orders object members bytewise (Go maps); otherwise the
 * document order is kept (Go structs).
 */
std::string encode(const rapidjson::Value &v, int indent = 0,
                   bool sort_keys = false);

/** Parse text (todd::json::parse: iterative, nesting bounded); returns
 *  false and sets error to a one-line reason naming the offset. */
bool parse(rapidjson::Document &doc, std::string_view text, std::string &error,
           unsigned max_depth = todd::json::max_depth);

/** A test result as a number: a JSON number, or a string holding one
 *  (Go's testlets print them so); false for anything else or non-finite. */
bool result_number(const rapidjson::Value &v, double &out);

/** Call fn(agent, target, metric, value) for every numeric result (as
 *  result_number reads it) of a run's clean data, {agent: {target:
 *  {metric: value}}}; false when the text is not a JSON object. */
bool for_each_result(
    std::string_view cleandata,
    const std::function<void(const char *agent, const char *target,
                             const char *metric, double v)> &fn);

} // namespace todd::server::json
