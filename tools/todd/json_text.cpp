#include "json_text.hpp"

#include <todd/core/json_limits.hpp>
#include <todd/core/messages.hpp>

namespace todd::cli {

std::string go_json_quote(std::string_view s)
{
    return msg::go_quote(s);
}

bool json_is_valid(std::string_view text, std::string *why)
{
    // Trailing non-whitespace is an error (root not singular).
    rapidjson::Document doc;
    if (auto err = json::parse(doc, text)) {
        if (why)
            *why = err->reason + " (at offset " + std::to_string(err->offset) +
                   ")";
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
