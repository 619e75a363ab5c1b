// SPDX-License-Identifier: Apache-2.0
// ToDD's gcfg-style INI files and the options every program shares:
// --comms, --plugin-dir, --config, --comms-opt.
#pragma once

#include <todd/core/comms.hpp>
#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <boost/program_options.hpp>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace todd::core {

/** A configuration file or option is wrong; what() names file, line, key. */
class ConfigError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/**
 * A parsed INI file: section and key names lower-cased (gcfg matches them
 * case-insensitively), values with quotes removed and comments stripped.
 */
struct IniFile {
    std::string path;
    /** section -> key -> value; the last assignment wins. */
    std::map<std::string, std::map<std::string, std::string>> sections;
    /** section -> key -> line number, for error messages. */
    std::map<std::string, std::map<std::string, int>> lines;

    bool has(const std::string &section, const std::string &key) const;
    /** Value or fallback; section/key compared case-insensitively. */
    std::string get(const std::string &section, const std::string &key,
                    const std::string &fallback = {}) const;
    /** "path:line" of a key, for error messages; "path" when the key is
     *  not in the file. Names as stored (lower case). */
    std::string where(const std::string &section, const std::string &key) const;
    /** "path:line" of a section's first key; "path" when it has none. */
    std::string where(const std::string &section) const;
};

/** Parse a file; throws ConfigError with path and line on a syntax error. */
IniFile parse_ini_file(const std::string &path);
/** Parse text (path used in messages only). */
IniFile parse_ini(const std::string &text, const std::string &path = "<text>");

/** The transport used when neither --comms nor a config file names one. */
std::string default_comms_plugin();

/** Options shared by todd-agent and todd-server. */
struct CommsSelection {
    std::string plugin_name;              // chosen transport
    std::vector<std::string> plugin_dirs; // --plugin-dir, in order
    Options options;         // plugin keys: config [Comms] then --comms-opt
    std::string config_path; // --config, may be empty
    /** "server" or "agent": given to a plugin that declares a key named
     *  "role" (e.g. the embedded transport binds as server, connects as
     *  agent) unless the user set it. */
    std::string role;
    /** [Comms] max_message_bytes / max_response_bytes (or --comms-opt):
     *  the Comms facade's bounds; taken out of options, not for plugins. */
    MessageLimits limits;
};

/** True when the plugin declares a configuration key named key. */
bool declares_key(const PluginInfo &info, const std::string &key);

/**
 * The role fill-in (CommsSelection::role): set opts["role"] = role when the
 * plugin declares a key "role", opts does not set it and role is not
 * empty. Returns true when it set it.
 */
bool fill_in_role(const PluginInfo &info, Options &opts,
                  const std::string &role);

/** Add --comms, --plugin-dir, --config, --comms-opt to a description. */
void add_comms_options(boost::program_options::options_description &desc);

/**
 * Resolve the selection from parsed options and the (optional) config file:
 * --comms over [Comms] Plugin over the default; [Comms] keys other than
 * Plugin become plugin options (lower-cased), --comms-opt KEY=VALUE override
 * them. Throws ConfigError on a malformed --comms-opt.
 */
CommsSelection resolve_comms(const boost::program_options::variables_map &vm,
                             const IniFile *config);

/** Load the plugin and create a validated transport; throws on errors. */
std::unique_ptr<Transport> open_transport(const CommsSelection &sel);

/** Help text for a plugin's keys, for --help. */
std::string describe_keys(const PluginInfo &info);

} // namespace todd::core
