// SPDX-License-Identifier: Apache-2.0
// The conformance checker's load rules, LOAD-1..11 (docs/plugin-abi.md):
// the plugin is loaded by core's PluginRegistry, so a refusal is the host's
// own, naming the rule it broke.
#include "check_internal.hpp"

#include <todd/core/transport.hpp>

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>

namespace todd_check {
namespace {

int refused_rule(const std::string &message)
{
    auto at = message.find("(LOAD-");
    if (at == std::string::npos)
        return 0;
    return std::atoi(message.c_str() + at + 6);
}

} // namespace

std::shared_ptr<const todd::core::Plugin> load_rules(const Args &args)
{
    // A crash while loading is in the plugin's ELF constructors (LOAD-3).
    set_rule("LOAD-3");
    todd::core::PluginRegistry reg(
        todd::core::plugin_search_path(args.plugin_dirs));
    std::shared_ptr<const todd::core::Plugin> plugin;
    try {
        plugin = reg.load(args.target);
    } catch (const std::exception &e) {
        int n = refused_rule(e.what());
        if (n == 0)
            n = 1;
        for (int i = 1; i < n; ++i)
            report("LOAD-" + std::to_string(i), "PASS",
                   "checked before the refusal");
        report("LOAD-" + std::to_string(n), "FAIL", e.what());
        for (size_t i = static_cast<size_t>(n); i < kRuleCount; ++i)
            report(kRules[i], "SKIP",
                   "not run: the plugin was refused (LOAD-" +
                       std::to_string(n) + ")");
        return nullptr;
    }
    const auto &info = plugin->info();
    g_d = &plugin->descriptor();
    emit("I " + info.name + " " + info.version + " " + info.path);

    struct stat st {};
    ::stat(info.path.c_str(), &st);
    char mode[16];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    report("LOAD-1", "PASS", "regular file " + info.path);
    report("LOAD-2", "PASS",
           std::string("mode ") + mode +
               ", file and every directory above owned by root or us, "
               "writable by others only where sticky above");
    report("LOAD-3", "PASS",
           "complete ELF shared object for this host; dlopen "
           "RTLD_NOW|RTLD_LOCAL succeeded");
    report("LOAD-4", "PASS", "exports " TODD_COMMS_ENTRY_SYMBOL_V1);
    report("LOAD-5", "PASS", "entry returned a descriptor");
    report("LOAD-6", "PASS",
           "ABI " + std::to_string(info.abi_major) + "." +
               std::to_string(info.abi_minor));
    report("LOAD-7", "PASS",
           "struct_size " + std::to_string(g_d->struct_size) +
               " >= " + std::to_string(sizeof(todd_comms_plugin_descriptor)));
    report("LOAD-8", "PASS",
           std::string("all mandatory functions present, publish_batch ") +
               (g_d->publish_batch ? "present" : "absent"));
    report("LOAD-9", "PASS",
           "min_host_abi_minor " + std::to_string(info.min_host_abi_minor) +
               " <= host " + std::to_string(TODD_COMMS_ABI_MINOR));
    report("LOAD-10", "PASS", "name '" + info.name + "' matches the file");
    std::string keys;
    for (auto &k : info.keys)
        keys += (keys.empty() ? "" : ", ") + k.name + " (" +
                todd::core::config_type_name(k.type) + ")";
    report("LOAD-11", "PASS",
           info.version + ", " + info.license + ", capabilities " +
               todd::core::capabilities_string(info.capabilities) + ", " +
               std::to_string(info.keys.size()) + " configuration key(s)" +
               (keys.empty() ? "" : ": " + keys));

    return plugin;
}

} // namespace todd_check
