// SPDX-License-Identifier: Apache-2.0
// The todd CLI's reading of server replies (tools/todd/format.cpp,
// json_text.cpp): every reply parser and table writer gets the input. A
// reply of the wrong shape is a ReplyError; anything else escaping is a bug.
#include "fuzz_common.hpp"

#include "../../tools/todd/format.hpp"
#include "../../tools/todd/json_text.hpp"

namespace cli = todd::cli;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const std::string_view body = todd::fuzz::as_text(data, size);
    try {
        for (const auto &a : cli::parse_agents(body))
            (void)cli::format_agent_detail(a);
        (void)cli::format_agents_table(cli::parse_agents(body));
    } catch (const cli::ReplyError &) {
    }
    try {
        (void)cli::format_groups_table(cli::parse_groups(body));
    } catch (const cli::ReplyError &) {
    }
    try {
        (void)cli::format_objects_table(body);
    } catch (const cli::ReplyError &) {
    }
    try {
        const auto s = cli::parse_status_line(body);
        (void)cli::format_status_counts(s, s.size());
        (void)cli::format_agent_statuses(s);
    } catch (const cli::ReplyError &) {
    }
    try {
        (void)cli::format_results_table(body, {"a", "b"});
    } catch (const cli::ReplyError &) {
    }
    std::string why;
    if (cli::json_is_valid(body, &why)) {
        const std::string out = cli::json_indent(body, "  ");
        todd::fuzz::check(cli::json_is_valid(out, &why),
                          "re-indented JSON is not valid");
    } else {
        todd::fuzz::check(!why.empty(), "a refusal without a reason");
    }
    return 0;
}
