// SPDX-License-Identifier: Apache-2.0
// Test data: a testlet's output checked and compacted, and the TestData
// JSON built from the outputs of a run's targets.
#include <todd/agent/agent.hpp>
#include <todd/core/json_limits.hpp>
#include <todd/core/log.hpp>

#include <stdexcept>

namespace todd::agent {

std::string compact_testlet_output(std::string_view out)
{
    std::string text(out);
    rapidjson::Document d;
    json::ParseOptions o;
    o.validate_utf8 = true;
    // The server nests the output two levels further down (see json_limits).
    o.max_depth = json::testlet_output_max_depth;
    if (auto err = json::parse(d, text, o)) {
        if (err->too_deep)
            throw std::invalid_argument("output refused: " + err->reason +
                                        " (at offset " +
                                        std::to_string(err->offset) + ")");
        std::string first = text.substr(0, 80);
        for (char &c : first)
            if (c == '\n' || c == '\r')
                c = ' ';
        throw std::invalid_argument(
            "output is not JSON (" + err->reason + " at offset " +
            std::to_string(err->offset) + "): \"" + first + "\"");
    }
    if (!d.IsObject())
        throw std::invalid_argument("output is JSON but not an object");
    // Re-emit the bytes without whitespace, as Go's json.Compact with HTML
    // escaping: numbers and escapes keep their original spelling.
    std::string r;
    r.reserve(text.size());
    bool in_str = false, esc = false;
    for (size_t i = 0; i < text.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(text[i]);
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
            if (c == '<' || c == '>' || c == '&') {
                static const char hex[] = "0123456789abcdef";
                r += "\\u00";
                r.push_back(hex[c >> 4]);
                r.push_back(hex[c & 15]);
                continue;
            }
            // U+2028 / U+2029 (E2 80 A8 / E2 80 A9).
            if (c == 0xE2 && i + 2 < text.size() &&
                static_cast<unsigned char>(text[i + 1]) == 0x80 &&
                (static_cast<unsigned char>(text[i + 2]) == 0xA8 ||
                 static_cast<unsigned char>(text[i + 2]) == 0xA9)) {
                r += static_cast<unsigned char>(text[i + 2]) == 0xA8
                         ? "\\u2028"
                         : "\\u2029";
                i += 2;
                continue;
            }
            r.push_back(static_cast<char>(c));
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            continue;
        } else {
            if (c == '"')
                in_str = true;
            r.push_back(static_cast<char>(c));
        }
    }
    return r;
}

std::string encode_test_data(const std::map<std::string, std::string> &outputs)
{
    std::string s = "{";
    bool first = true;
    for (const auto &[target, json] : outputs) {
        if (!first)
            s += ',';
        first = false;
        s += msg::go_quote(target);
        s += ':';
        s += json;
    }
    s += '}';
    return s;
}

TargetOutputs sort_results(const msg::ExecuteTestRunTask &t,
                           const std::vector<std::string> &targets,
                           const std::vector<ProcessResult> &results)
{
    TargetOutputs o;
    for (size_t i = 0; i < results.size(); ++i) {
        const auto &r = results[i];
        const std::string &target = targets[i];
        std::string who = "target " + target + ": ";
        if (!r.started) {
            o.problems.push_back(who + r.describe());
            continue;
        }
        if (r.timed_out) {
            // As Go: a target killed at the limit gives no data (a server
            // testlet such as "iperf -s" ends this way by design).
            log::warn("agent", "test run " + t.test_uuid + " " + who +
                                   "killed at the time limit of " +
                                   std::to_string(t.time_limit) +
                                   " s; no data for it");
            continue;
        }
        if (r.output_truncated) {
            o.problems.push_back(who + "output larger than the limit");
            continue;
        }
        bool blank = r.out.find_first_not_of(" \t\r\n") == std::string::npos;
        if (blank) {
            if (r.exited_ok()) {
                log::warn("agent", "test run " + t.test_uuid + " " + who +
                                       "printed nothing");
                continue;
            }
            o.problems.push_back(who + r.describe() + " with no output");
            continue;
        }
        try {
            o.outputs[target] = compact_testlet_output(r.out);
            if (!r.exited_ok())
                log::warn("agent", "test run " + t.test_uuid + " " + who +
                                       r.describe() + "; its output is kept");
        } catch (const std::invalid_argument &e) {
            o.problems.push_back(who + e.what() + " (" + r.describe() + ")");
        }
    }
    return o;
}

} // namespace todd::agent
