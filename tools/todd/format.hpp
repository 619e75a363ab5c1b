// Parsing of ToDD REST replies and the text the todd CLI prints for them.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace todd::cli {

/// A reply body that does not have the shape the API promises.
class ReplyError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// Lays out tab-separated cells like Go's text/tabwriter with padchar '\t'
/// and tab width 8 (what the Go CLI uses), so the output is byte-identical
/// to the Go CLI's. The Go CLI uses padding 0, which glues a cell that is a
/// multiple of 8 wide to the next one; @p padding 1 (the default) keeps at
/// least one tab there and is otherwise identical.
std::string tabwrite(std::string_view text, int padding = 1);

/// Formats a duration in nanoseconds like Go's time.Duration.String():
/// "23s", "5m0s", "1h0m0s", "1.5s", "250ms", "0s".
std::string go_duration(std::int64_t ns);

/// One element of GET /v1/agent.
struct Agent {
    std::string uuid;
    std::string default_addr;
    std::int64_t expires_ns = 0;
    std::string local_time;
    std::map<std::string, std::vector<std::string>> facts;
    std::map<std::string, std::string> fact_collectors;
    std::map<std::string, std::string> testlets;
};

/// Parses a /v1/agent body (a JSON array; keys matched case-insensitively,
/// unknown keys ignored, Expires must be an integer). `null` is an empty
/// list. @throws ReplyError naming what is wrong.
std::vector<Agent> parse_agents(std::string_view body);

/// The `todd agents` table (UUID prefix, EXPIRES, ADDR, FACT SUMMARY,
/// COLLECTOR SUMMARY) followed by an empty line; summaries sorted.
std::string format_agents_table(const std::vector<Agent> &agents);

/// The `todd agents UUID` detail view of one agent (facts as 4-space JSON).
std::string format_agent_detail(const Agent &agent);

/// Parses a /v1/groups body (JSON object uuid -> group label).
/// @throws ReplyError
std::map<std::string, std::string> parse_groups(std::string_view body);

/// The `todd groups` table (UUID prefix, GROUP NAME) and an empty line.
std::string format_groups_table(const std::map<std::string, std::string> &g);

/// The `todd objects TYPE` table from a /v1/object/<type> body: LABEL, TYPE
/// and SPEC in Go's %v form ({loopgroup [map[within_subnet:10.0.0.0/8]]}).
/// @throws ReplyError if the body is not a JSON array of objects.
std::string format_objects_table(std::string_view body);

/// Parses a /v1/testrun status-stream line ({"uuid":"status",...}).
/// @throws ReplyError
std::map<std::string, std::string> parse_status_line(std::string_view line);

/// Go-style counts of a status map, plus FAIL when any agent failed:
/// "INIT: (0/3)  READY: (1/3)  TESTING: (2/3)  FINISHED: (0/3)".
/// @p total is the participant count from the first line.
std::string format_status_counts(const std::map<std::string, std::string> &s,
                                 std::size_t total);

/// Per-agent statuses as "a6c65b806653=ready b0559445e382=fail".
std::string format_agent_statuses(const std::map<std::string, std::string> &s);

/// The results of /v1/testdata ({agent:{target:{metric:value}}}) as a table
/// AGENT, TARGET, METRIC, VALUE (sorted; an agent or target whose data is
/// not an object gets one row with its raw value). Agents in @p failed
/// (status fail) that have no data get a row "-  status  fail".
/// @throws ReplyError if the body is not a JSON object.
std::string format_results_table(std::string_view body,
                                 const std::vector<std::string> &failed = {});

/// The first 12 characters of a UUID (as the Go CLI shows them).
std::string short_uuid(std::string_view uuid);

} // namespace todd::cli
