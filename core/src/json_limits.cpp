// SPDX-License-Identifier: Apache-2.0
#include <todd/core/json_limits.hpp>

#include "json.hpp"

#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

namespace todd::json {
namespace {

namespace rj = rapidjson;

/** SAX filter between the reader and the document: counts open arrays and
 *  objects and stops the parse past the bound. */
class DepthFilter {
  public:
    DepthFilter(rj::Document &doc, unsigned max) : doc_(doc), max_(max) {}
    bool too_deep() const { return too_deep_; }

    bool Null() { return doc_.Null(); }
    bool Bool(bool b) { return doc_.Bool(b); }
    bool Int(int i) { return doc_.Int(i); }
    bool Uint(unsigned u) { return doc_.Uint(u); }
    bool Int64(int64_t i) { return doc_.Int64(i); }
    bool Uint64(uint64_t u) { return doc_.Uint64(u); }
    bool Double(double d) { return doc_.Double(d); }
    bool RawNumber(const char *s, rj::SizeType n, bool copy)
    {
        return doc_.RawNumber(s, n, copy);
    }
    bool String(const char *s, rj::SizeType n, bool copy)
    {
        return doc_.String(s, n, copy);
    }
    bool Key(const char *s, rj::SizeType n, bool copy)
    {
        return doc_.Key(s, n, copy);
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
    rj::Document &doc_;
    unsigned max_, depth_ = 0;
    bool too_deep_ = false;
};

template <unsigned Flags>
std::optional<ParseError> run(rj::Document &doc, std::string_view text,
                              unsigned max)
{
    std::optional<ParseError> err;
    auto generate = [&](rj::Document &handler) {
        rj::MemoryStream ms(text.data(), text.size());
        rj::EncodedInputStream<rj::UTF8<>, rj::MemoryStream> is(ms);
        DepthFilter filter(handler, max);
        rj::Reader reader;
        const rj::ParseResult r =
            reader.Parse<Flags | rj::kParseIterativeFlag>(is, filter);
        if (r)
            return true;
        err.emplace();
        err->offset = r.Offset();
        err->too_deep = filter.too_deep();
        err->reason =
            err->too_deep ? too_deep(max) : rj::GetParseError_En(r.Code());
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
    constexpr unsigned utf8 = rj::kParseValidateEncodingFlag;
    constexpr unsigned full = rj::kParseFullPrecisionFlag;
    if (o.validate_utf8 && o.full_precision)
        return run<utf8 | full>(doc, text, o.max_depth);
    if (o.validate_utf8)
        return run<utf8>(doc, text, o.max_depth);
    if (o.full_precision)
        return run<full>(doc, text, o.max_depth);
    return run<rj::kParseDefaultFlags>(doc, text, o.max_depth);
}

} // namespace todd::json
