#include "json_text.hpp"

#include <cstdint>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

namespace todd::cli {

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if it is invalid
// (overlong forms, surrogates and code points above U+10FFFF included).
std::size_t utf8_len(std::string_view s, std::size_t i, std::uint32_t &cp)
{
    auto b = static_cast<unsigned char>(s[i]);
    std::size_t n;
    std::uint32_t min;
    if (b < 0x80) {
        cp = b;
        return 1;
    } else if ((b & 0xE0) == 0xC0) {
        n = 2, cp = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
        n = 3, cp = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
        n = 4, cp = b & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (i + n > s.size())
        return 0;
    for (std::size_t k = 1; k < n; ++k) {
        auto c = static_cast<unsigned char>(s[i + k]);
        if ((c & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (c & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

} // namespace

std::string go_json_quote(std::string_view s)
{
    static const char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(s.size() + 2);
    out.push_back('"');
    for (std::size_t i = 0; i < s.size();) {
        std::uint32_t cp = 0;
        std::size_t n = utf8_len(s, i, cp);
        if (n == 0) {
            out += "\\ufffd";
            ++i;
            continue;
        }
        if (n == 1) {
            char c = s[i];
            switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (cp < 0x20 || c == '<' || c == '>' || c == '&') {
                    out += "\\u00";
                    out.push_back(hex[cp >> 4]);
                    out.push_back(hex[cp & 0xF]);
                } else {
                    out.push_back(c);
                }
            }
        } else if (cp == 0x2028 || cp == 0x2029) {
            out += cp == 0x2028 ? "\\u2028" : "\\u2029";
        } else {
            out.append(s.substr(i, n));
        }
        i += n;
    }
    out.push_back('"');
    return out;
}

bool json_is_valid(std::string_view text, std::string *why)
{
    // Default flags: trailing non-whitespace is an error (root not singular).
    rapidjson::Document doc;
    doc.Parse(text.data(), text.size());
    if (doc.HasParseError()) {
        if (why)
            *why =
                std::string(rapidjson::GetParseError_En(doc.GetParseError())) +
                " (at offset " + std::to_string(doc.GetErrorOffset()) + ")";
        return false;
    }
    return true;
}

std::string json_indent(std::string_view text, std::string_view indent)
{
    std::string out;
    int depth = 0;
    auto newline = [&] {
        out.push_back('\n');
        for (int d = 0; d < depth; ++d)
            out.append(indent);
    };
    bool need_indent = false; // a value follows an opening bracket
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        if (need_indent && c != ']' && c != '}') {
            ++depth;
            newline();
            need_indent = false;
        }
        switch (c) {
        case '"': {
            std::size_t j = i + 1;
            while (j < text.size() && text[j] != '"')
                j += text[j] == '\\' ? 2 : 1;
            out.append(text.substr(i, j + 1 - i));
            i = j;
            break;
        }
        case '{':
        case '[':
            out.push_back(c);
            need_indent = true;
            break;
        case '}':
        case ']':
            if (need_indent) {
                need_indent = false; // empty: stays "{}" / "[]"
            } else {
                --depth;
                newline();
            }
            out.push_back(c);
            break;
        case ',':
            out.push_back(',');
            newline();
            break;
        case ':': out += ": "; break;
        default: out.push_back(c);
        }
    }
    return out;
}

} // namespace todd::cli
