// SPDX-License-Identifier: Apache-2.0
// The one JSON parser for text from outside (messages, REST bodies, testlet
// and fact collector output, server replies in the CLI): iterative, and
// refusing nesting deeper than a bound, because everything that later walks
// a document (encoders, copies, comparisons) recurses once per level.
#pragma once

#if defined(__GNUC__)
#pragma GCC system_header // RapidJSON 1.1.0 trips newer compilers' warnings
#endif

#include <rapidjson/document.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace todd::json {

/** Default nesting bound. ToDD's own messages nest at most ~5 levels. */
inline constexpr unsigned max_depth = 64;
/** Testlet output travels two levels down: under its target in TestData,
 *  then under its agent in a run's test data (GET /v1/testdata). */
inline constexpr unsigned test_data_max_depth = max_depth - 1;
inline constexpr unsigned testlet_output_max_depth = max_depth - 2;

struct ParseOptions {
    unsigned max_depth = json::max_depth;
    /** Refuse invalid UTF-8. Off for ToDD messages, whose decoders replace
     *  it with U+FFFD as Go's encoding/json does. */
    bool validate_utf8 = false;
};

/** Why a text was refused: reason is one line, offset a byte index. */
struct ParseError {
    std::string reason;
    size_t offset = 0;
    bool too_deep = false; // valid so far, but nested past the bound
};

/** "nesting deeper than N levels", the refusal every site reports. */
std::string too_deep(unsigned max_depth);

/**
 * Parse one JSON value (whitespace around it allowed, nothing else) into
 * doc. On error doc is left null and the error is returned; a document
 * nested deeper than o.max_depth is refused with too_deep(o.max_depth).
 * NUL bytes are refused (RapidJSON would end the text there); numbers are read
 * correctly rounded (std::from_chars), so parse and encode round-trip.
 * Plain function of the bytes: fuzz targets may call it directly.
 */
std::optional<ParseError> parse(rapidjson::Document &doc, std::string_view text,
                                const ParseOptions &o = {});

} // namespace todd::json
