// SPDX-License-Identifier: Apache-2.0
// todd-server: ToDD's server over any comms plugin. See docs/server.md.
#include <todd/server/server.hpp>

#include <todd/core/config.hpp>
#include <todd/core/exit_codes.hpp>
#include <todd/core/log.hpp>
#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>
#include <todd_build_config.h>

#include <boost/program_options.hpp>

#include <csignal>
#include <filesystem>
#include <iostream>

namespace po = boost::program_options;
using namespace todd;

int main(int argc, char **argv)
{
    // SIGINT/SIGTERM are taken by sigwait below, and blocked before any
    // thread exists: a plugin's library may start threads of its own as
    // soon as it is created (nats.c does), and a thread that does not
    // block them would take the default action, killing the process.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    po::options_description desc("todd-server options");
    desc.add_options()(
        "help,h",
        "show this help (with --comms NAME, also that plugin's keys)")(
        "version", "show version")(
        "log-level", po::value<std::string>()->default_value("info"),
        "error, warn, info, debug or trace")(
        "db", po::value<std::string>(),
        "SQLite file for objects and results "
        "(default <OptDir>/todd-server.db)");
    core::add_comms_options(desc);
    try {
        po::variables_map vm;
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
        if (vm.count("help")) {
            std::cout << "Usage: todd-server [options]\n\n" << desc << "\n";
            if (vm.count("comms")) {
                // The chosen plugin's own keys ([Comms] / --comms-opt).
                std::vector<std::string> dirs;
                if (vm.count("plugin-dir"))
                    dirs = vm["plugin-dir"].as<std::vector<std::string>>();
                auto p = core::PluginRegistry(core::plugin_search_path(dirs))
                             .load(vm["comms"].as<std::string>());
                std::cout << core::describe_keys(p->info());
            }
            return core::exit_ok;
        }
        if (vm.count("version")) {
            std::cout << "todd-server " << TODD_VERSION << "\n";
            return core::exit_ok;
        }
        try {
            log::set_level(log::parse_level(vm["log-level"].as<std::string>()));
        } catch (const std::invalid_argument &e) {
            throw core::ConfigError(std::string("--log-level: ") + e.what());
        }

        std::string cfg_path;
        if (vm.count("config") && !vm["config"].as<std::string>().empty())
            cfg_path = vm["config"].as<std::string>();
        else if (std::filesystem::exists("/etc/todd/server.cfg"))
            cfg_path = "/etc/todd/server.cfg";
        core::IniFile ini;
        if (!cfg_path.empty())
            ini = core::parse_ini_file(cfg_path);
        std::vector<std::string> notes;
        server::ServerConfig cfg = server::load_server_config(ini, &notes);
        for (const auto &n : notes)
            log::info("config", n);
        if (vm.count("db"))
            cfg.db_path = vm["db"].as<std::string>();

        core::CommsSelection sel =
            core::resolve_comms(vm, cfg_path.empty() ? nullptr : &ini);
        sel.role = "server";
        cfg.message_limits = sel.limits;
        auto transport = core::open_transport(sel);
        log::info("server", "comms plugin " + sel.plugin_name);

        server::Server srv(std::move(cfg), std::move(transport));
        srv.start();
        int sig = 0;
        sigwait(&set, &sig);
        log::info("server", std::string("received ") +
                                (sig == SIGINT ? "SIGINT" : "SIGTERM") +
                                ", shutting down");
        srv.stop();
        return core::exit_ok;
    } catch (const po::error &e) {
        std::cerr << "todd-server: " << e.what() << "\n"
                  << "Try 'todd-server --help'.\n";
        return core::exit_usage;
    } catch (const core::ConfigError &e) {
        std::cerr << "todd-server: " << e.what() << "\n";
        return core::exit_usage;
    } catch (const core::PluginError &e) {
        // No such plugin, or one the loader refuses: nothing has connected
        // yet and a restart cannot help (as todd-agent).
        std::cerr << "todd-server: " << e.what() << "\n";
        return core::exit_usage;
    } catch (const core::CommsError &e) {
        // E_CONFIG: the plugin refused its configuration in create.
        std::cerr << "todd-server: " << e.what() << "\n";
        return e.status() == TODD_COMMS_E_CONFIG ? core::exit_usage
                                                 : core::exit_failure;
    } catch (const std::exception &e) {
        std::cerr << "todd-server: error: " << e.what() << "\n";
        return core::exit_failure;
    }
}
