// SPDX-License-Identifier: Apache-2.0
// UTF-8 as Go's unicode/utf8 sees it and Go's string quoting, shared by
// the message encoder and decoders. docs/wire-format.md lists the rules.
#include <todd/core/messages.hpp>

#include "messages_text.hpp"

#include <cstdint>

namespace todd::msg {
namespace {

// --------------------------------------------------------------------------
// UTF-8 as Go's unicode/utf8 sees it

/** Width of the valid UTF-8 sequence at s[i] (storing its code point), or 0
 *  when the byte there starts no valid sequence (Go: RuneError, width 1). */
size_t utf8_rune(std::string_view s, size_t i, uint32_t &cp)
{
    const auto b = [&](size_t k) -> unsigned {
        return static_cast<unsigned char>(s[i + k]);
    };
    const size_t left = s.size() - i;
    const unsigned c0 = b(0);
    if (c0 < 0x80) {
        cp = c0;
        return 1;
    }
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c0 >= 0xC2 && c0 <= 0xDF) {
        n = 2;
    } else if (c0 >= 0xE0 && c0 <= 0xEF) {
        n = 3;
        if (c0 == 0xE0)
            lo = 0xA0; // no overlongs
        else if (c0 == 0xED)
            hi = 0x9F; // no surrogates
    } else if (c0 >= 0xF0 && c0 <= 0xF4) {
        n = 4;
        if (c0 == 0xF0)
            lo = 0x90;
        else if (c0 == 0xF4)
            hi = 0x8F; // nothing above U+10FFFF
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    if (b(1) < lo || b(1) > hi)
        return 0;
    for (size_t k = 2; k < n; ++k)
        if (b(k) < 0x80 || b(k) > 0xBF)
            return 0;
    cp = c0 & (0xFF >> (n + 1));
    for (size_t k = 1; k < n; ++k)
        cp = (cp << 6) | (b(k) & 0x3F);
    return n;
}

} // namespace

namespace detail {

/** Replace every byte that starts no valid sequence with U+FFFD, as Go's
 *  decoder does for strings. */
std::string sanitize_utf8(const char *p, size_t n)
{
    std::string_view s(p, n);
    size_t i = 0;
    uint32_t cp;
    while (i < n) { // fast path: most input is valid
        size_t w = utf8_rune(s, i, cp);
        if (w == 0)
            break;
        i += w;
    }
    if (i == n)
        return std::string(s);
    std::string out(s.substr(0, i));
    while (i < n) {
        size_t w = utf8_rune(s, i, cp);
        if (w == 0) {
            out += "\xEF\xBF\xBD";
            ++i;
        } else {
            out.append(s.substr(i, w));
            i += w;
        }
    }
    return out;
}

constexpr char hexdigits[] = "0123456789abcdef";

void append_quoted(std::string &out, std::string_view s)
{
    out += '"';
    size_t start = 0, i = 0;
    const auto flush = [&] { out.append(s.substr(start, i - start)); };
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            if (c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' &&
                c != '&') {
                ++i;
                continue;
            }
            flush();
            switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default: // Go 1.9 writes \b and \f as \u0008 and \u000c too
                out += "\\u00";
                out += hexdigits[c >> 4];
                out += hexdigits[c & 0xF];
            }
            start = ++i;
            continue;
        }
        uint32_t cp = 0;
        const size_t w = utf8_rune(s, i, cp);
        if (w == 0) {
            flush();
            out += "\\ufffd";
            start = ++i;
            continue;
        }
        if (cp == 0x2028 || cp == 0x2029) {
            flush();
            out += "\\u202";
            out += hexdigits[cp & 0xF];
            i += w;
            start = i;
            continue;
        }
        i += w;
    }
    flush();
    out += '"';
}

/** A short, safe rendering of untrusted text for error messages. */
std::string excerpt(std::string_view s)
{
    constexpr size_t max = 64;
    if (s.size() <= max)
        return go_quote(s);
    return go_quote(s.substr(0, max)) + "...";
}

} // namespace detail

using detail::append_quoted;

std::string go_quote(std::string_view s)
{
    std::string out;
    out.reserve(s.size() + 2);
    append_quoted(out, s);
    return out;
}

} // namespace todd::msg
