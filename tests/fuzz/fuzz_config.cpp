// SPDX-License-Identifier: Apache-2.0
// ToDD's INI config files (core/src/config.cpp) and what the server and the
// agent read from them. Refusals are ConfigError; anything else escaping is
// a bug.
#include "fuzz_common.hpp"

#include <todd/agent/cli.hpp>
#include <todd/core/config.hpp>
#include <todd/server/server.hpp>

#include <cctype>

namespace core = todd::core;
using todd::fuzz::check;

namespace {

bool is_lower(const std::string &s)
{
    for (unsigned char c : s)
        if (std::isupper(c))
            return false;
    return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    core::IniFile ini;
    try {
        ini = core::parse_ini(std::string(todd::fuzz::as_text(data, size)),
                              "fuzz.cfg");
    } catch (const core::ConfigError &) {
        return 0;
    }
    for (const auto &[section, keys] : ini.sections) {
        check(is_lower(section), "a section name is not lower-cased");
        for (const auto &kv : keys) {
            check(is_lower(kv.first), "a key name is not lower-cased");
            check(ini.has(section, kv.first), "has() misses a parsed key");
            check(ini.get(section, kv.first) == kv.second,
                  "get() differs from the parsed value");
            auto s = ini.lines.find(section);
            check(s != ini.lines.end() && s->second.count(kv.first) == 1,
                  "a parsed key has no line number");
        }
    }
    try {
        std::vector<std::string> notes;
        (void)todd::server::load_server_config(ini, &notes);
    } catch (const core::ConfigError &) {
    }
    try {
        todd::agent::check_agent_config(ini, {"endpoint", "role"});
    } catch (const core::ConfigError &) {
    }
    return 0;
}
