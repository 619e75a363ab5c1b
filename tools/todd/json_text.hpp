// JSON text helpers for the todd CLI: Go-compatible string quoting and
// re-indentation that keeps the server's bytes (number text, key order).
#pragma once

#include <string>
#include <string_view>

namespace todd::cli {

/// Quotes and escapes @p s like Go's encoding/json (core's msg::go_quote):
/// `"`, `\`, \n, \r, \t short escapes; other control characters, `<`, `>`,
/// `&`, U+2028 and U+2029 as \u00XX / \u20XX; invalid UTF-8 as \ufffd.
std::string go_json_quote(std::string_view s);

/// Returns true if @p text is one complete JSON value (whitespace around
/// allowed). On failure @p why (if given) says what is wrong and where.
bool json_is_valid(std::string_view text, std::string *why = nullptr);

/// Re-indents a valid JSON text like Go's json.Indent(prefix "", indent):
/// tokens are copied verbatim, empty objects/arrays stay `{}` / `[]`.
/// Precondition: json_is_valid(text).
std::string json_indent(std::string_view text, std::string_view indent);

} // namespace todd::cli
