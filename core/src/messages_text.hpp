// SPDX-License-Identifier: Apache-2.0
// Text helpers the message encoder and decoders share (messages_text.cpp):
// UTF-8 as Go sees it and Go's string quoting.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace todd::msg::detail {

/** Replace every byte that starts no valid sequence with U+FFFD, as Go's
 *  decoder does for strings. */
std::string sanitize_utf8(const char *p, size_t n);

/** Append s to out as Go's encoding/json quotes a string. */
void append_quoted(std::string &out, std::string_view s);

/** A short, safe rendering of untrusted text for error messages. */
std::string excerpt(std::string_view s);

} // namespace todd::msg::detail
