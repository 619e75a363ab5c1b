// SPDX-License-Identifier: Apache-2.0
#include <todd/core/json_limits.hpp>

#include "json.hpp"

#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace todd::json {
namespace {

namespace rj = rapidjson;

/** SAX filter between the reader and the document: counts open arrays and
 *  objects and stops the parse past the bound, and converts numbers itself.
 *  RapidJSON's default number parsing is not correctly rounded (a value
 *  drifted by one ULP per parse and encode) and its full-precision mode
 *  misreads integers above 2^64; std::from_chars is exact. */
class DepthFilter {
  public:
    DepthFilter(rj::Document &doc, unsigned max, bool strict)
        : doc_(doc), max_(max), strict_(strict)
    {
    }
    bool too_deep() const { return too_deep_; }
    bool too_big() const { return too_big_; }
    bool surrogate() const { return surrogate_; }

    bool Null() { return doc_.Null(); }
    bool Bool(bool b) { return doc_.Bool(b); }
    bool Int(int i) { return doc_.Int(i); }
    bool Uint(unsigned u) { return doc_.Uint(u); }
    bool Int64(int64_t i) { return doc_.Int64(i); }
    bool Uint64(uint64_t u) { return doc_.Uint64(u); }
    bool Double(double d) { return doc_.Double(d); }
    bool RawNumber(const char *s, rj::SizeType n, bool)
    {
        const char *end = s + n;
        // The reader has checked the grammar; only the value is left.
        if (std::find_if(s, end, [](char c) {
                return c == '.' || c == 'e' || c == 'E';
            }) == end) {
            if (*s == '-') {
                int64_t i = 0;
                if (std::from_chars(s, end, i).ec == std::errc())
                    return doc_.Int64(i);
            } else {
                uint64_t u = 0;
                if (std::from_chars(s, end, u).ec == std::errc())
                    return doc_.Uint64(u);
            }
        }
        double d = 0;
        const auto r = std::from_chars(s, end, d);
        if (r.ec == std::errc::result_out_of_range) {
            // Overflow is refused as RapidJSON does; underflow reads as the
            // nearest double (0 or a denormal), as strtod gives it.
            const std::string copy(s, n);
            d = std::strtod(copy.c_str(), nullptr);
        } else if (r.ec != std::errc()) {
            return false;
        }
        if (!std::isfinite(d)) {
            too_big_ = true;
            return false;
        }
        return doc_.Double(d);
    }
    bool String(const char *s, rj::SizeType n, bool copy)
    {
        return valid(s, n) && doc_.String(s, n, copy);
    }
    bool Key(const char *s, rj::SizeType n, bool copy)
    {
        return valid(s, n) && doc_.Key(s, n, copy);
    }
    bool StartObject() { return open() && doc_.StartObject(); }
    bool EndObject(rj::SizeType n)
    {
        --depth_;
        return doc_.EndObject(n);
    }
    bool StartArray() { return open() && doc_.StartArray(); }
    bool EndArray(rj::SizeType n)
    {
        --depth_;
        return doc_.EndArray(n);
    }

  private:
    bool open()
    {
        if (++depth_ > max_) {
            too_deep_ = true;
            return false;
        }
        return true;
    }
    /** The reader validates the raw bytes, but decodes a lone surrogate
     *  escape ("\\udc00") to ED B0 80, which is not UTF-8. */
    bool valid(const char *s, rj::SizeType n)
    {
        if (!strict_)
            return true;
        for (const char *p = s;
             (p = static_cast<const char *>(std::memchr(p, '\xED', s + n - p)));
             ++p)
            if (p + 1 < s + n && static_cast<unsigned char>(p[1]) >= 0xA0) {
                surrogate_ = true;
                return false;
            }
        return true;
    }
    rj::Document &doc_;
    unsigned max_, depth_ = 0;
    bool strict_, too_deep_ = false, too_big_ = false, surrogate_ = false;
};

template <unsigned Flags>
std::optional<ParseError> run(rj::Document &doc, std::string_view text,
                              unsigned max)
{
    // RFC 8259 text is UTF-8 without raw control characters, and RapidJSON
    // takes a NUL byte for the end of the input: refuse every NUL here, or
    // "{}\0anything" would read as "{}".
    std::optional<ParseError> err;
    if (const void *nul = std::memchr(text.data(), '\0', text.size())) {
        err.emplace();
        err->offset =
            static_cast<size_t>(static_cast<const char *>(nul) - text.data());
        err->reason = "NUL byte in the text";
        doc.SetNull();
        return err;
    }
    auto generate = [&](rj::Document &handler) {
        // A plain MemoryStream: RapidJSON's EncodedInputStream would skip
        // any of the BOM's three bytes on its own (a leading 0xBF vanished).
        // A BOM is refused, as Go's encoding/json does.
        rj::MemoryStream is(text.data(), text.size());
        DepthFilter filter(handler, max,
                           (Flags & rj::kParseValidateEncodingFlag) != 0);
        rj::Reader reader;
        constexpr unsigned flags =
            Flags | rj::kParseIterativeFlag | rj::kParseNumbersAsStringsFlag;
        const rj::ParseResult r = reader.Parse<flags>(is, filter);
        if (r)
            return true;
        err.emplace();
        err->offset = r.Offset();
        err->too_deep = filter.too_deep();
        err->reason = err->too_deep ? too_deep(max)
                      : filter.too_big()
                          ? "Number too big to be stored in double."
                      : filter.surrogate() ? "Invalid encoding in string."
                                           : rj::GetParseError_En(r.Code());
        return false;
    };
    doc.SetNull();
    doc.Populate(generate);
    return err;
}

} // namespace

std::string too_deep(unsigned max)
{
    return "nesting deeper than " + std::to_string(max) + " levels";
}

std::optional<ParseError> parse(rj::Document &doc, std::string_view text,
                                const ParseOptions &o)
{
    if (o.validate_utf8)
        return run<rj::kParseValidateEncodingFlag>(doc, text, o.max_depth);
    return run<rj::kParseDefaultFlags>(doc, text, o.max_depth);
}

} // namespace todd::json
