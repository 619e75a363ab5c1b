// SPDX-License-Identifier: Apache-2.0
// Finding, loading and validating libtodd-comms-<name>.so plugins.
#pragma once

#include <todd/comms/plugin.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace todd::core {

/** A plugin could not be found, loaded or validated; what() says why. */
class PluginError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/** One configuration key as the plugin declares it. */
struct ConfigKeyInfo {
    std::string name;
    uint32_t type = TODD_COMMS_CFG_STRING;
    bool required = false;
    std::optional<std::string> default_value;
    std::string description;
};

/** Copy of a validated descriptor's metadata. */
struct PluginInfo {
    std::string name, version, description, license, vendor;
    std::string path; // absolute, canonical
    uint32_t abi_major = 0, abi_minor = 0, min_host_abi_minor = 0;
    uint64_t capabilities = 0;
    std::vector<ConfigKeyInfo> keys;
};

/** A file that was refused, with the rule it broke (docs/plugin-abi.md). */
struct Refusal {
    std::string path;
    std::string rule;    // e.g. "LOAD-3"
    std::string message; // one line naming the file and the reason
};

/** A loaded, validated plugin. Kept loaded for the life of the process. */
class Plugin {
  public:
    const PluginInfo &info() const { return info_; }
    const todd_comms_plugin_descriptor &descriptor() const { return *desc_; }

    Plugin(PluginInfo info, const todd_comms_plugin_descriptor *desc)
        : info_(std::move(info)), desc_(desc)
    {
    }

  private:
    PluginInfo info_;
    const todd_comms_plugin_descriptor *desc_;
};

/**
 * The search path: each --plugin-dir in order, then TODD_COMMS_PLUGIN_PATH
 * (colon-separated; ignored when the process is setuid or setgid), then the
 * compiled-in install directory.
 */
std::vector<std::string>
plugin_search_path(const std::vector<std::string> &cli_dirs);

/** The compiled-in install directory of plugins. */
std::string default_plugin_dir();

/** Text form of capability flags, e.g. "ack,ttl,confirms". */
std::string capabilities_string(uint64_t caps);
/** Text form of a TODD_COMMS_CFG_* type, e.g. "int". */
std::string config_type_name(uint32_t type);

/** Result of scanning the search path. */
struct ScanResult {
    std::vector<PluginInfo> plugins; // first found per name wins
    std::vector<Refusal> refused;
};

class PluginRegistry {
  public:
    explicit PluginRegistry(std::vector<std::string> search_path);

    /** Load and validate every candidate file in the search path. */
    ScanResult scan();

    /**
     * Load a plugin by name (searched) or by path (contains a '/').
     * Throws PluginError naming the file and the rule it broke.
     */
    std::shared_ptr<const Plugin> load(const std::string &name_or_path);

    const std::vector<std::string> &search_path() const { return path_; }

  private:
    std::vector<std::string> path_;
};

} // namespace todd::core
