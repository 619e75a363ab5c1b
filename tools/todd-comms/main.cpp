// SPDX-License-Identifier: Apache-2.0
// todd-comms: inspect transport plugins (list, show metadata, check).
#include <todd/core/exit_codes.hpp>
#include <todd/core/log.hpp>
#include <todd/core/plugin_registry.hpp>

#include "todd_build_config.h"

#ifdef TODD_COMMS_HAVE_CHECK
#include "check.hpp"
#endif

#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace po = boost::program_options;
using namespace todd::core;

namespace {

// No abbreviations: the global parser sees the command's options too, and
// would take `info --plugin` for --plugin-dir.
constexpr int kStyle = po::command_line_style::unix_style &
                       ~po::command_line_style::allow_guessing;

const char *kExitCodes = "Exit status: 0 success, 1 error (plugin not found or "
                         "refused, no plugin loadable), 2 usage error; check "
                         "stopped by SIGINT/SIGTERM: 130/143.\n";

/** Thrown for command-line mistakes: exit status 2. */
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

void print_main_help(std::ostream &os, const po::options_description &global)
{
    os << "Usage: todd-comms [OPTIONS] COMMAND [ARGS]\n"
          "Inspect ToDD comms transport plugins (libtodd-comms-<name>.so).\n\n"
          "Commands:\n"
          "  plugins          list every plugin found and every file refused\n"
          "  info NAME|PATH   show a plugin's metadata and configuration keys\n"
#ifdef TODD_COMMS_HAVE_CHECK
          "  check NAME|PATH  run the conformance checks (docs/plugin-abi.md)\n"
#endif
          "\nRun 'todd-comms COMMAND --help' for a command's options.\n\n"
       << global
       << "\nPlugins are searched in each --plugin-dir, then "
          "TODD_COMMS_PLUGIN_PATH\n(colon-separated; ignored when "
          "setuid/setgid), "
          "then " TODD_PLUGINDIR ".\n\n"
       << kExitCodes;
}

po::options_description common_options()
{
    po::options_description o("Options");
    o.add_options()("help,h", "show this help and exit")(
        "plugin-dir,P", po::value<std::vector<std::string>>()->composing(),
        "search this directory first (repeatable)")(
        "log-level", po::value<std::string>(), "error|warn|info|debug|trace");
    return o;
}

/** Parse a subcommand's arguments; returns false when --help was given. */
bool parse_sub(const std::vector<std::string> &args, const char *usage,
               const char *about, po::options_description opts,
               po::positional_options_description pos, po::variables_map &vm)
{
    try {
        po::store(po::command_line_parser(args)
                      .options(opts)
                      .positional(pos)
                      .style(kStyle)
                      .run(),
                  vm);
        po::notify(vm);
    } catch (const po::error &e) {
        throw UsageError(e.what());
    }
    if (vm.count("help")) {
        std::cout << "Usage: " << usage << "\n"
                  << about << "\n\n"
                  << opts << "\n"
                  << kExitCodes;
        return false;
    }
    if (vm.count("log-level")) {
        try {
            todd::log::set_level(
                todd::log::parse_level(vm["log-level"].as<std::string>()));
        } catch (const std::invalid_argument &e) {
            throw UsageError(e.what());
        }
    }
    return true;
}

std::vector<std::string> dirs_of(const po::variables_map &vm,
                                 std::vector<std::string> dirs)
{
    if (vm.count("plugin-dir"))
        for (const auto &d : vm["plugin-dir"].as<std::vector<std::string>>())
            dirs.push_back(d);
    return dirs;
}

std::string abi_string(const PluginInfo &i)
{
    return std::to_string(i.abi_major) + "." + std::to_string(i.abi_minor);
}

int cmd_plugins(const std::vector<std::string> &args,
                std::vector<std::string> dirs)
{
    po::variables_map vm;
    if (!parse_sub(args, "todd-comms plugins [--plugin-dir DIR]...",
                   "List every plugin in the search path (first one per name "
                   "wins) and every\nfile refused, with the rule it broke.",
                   common_options(), {}, vm))
        return exit_ok;
    PluginRegistry reg(plugin_search_path(dirs_of(vm, dirs)));
    ScanResult r = reg.scan();

    std::vector<std::vector<std::string>> rows = {
        {"NAME", "VERSION", "ABI", "CAPABILITIES", "LICENSE", "PATH"}};
    for (const auto &p : r.plugins)
        rows.push_back({p.name, p.version, abi_string(p),
                        capabilities_string(p.capabilities), p.license,
                        p.path});
    std::vector<size_t> width(rows[0].size(), 0);
    for (const auto &row : rows)
        for (size_t c = 0; c < row.size(); ++c)
            width[c] = std::max(width[c], row[c].size());
    if (r.plugins.empty())
        std::cout << "No plugins found.\n";
    else
        for (const auto &row : rows) {
            std::string line;
            for (size_t c = 0; c < row.size(); ++c) {
                line += row[c];
                if (c + 1 < row.size())
                    line += std::string(width[c] - row[c].size() + 2, ' ');
            }
            std::cout << line << "\n";
        }
    if (!r.refused.empty()) {
        std::cout << "\nRefused:\n";
        for (const auto &f : r.refused)
            std::cout << "  " << f.message << "\n";
    }
    std::cout << "\nSearch path:\n";
    for (const auto &d : reg.search_path())
        std::cout << "  " << d << "\n";
    return r.plugins.empty() ? exit_failure : exit_ok;
}

int cmd_info(const std::vector<std::string> &args,
             std::vector<std::string> dirs)
{
    auto opts = common_options();
    opts.add_options()("plugin", po::value<std::string>(),
                       "plugin name or path");
    po::positional_options_description pos;
    pos.add("plugin", 1);
    po::variables_map vm;
    if (!parse_sub(args, "todd-comms info [--plugin-dir DIR]... NAME|PATH",
                   "Show a plugin's metadata and configuration keys. NAME is "
                   "searched; a PATH\n(containing '/') is loaded as is.",
                   opts, pos, vm))
        return exit_ok;
    if (!vm.count("plugin"))
        throw UsageError("info: missing NAME or PATH");
    PluginRegistry reg(plugin_search_path(dirs_of(vm, dirs)));
    auto plugin = reg.load(vm["plugin"].as<std::string>());
    const PluginInfo &i = plugin->info();
    std::cout << "name:          " << i.name << "\n"
              << "version:       " << i.version << "\n"
              << "description:   " << i.description << "\n"
              << "license:       " << i.license << "\n"
              << "vendor:        " << (i.vendor.empty() ? "-" : i.vendor)
              << "\n"
              << "ABI:           " << abi_string(i) << " (needs host ABI "
              << i.abi_major << "." << i.min_host_abi_minor << " or newer)\n"
              << "capabilities:  " << capabilities_string(i.capabilities)
              << "\n"
              << "path:          " << i.path << "\n";
    if (i.keys.empty()) {
        std::cout << "configuration: none\n";
        return exit_ok;
    }
    std::cout << "configuration keys:\n";
    size_t w = 0;
    for (const auto &k : i.keys)
        w = std::max(w, k.name.size());
    for (const auto &k : i.keys) {
        std::cout << "  " << k.name << std::string(w - k.name.size() + 2, ' ')
                  << config_type_name(k.type) << ", "
                  << (k.required ? "required" : "optional");
        if (k.default_value)
            std::cout << ", default "
                      << (k.type == TODD_COMMS_CFG_SECRET
                              ? "(secret)"
                              : "'" + *k.default_value + "'");
        std::cout << "\n";
        if (!k.description.empty())
            std::cout << "  " << std::string(w + 2, ' ') << k.description
                      << "\n";
    }
    return exit_ok;
}

} // namespace

int main(int argc, char **argv)
{
    po::options_description global("Global options");
    global.add_options()("help,h", "show this help and exit")(
        "version", "print the version and exit")(
        "plugin-dir,P", po::value<std::vector<std::string>>()->composing(),
        "search this directory first (repeatable; also accepted after "
        "COMMAND)")("log-level", po::value<std::string>(),
                    "error|warn|info|debug|trace");
    po::options_description hidden;
    hidden.add_options()("command", po::value<std::string>())(
        "args", po::value<std::vector<std::string>>());
    po::options_description all;
    all.add(global).add(hidden);
    po::positional_options_description pos;
    pos.add("command", 1).add("args", -1);

    try {
        po::variables_map vm;
        po::parsed_options parsed = po::command_line_parser(argc, argv)
                                        .options(all)
                                        .positional(pos)
                                        .style(kStyle)
                                        .allow_unregistered()
                                        .run();
        po::store(parsed, vm);
        po::notify(vm);
        if (vm.count("version") && vm.count("command"))
            throw UsageError("--version takes no command");
        if (!vm.count("command")) {
            if (vm.count("version")) {
                std::cout << "todd-comms " TODD_VERSION " (plugin ABI "
                          << TODD_COMMS_ABI_MAJOR << "." << TODD_COMMS_ABI_MINOR
                          << ")\n";
                return exit_ok;
            }
            print_main_help(vm.count("help") ? std::cout : std::cerr, global);
            return vm.count("help") ? exit_ok : exit_usage;
        }
        if (vm.count("log-level"))
            todd::log::set_level(
                todd::log::parse_level(vm["log-level"].as<std::string>()));
        std::vector<std::string> dirs;
        if (vm.count("plugin-dir"))
            dirs = vm["plugin-dir"].as<std::vector<std::string>>();
        // Everything after the command, options included, belongs to it.
        std::vector<std::string> rest =
            po::collect_unrecognized(parsed.options, po::include_positional);
        const std::string cmd = vm["command"].as<std::string>();
        if (auto it = std::find(rest.begin(), rest.end(), cmd);
            it != rest.end())
            rest.erase(it);
        if (vm.count("help"))
            rest.push_back("--help");

        if (cmd == "plugins")
            return cmd_plugins(rest, dirs);
        if (cmd == "info")
            return cmd_info(rest, dirs);
#ifdef TODD_COMMS_HAVE_CHECK
        if (cmd == "check") {
            // check parses its own options: argv[0] = "todd-comms check".
            std::vector<std::string> store = {"todd-comms check"};
            for (const auto &d : dirs) {
                store.push_back("--plugin-dir");
                store.push_back(d);
            }
            store.insert(store.end(), rest.begin(), rest.end());
            std::vector<char *> cargv;
            for (auto &s : store)
                cargv.push_back(s.data());
            cargv.push_back(nullptr);
            return todd_comms_check_main(static_cast<int>(store.size()),
                                         cargv.data());
        }
#endif
        throw UsageError("unknown command '" + cmd +
                         "' (try todd-comms --help)");
    } catch (const UsageError &e) {
        std::cerr << "todd-comms: " << e.what() << "\n";
        return exit_usage;
    } catch (const po::error &e) {
        std::cerr << "todd-comms: " << e.what() << "\n";
        return exit_usage;
    } catch (const std::exception &e) {
        std::cerr << "todd-comms: " << e.what() << "\n";
        return exit_failure;
    }
}
