// SPDX-License-Identifier: Apache-2.0
// ToDD's group and testrun objects: validation, the normalised JSON the Go
// server stores, and group matching (hostname regex, within_subnet CIDR).
#pragma once

#include <todd/core/cidr.hpp>
#include <todd/core/messages.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace re2 {
class RE2;
}

namespace todd::server {

/** A fact value longer than this is dropped from an advert before it is
 *  kept or matched (hostnames are at most 253 bytes). */
inline constexpr size_t max_fact_bytes = 4096;
/** Memory RE2 may use for one compiled hostname pattern (and its DFA). */
inline constexpr int64_t max_regex_memory = 1 << 20;

/**
 * Drop every fact with a value longer than max_bytes (the whole fact, so a
 * cut value never matches a pattern it would not match whole). Returns one
 * line per dropped fact naming it and its size, for the caller's log.
 */
std::vector<std::string> drop_long_facts(msg::Facts &facts, size_t max_bytes);

/** An object was refused; what() is the reason sent to the client. */
class ObjectError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/** One match statement of a group. hostname is RE2, i.e. Go's regexp
 *  syntax (what the Go ToDD uses), matched in linear time. */
struct MatchStatement {
    std::shared_ptr<const re2::RE2> hostname;
    std::optional<core::Cidr> subnet;
    bool matches(const msg::Facts &facts) const;
};

struct GroupObject {
    std::string label;
    std::vector<MatchStatement> matches;
    bool matches_agent(const msg::Facts &facts) const;
};

struct TestRunObject {
    std::string label;
    bool group_target = false; // targettype "group"; anything else uncontrolled
    std::map<std::string, std::string> source; // name, app, args
    std::map<std::string, std::string> target; // group targets
    std::vector<std::string> targets;          // uncontrolled targets
    /** spec.interval (ours): run by the server this often; 0 = only when
     *  asked. */
    std::chrono::milliseconds interval{0};
};

/** A validated object and the compact JSON to store for it. */
struct NormalisedObject {
    std::string type, label, json;
};

/**
 * Validate a create request body and normalise it as the Go server does
 * (unknown keys dropped, label/type/spec order, maps sorted). Throws
 * ObjectError naming what is wrong: bad JSON, unknown type, empty label,
 * wrong field types, an invalid hostname regex or within_subnet CIDR, a
 * group target without name/app/args.
 */
NormalisedObject normalise_object(std::string_view body);

/** A testrun's spec.interval: Go-style "30s", "5m", "1h30m", "500ms"
 *  parts, or a bare number of seconds; 1 s to 24 h. Throws ObjectError. */
std::chrono::milliseconds parse_interval(const std::string &text);

/** Rebuild objects from their stored JSON (already validated). */
GroupObject parse_group(const std::string &json);
TestRunObject parse_testrun(const std::string &json);

} // namespace todd::server
