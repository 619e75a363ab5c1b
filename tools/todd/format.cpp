#include "format.hpp"

#include "json_text.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <strings.h>

#include <todd/core/json_limits.hpp>

namespace todd::cli {

namespace {

// ---- Go text/tabwriter ----------------------------------------------------

struct Cell {
    std::string_view text;
    int width; // in code points, as Go counts runes
};
using Line = std::vector<Cell>;

int rune_count(std::string_view s)
{
    int n = 0;
    for (unsigned char c : s)
        n += (c & 0xC0) != 0x80;
    return n;
}

constexpr int kTabWidth = 8;

class TabWriter {
  public:
    TabWriter(std::vector<Line> lines, int padding)
        : lines_(std::move(lines)), padding_(padding)
    {
    }

    std::string run()
    {
        format(0, lines_.size());
        return std::move(out_);
    }

  private:
    void pad(int textw, int cellw)
    {
        cellw = (cellw + kTabWidth - 1) / kTabWidth * kTabWidth;
        int n = cellw - textw;
        out_.append(static_cast<std::size_t>((n + kTabWidth - 1) / kTabWidth),
                    '\t');
    }

    void write_lines(std::size_t line0, std::size_t line1)
    {
        for (std::size_t i = line0; i < line1; ++i) {
            const Line &line = lines_[i];
            for (std::size_t j = 0; j < line.size(); ++j) {
                out_.append(line[j].text);
                if (j < widths_.size())
                    pad(line[j].width, widths_[j]);
            }
            if (i + 1 < lines_.size())
                out_.push_back('\n');
        }
    }

    // Go's Writer.format: column blocks are runs of lines that have a cell
    // (other than their last, unterminated one) at the current column.
    void format(std::size_t line0, std::size_t line1)
    {
        std::size_t column = widths_.size();
        for (std::size_t cur = line0; cur < line1; ++cur) {
            if (column + 1 >= lines_[cur].size())
                continue;
            write_lines(line0, cur);
            line0 = cur;
            int width = 0;
            for (; cur < line1; ++cur) {
                if (column + 1 >= lines_[cur].size())
                    break;
                width = std::max(width, lines_[cur][column].width + padding_);
            }
            widths_.push_back(width);
            format(line0, cur);
            widths_.pop_back();
            line0 = cur;
            if (cur == line1)
                break;
        }
        write_lines(line0, line1);
    }

    std::vector<Line> lines_;
    int padding_;
    std::vector<int> widths_;
    std::string out_;
};

// ---- Go number formatting -------------------------------------------------

// Shortest round-trip digits and decimal exponent of |v| (v finite, != 0).
void shortest_digits(double v, std::string &digits, int &exp10)
{
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, std::fabs(v),
                           std::chars_format::scientific);
    std::string_view s(buf, static_cast<std::size_t>(r.ptr - buf));
    auto e = s.find('e');
    digits.clear();
    for (char c : s.substr(0, e))
        if (c != '.')
            digits.push_back(c);
    exp10 = std::stoi(std::string(s.substr(e + 1)));
}

std::string fixed_from_digits(const std::string &d, int exp10)
{
    // value = 0.d * 10^(exp10+1)
    int dp = exp10 + 1;
    std::string out;
    if (dp <= 0) {
        out = "0." + std::string(static_cast<std::size_t>(-dp), '0') + d;
    } else if (static_cast<std::size_t>(dp) >= d.size()) {
        out = d + std::string(static_cast<std::size_t>(dp) - d.size(), '0');
    } else {
        out = d.substr(0, static_cast<std::size_t>(dp)) + "." +
              d.substr(static_cast<std::size_t>(dp));
    }
    return out;
}

std::string exp_from_digits(const std::string &d, int exp10, int min_exp_digits)
{
    std::string out = d.substr(0, 1);
    if (d.size() > 1)
        out += "." + d.substr(1);
    out += exp10 < 0 ? "e-" : "e+";
    std::string e = std::to_string(std::abs(exp10));
    if (static_cast<int>(e.size()) < min_exp_digits)
        e.insert(0, static_cast<std::size_t>(min_exp_digits) - e.size(), '0');
    return out + e;
}

// fmt's %v for a float64 (strconv 'g', shortest, exponent when < -4 or >= 21).
std::string go_fmt_v(double v)
{
    if (v == 0)
        return std::signbit(v) ? "-0" : "0";
    if (!std::isfinite(v))
        return std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
    std::string d;
    int exp10;
    shortest_digits(v, d, exp10);
    std::string body = exp10 < -4 || exp10 >= 21 ? exp_from_digits(d, exp10, 2)
                                                 : fixed_from_digits(d, exp10);
    return v < 0 ? "-" + body : body;
}

// encoding/json's float64 text ('f' for 1e-6 <= |v| < 1e21, else 'e').
std::string go_json_number(double v)
{
    if (v == 0)
        return "0";
    std::string d;
    int exp10;
    shortest_digits(v, d, exp10);
    double a = std::fabs(v);
    std::string body = (a < 1e-6 || a >= 1e21) ? exp_from_digits(d, exp10, 1)
                                               : fixed_from_digits(d, exp10);
    return v < 0 ? "-" + body : body;
}

std::string compact_json(const rapidjson::Value &v);

std::string scalar_text(const rapidjson::Value &v)
{
    if (v.IsString())
        return std::string(v.GetString(), v.GetStringLength());
    return compact_json(v);
}

std::string compact_json(const rapidjson::Value &v)
{
    switch (v.GetType()) {
    case rapidjson::kNullType: return "null";
    case rapidjson::kFalseType: return "false";
    case rapidjson::kTrueType: return "true";
    case rapidjson::kStringType:
        return go_json_quote({v.GetString(), v.GetStringLength()});
    case rapidjson::kNumberType:
        if (v.IsInt64())
            return std::to_string(v.GetInt64());
        if (v.IsUint64())
            return std::to_string(v.GetUint64());
        return go_json_number(v.GetDouble());
    case rapidjson::kArrayType: {
        std::string out = "[";
        for (rapidjson::SizeType i = 0; i < v.Size(); ++i)
            out += (i ? "," : "") + compact_json(v[i]);
        return out + "]";
    }
    case rapidjson::kObjectType: {
        std::map<std::string, const rapidjson::Value *> sorted;
        for (const auto &m : v.GetObject())
            sorted[{m.name.GetString(), m.name.GetStringLength()}] = &m.value;
        std::string out = "{";
        bool first = true;
        for (const auto &[k, val] : sorted) {
            out += (first ? "" : ",") + go_json_quote(k) + ":" +
                   compact_json(*val);
            first = false;
        }
        return out + "}";
    }
    }
    return {};
}

// fmt's %v for a value decoded into interface{} (maps sorted, "map[k:v]").
std::string go_v(const rapidjson::Value &v)
{
    switch (v.GetType()) {
    case rapidjson::kNullType: return "<nil>";
    case rapidjson::kFalseType: return "false";
    case rapidjson::kTrueType: return "true";
    case rapidjson::kStringType: return {v.GetString(), v.GetStringLength()};
    case rapidjson::kNumberType: return go_fmt_v(v.GetDouble());
    case rapidjson::kArrayType: {
        std::string out = "[";
        for (rapidjson::SizeType i = 0; i < v.Size(); ++i)
            out += (i ? " " : "") + go_v(v[i]);
        return out + "]";
    }
    case rapidjson::kObjectType: {
        std::map<std::string, std::string> sorted;
        for (const auto &m : v.GetObject())
            sorted[{m.name.GetString(), m.name.GetStringLength()}] =
                go_v(m.value);
        std::string out = "map[";
        bool first = true;
        for (const auto &[k, s] : sorted) {
            out += (first ? "" : " ") + k + ":" + s;
            first = false;
        }
        return out + "]";
    }
    }
    return {};
}

rapidjson::Document parse_json(std::string_view body, const char *what)
{
    rapidjson::Document doc;
    if (auto err = json::parse(doc, body)) {
        if (err->too_deep)
            throw ReplyError(std::string(what) + " refused: " + err->reason +
                             " (at offset " + std::to_string(err->offset) +
                             ")");
        std::string shown(body.substr(0, 60));
        while (!shown.empty() && (shown.back() == '\n' || shown.back() == '\r'))
            shown.pop_back();
        throw ReplyError(std::string(what) + " is not valid JSON (" +
                         err->reason + " at offset " +
                         std::to_string(err->offset) + "): \"" + shown +
                         (body.size() > 60 ? "...\"" : "\""));
    }
    return doc;
}

const rapidjson::Value *member_ci(const rapidjson::Value &obj, const char *key)
{
    for (const auto &m : obj.GetObject())
        if (strcasecmp(m.name.GetString(), key) == 0)
            return &m.value;
    return nullptr;
}

std::string join(const std::vector<std::string> &items, std::string_view sep)
{
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i)
            out += sep;
        out += items[i];
    }
    return out;
}

template <class M> std::vector<std::string> keys(const M &m)
{
    std::vector<std::string> out;
    for (const auto &kv : m)
        out.push_back(kv.first);
    return out;
}

std::string tab_safe(std::string s)
{
    // A tab or newline inside a value would break the table layout.
    std::replace(s.begin(), s.end(), '\t', ' ');
    std::replace(s.begin(), s.end(), '\n', ' ');
    return s;
}

} // namespace

std::string tabwrite(std::string_view text, int padding)
{
    std::vector<Line> lines;
    std::size_t start = 0;
    while (true) {
        std::size_t nl = text.find('\n', start);
        std::string_view line = text.substr(start, nl == std::string_view::npos
                                                       ? std::string_view::npos
                                                       : nl - start);
        Line cells;
        std::size_t cs = 0;
        while (true) {
            std::size_t tab = line.find('\t', cs);
            std::string_view cell = line.substr(
                cs, tab == std::string_view::npos ? std::string_view::npos
                                                  : tab - cs);
            cells.push_back({cell, rune_count(cell)});
            if (tab == std::string_view::npos)
                break;
            cs = tab + 1;
        }
        lines.push_back(std::move(cells));
        if (nl == std::string_view::npos)
            break;
        start = nl + 1;
    }
    return TabWriter(std::move(lines), padding).run();
}

std::string go_duration(std::int64_t ns)
{
    if (ns == 0)
        return "0s";
    bool neg = ns < 0;
    std::uint64_t u = neg ? 0 - static_cast<std::uint64_t>(ns)
                          : static_cast<std::uint64_t>(ns);
    auto frac = [](std::uint64_t &v, int prec) {
        std::string digits;
        bool print = false;
        for (int i = 0; i < prec; ++i) {
            auto digit = static_cast<char>('0' + v % 10);
            print = print || digit != '0';
            if (print)
                digits.insert(digits.begin(), digit);
            v /= 10;
        }
        return print ? "." + digits : std::string();
    };
    std::string out;
    if (u < 1000000000ULL) {
        int prec;
        std::string unit;
        if (u < 1000) {
            prec = 0, unit = "ns";
        } else if (u < 1000000) {
            prec = 3, unit = "\xC2\xB5s"; // µs, as Go writes it
        } else {
            prec = 6, unit = "ms";
        }
        std::string f = frac(u, prec);
        out = std::to_string(u) + f + unit;
    } else {
        std::string f = frac(u, 9);
        out = std::to_string(u % 60) + f + "s";
        u /= 60;
        if (u > 0) {
            out = std::to_string(u % 60) + "m" + out;
            u /= 60;
            if (u > 0)
                out = std::to_string(u) + "h" + out;
        }
    }
    return neg ? "-" + out : out;
}

std::string short_uuid(std::string_view uuid)
{
    return std::string(uuid.substr(0, 12));
}

std::vector<Agent> parse_agents(std::string_view body)
{
    rapidjson::Document doc = parse_json(body, "agent list");
    std::vector<Agent> out;
    if (doc.IsNull())
        return out;
    if (!doc.IsArray())
        throw ReplyError("agent list is not a JSON array");
    for (rapidjson::SizeType i = 0; i < doc.Size(); ++i) {
        const auto &a = doc[i];
        std::string where = "agent #" + std::to_string(i + 1);
        if (!a.IsObject())
            throw ReplyError(where + " is not a JSON object");
        Agent ag;
        auto str = [&](const char *key, std::string &dst) {
            const auto *v = member_ci(a, key);
            if (!v || v->IsNull())
                return;
            if (!v->IsString())
                throw ReplyError(where + ": " + key + " is not a string");
            dst.assign(v->GetString(), v->GetStringLength());
        };
        auto str_map = [&](const char *key,
                           std::map<std::string, std::string> &dst) {
            const auto *v = member_ci(a, key);
            if (!v || v->IsNull())
                return;
            if (!v->IsObject())
                throw ReplyError(where + ": " + key + " is not an object");
            for (const auto &m : v->GetObject()) {
                if (!m.value.IsString())
                    throw ReplyError(where + ": " + key + "." +
                                     m.name.GetString() + " is not a string");
                dst[m.name.GetString()] = m.value.GetString();
            }
        };
        str("Uuid", ag.uuid);
        str("DefaultAddr", ag.default_addr);
        str("LocalTime", ag.local_time);
        if (const auto *v = member_ci(a, "Expires"); v && !v->IsNull()) {
            if (!v->IsInt64())
                throw ReplyError(where +
                                 ": Expires is not an integer (nanoseconds)");
            ag.expires_ns = v->GetInt64();
        }
        if (const auto *v = member_ci(a, "Facts"); v && !v->IsNull()) {
            if (!v->IsObject())
                throw ReplyError(where + ": Facts is not an object");
            for (const auto &m : v->GetObject()) {
                auto &list = ag.facts[m.name.GetString()];
                if (m.value.IsNull())
                    continue;
                if (!m.value.IsArray())
                    throw ReplyError(where + ": Facts." + m.name.GetString() +
                                     " is not a list of strings");
                for (const auto &item : m.value.GetArray()) {
                    if (!item.IsString())
                        throw ReplyError(where + ": Facts." +
                                         m.name.GetString() +
                                         " is not a list of strings");
                    list.emplace_back(item.GetString(), item.GetStringLength());
                }
            }
        }
        str_map("FactCollectors", ag.fact_collectors);
        str_map("Testlets", ag.testlets);
        out.push_back(std::move(ag));
    }
    return out;
}

std::string format_agents_table(const std::vector<Agent> &agents)
{
    std::string text = "UUID\tEXPIRES\tADDR\tFACT SUMMARY\tCOLLECTOR SUMMARY\n";
    for (const auto &a : agents)
        text += short_uuid(a.uuid) + "\t" + go_duration(a.expires_ns) + "\t" +
                tab_safe(a.default_addr) + "\t" + join(keys(a.facts), ", ") +
                "\t" + join(keys(a.fact_collectors), ", ") + "\n";
    text += "\n";
    return tabwrite(text);
}

std::string format_agent_detail(const Agent &a)
{
    std::string out = "Agent UUID:  " + a.uuid + "\n";
    out += "Expires:  " + go_duration(a.expires_ns) + "\n";
    out += "Collector Summary: " + join(keys(a.fact_collectors), ", ") + "\n";
    out += "Facts:\n";
    std::string facts = "{";
    bool first = true;
    for (const auto &[name, values] : a.facts) {
        facts += (first ? "" : ",") + go_json_quote(name) + ":[";
        for (std::size_t i = 0; i < values.size(); ++i)
            facts += (i ? "," : "") + go_json_quote(values[i]);
        facts += "]";
        first = false;
    }
    facts += "}";
    out += json_indent(facts, "    ") + "\n";
    return out;
}

std::map<std::string, std::string> parse_groups(std::string_view body)
{
    rapidjson::Document doc = parse_json(body, "group map");
    std::map<std::string, std::string> out;
    if (doc.IsNull())
        return out;
    if (!doc.IsObject())
        throw ReplyError("group map is not a JSON object");
    for (const auto &m : doc.GetObject()) {
        if (!m.value.IsString())
            throw ReplyError(std::string("group map: the group of agent ") +
                             m.name.GetString() + " is not a string");
        out[m.name.GetString()] = m.value.GetString();
    }
    return out;
}

std::string format_groups_table(const std::map<std::string, std::string> &g)
{
    std::string text = "UUID\tGROUP NAME\n";
    for (const auto &[uuid, group] : g)
        text += short_uuid(uuid) + "\t" + tab_safe(group) + "\n";
    text += "\n";
    return tabwrite(text);
}

std::string format_objects_table(std::string_view body)
{
    rapidjson::Document doc = parse_json(body, "object list");
    if (!doc.IsNull() && !doc.IsArray())
        throw ReplyError("object list is not a JSON array");
    std::string text = "LABEL\tTYPE\tSPEC\t\n";
    if (doc.IsArray()) {
        for (const auto &obj : doc.GetArray()) {
            if (!obj.IsObject())
                throw ReplyError("object list contains a non-object entry");
            auto field = [&](const char *key) -> std::string {
                auto it = obj.FindMember(key);
                if (it == obj.MemberEnd() || it->value.IsNull())
                    return {};
                return it->value.IsString() ? it->value.GetString()
                                            : compact_json(it->value);
            };
            std::string type = field("type");
            auto sit = obj.FindMember("spec");
            rapidjson::Value null_value;
            const rapidjson::Value &spec =
                sit != obj.MemberEnd() ? sit->value : null_value;
            auto sub = [&](const char *key) -> const rapidjson::Value & {
                if (!spec.IsObject())
                    return null_value;
                auto it = spec.FindMember(key);
                return it == spec.MemberEnd() ? null_value : it->value;
            };
            auto str = [&](const char *key) {
                const auto &v = sub(key);
                return v.IsString() ? std::string(v.GetString())
                                    : (v.IsNull() ? "" : compact_json(v));
            };
            auto list_or_empty = [&](const char *key) {
                const auto &v = sub(key);
                return v.IsNull() ? std::string("[]") : go_v(v);
            };
            auto map_or_empty = [&](const char *key) {
                const auto &v = sub(key);
                return v.IsNull() ? std::string("map[]") : go_v(v);
            };
            std::string shown;
            if (type == "group")
                shown =
                    "{" + str("group") + " " + list_or_empty("matches") + "}";
            else if (type == "testrun")
                shown = "{" + str("targettype") + " " + map_or_empty("source") +
                        " " + go_v(sub("target")) + "}";
            else
                shown = compact_json(spec);
            text += tab_safe(field("label")) + "\t" + tab_safe(type) + "\t" +
                    tab_safe(shown) + "\n";
        }
    }
    text += "\n";
    return tabwrite(text);
}

std::map<std::string, std::string> parse_status_line(std::string_view line)
{
    rapidjson::Document doc = parse_json(line, "status line");
    if (!doc.IsObject())
        throw ReplyError("status line is not a JSON object");
    std::map<std::string, std::string> out;
    for (const auto &m : doc.GetObject()) {
        if (!m.value.IsString())
            throw ReplyError(std::string("status of agent ") +
                             m.name.GetString() + " is not a string");
        out[m.name.GetString()] = m.value.GetString();
    }
    return out;
}

std::string format_status_counts(const std::map<std::string, std::string> &s,
                                 std::size_t total)
{
    std::map<std::string, std::size_t> n;
    for (const auto &kv : s)
        ++n[kv.second];
    std::string t = std::to_string(total);
    auto c = [&](const char *w) { return std::to_string(n[w]) + "/" + t; };
    std::string out = "INIT: (" + c("init") + ")  READY: (" + c("ready") +
                      ")  TESTING: (" + c("testing") + ")  FINISHED: (" +
                      c("finished") + ")";
    if (n["fail"] > 0)
        out += "  FAIL: (" + c("fail") + ")";
    return out;
}

std::string format_agent_statuses(const std::map<std::string, std::string> &s)
{
    std::string out;
    for (const auto &[uuid, status] : s)
        out += (out.empty() ? "" : " ") + short_uuid(uuid) + "=" + status;
    return out;
}

std::string format_results_table(std::string_view body,
                                 const std::vector<std::string> &failed)
{
    rapidjson::Document doc = parse_json(body, "test data");
    if (!doc.IsObject())
        throw ReplyError("test data is not a JSON object");
    std::string text = "AGENT\tTARGET\tMETRIC\tVALUE\n";
    std::map<std::string, const rapidjson::Value *> agents;
    for (const auto &m : doc.GetObject())
        agents[m.name.GetString()] = &m.value;
    for (const auto &[agent, data] : agents) {
        std::string a = short_uuid(agent);
        if (!data->IsObject() || data->MemberCount() == 0) {
            text += a + "\t-\t-\t" + tab_safe(scalar_text(*data)) + "\n";
            continue;
        }
        std::map<std::string, const rapidjson::Value *> targets;
        for (const auto &t : data->GetObject())
            targets[t.name.GetString()] = &t.value;
        for (const auto &[target, metrics] : targets) {
            if (!metrics->IsObject() || metrics->MemberCount() == 0) {
                text += a + "\t" + tab_safe(target) + "\t-\t" +
                        tab_safe(scalar_text(*metrics)) + "\n";
                continue;
            }
            std::map<std::string, std::string> sorted;
            for (const auto &m : metrics->GetObject())
                sorted[m.name.GetString()] = scalar_text(m.value);
            for (const auto &[metric, value] : sorted)
                text += a + "\t" + tab_safe(target) + "\t" + tab_safe(metric) +
                        "\t" + tab_safe(value) + "\n";
        }
    }
    std::set<std::string> failed_sorted(failed.begin(), failed.end());
    for (const auto &agent : failed_sorted)
        if (!agents.count(agent))
            text += short_uuid(agent) + "\t-\tstatus\tfail\n";
    return tabwrite(text);
}

} // namespace todd::cli
