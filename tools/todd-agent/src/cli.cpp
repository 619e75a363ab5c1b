// SPDX-License-Identifier: Apache-2.0
#include <todd/agent/agent.hpp>
#include <todd/agent/cli.hpp>
#include <todd/agent/identity.hpp>
#include <todd/core/comms.hpp>
#include <todd/core/log.hpp>
#include <todd/core/plugin_registry.hpp>
#include <todd/service/endpoint.hpp>
#include <todd/service/metrics.hpp>

#include "todd_build_config.h"

#include <algorithm>
#include <csignal>
#include <cstring>
#include <iostream>
#include <optional>
#include <pthread.h>

namespace po = boost::program_options;

namespace todd::agent {

namespace http = service::http;

namespace {
constexpr const char *log_component = "todd-agent";

// ToDD's config.Config: the Go agent accepts every section of it.
const std::map<std::string, std::vector<std::string>> &toddsections()
{
    static const std::map<std::string, std::vector<std::string>> s = {
        {"api", {"host", "port"}},
        {"assets", {"ip", "port"}},
        {"db", {"host", "port", "plugin", "databasename"}},
        {"tsdb", {"host", "port", "plugin", "databasename"}},
        {"grouping", {"interval"}},
        {"testing", {"timeout"}},
        {"localresources", {"defaultinterface", "ipaddroverride", "optdir"}},
        {"metrics", {"host", "port"}}, // ours
    };
    return s;
}

std::string lower(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    return s;
}

const char *help_footer = R"(
Configuration file: ToDD's agent.cfg (gcfg INI, names case-insensitive):
  [Comms]           Plugin = <transport>; every other key goes to the plugin
  [LocalResources]  DefaultInterface, IPAddrOverride, OptDir
  [Metrics]         Host, Port: /metrics, /healthz and /readyz (ours; off
                    unless Port is set)
Command-line values override the file.

Exit status:
  0  stopped by SIGINT or SIGTERM (or --help/--version)
  1  runtime failure (state directory unusable, transport cannot start)
  2  usage or configuration error (bad option, config file or plugin key,
     unknown plugin); nothing has connected yet
)";
} // namespace

void check_agent_config(const core::IniFile &ini,
                        const std::vector<std::string> &plugin_keys)
{
    for (const auto &[section, keys] : ini.sections) {
        if (section == "comms") {
            for (const auto &kv : keys) {
                const std::string &key = kv.first;
                if (key == "plugin")
                    continue;
                if (std::find(plugin_keys.begin(), plugin_keys.end(), key) ==
                    plugin_keys.end())
                    throw core::ConfigError(
                        ini.where(section, key) + ": [Comms] " + key +
                        " is not a key of the chosen transport plugin");
            }
            continue;
        }
        auto known = toddsections().find(section);
        if (known == toddsections().end())
            throw core::ConfigError(ini.where(section) + ": invalid section [" +
                                    section + "]");
        for (const auto &kv : keys) {
            const auto &allowed = known->second;
            if (std::find(allowed.begin(), allowed.end(), kv.first) ==
                allowed.end())
                throw core::ConfigError(ini.where(section, kv.first) +
                                        ": invalid variable " + kv.first +
                                        " in section [" + section + "]");
        }
    }
}

namespace {

/** SIGINT/SIGTERM are taken by sigwait in agent_main; before any thread
 *  exists, so every thread inherits the mask (children get it reset at
 *  spawn). */
sigset_t block_stop_signals()
{
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    return stop_signals;
}

po::options_description agent_options()
{
    po::options_description comms_desc("Transport");
    core::add_comms_options(comms_desc);
    po::options_description agent_desc("Agent");
    std::string datadir = TODD_DATADIR;
    agent_desc.add_options()(
        "help,h", "show this help (with the chosen plugin's keys) and exit")(
        "version", "show the version and exit")(
        "state-dir",
        po::value<std::string>()->default_value("/var/lib/todd-agent"),
        "directory keeping the agent UUID (agent-uuid), so a restart keeps "
        "the identity")(
        "opt-dir", po::value<std::string>(),
        "ToDD's OptDir (assets/{factcollectors,testlets}); overrides "
        "[LocalResources] OptDir (default /opt/todd/agent)")(
        "default-interface", po::value<std::string>(),
        "interface whose first IPv4 is advertised; overrides "
        "[LocalResources] DefaultInterface")(
        "ip-addr-override", po::value<std::string>(),
        "advertise this address verbatim; overrides [LocalResources] "
        "IPAddrOverride")("advert-interval",
                          po::value<double>()->default_value(10.0),
                          "seconds between adverts")(
        "testlet-dir",
        po::value<std::string>()->default_value(datadir + "/testlets"),
        "built-in testlets (after <OptDir>/assets/testlets)")(
        "factcollector-dir",
        po::value<std::string>()->default_value(datadir + "/factcollectors"),
        "built-in fact collectors (<OptDir>/assets/factcollectors override "
        "them by name)")(
        "metrics-port", po::value<unsigned>(),
        "serve /metrics, /healthz and /readyz over HTTP on this port "
        "(0 = a free one; default: off); overrides [Metrics] Port")(
        "metrics-host", po::value<std::string>(),
        "address for --metrics-port (default 127.0.0.1); overrides "
        "[Metrics] Host")("log-level",
                          po::value<std::string>()->default_value("info"),
                          "error|warn|info|debug|trace");
    po::options_description all("Usage: todd-agent [options]");
    all.add(agent_desc).add(comms_desc);
    return all;
}

/** The command line and the config file it names. */
struct CommandLine {
    po::variables_map vm;
    core::IniFile ini;
    bool have_ini = false;
    core::CommsSelection sel;

    /** A setting: the option when given, else the [LocalResources] key. */
    std::string setting(const char *opt, const char *key) const
    {
        if (vm.count(opt))
            return vm[opt].as<std::string>();
        return have_ini ? ini.get("localresources", key) : std::string();
    }
};

/** Parse the options and the config file, choose the transport. Returns
 *  the exit status when the program ends here (--version, an error). */
std::optional<int> parse_command_line(int argc, char **argv,
                                      const po::options_description &all,
                                      CommandLine &cl)
{
    try {
        po::store(po::parse_command_line(argc, argv, all), cl.vm);
        po::notify(cl.vm);
        log::set_level(log::parse_level(cl.vm["log-level"].as<std::string>()));
        if (cl.vm.count("version")) {
            std::cout << "todd-agent " << TODD_VERSION << "\n";
            return exit_ok;
        }
        if (cl.vm.count("config") &&
            !cl.vm["config"].as<std::string>().empty()) {
            cl.ini = core::parse_ini_file(cl.vm["config"].as<std::string>());
            cl.have_ini = true;
        }
        cl.sel = core::resolve_comms(cl.vm, cl.have_ini ? &cl.ini : nullptr);
        cl.sel.role = "agent";
    } catch (const std::exception &e) {
        if (cl.vm.count("help")) {
            std::cout << all << help_footer;
            std::cerr << "todd-agent: " << e.what() << "\n";
            return exit_usage;
        }
        std::cerr << "todd-agent: " << e.what()
                  << "\n(try todd-agent --help)\n";
        return exit_usage;
    }
    return std::nullopt;
}

/** --help: the options, then the chosen plugin's keys (or why not). */
void print_help(const po::options_description &all,
                const core::CommsSelection &sel, const core::Plugin *plugin,
                const std::string &plugin_error)
{
    std::cout << all << help_footer << "\n";
    if (plugin)
        std::cout << "Keys of transport plugin '" << sel.plugin_name
                  << "' (--comms-opt KEY=VALUE or [Comms] Key = value):\n"
                  << core::describe_keys(plugin->info());
    else
        std::cout << "(cannot list the keys of transport plugin '"
                  << sel.plugin_name << "': " << plugin_error << ")\n";
}

/** Check everything the user wrote against the plugin and build the
 *  agent's configuration; throws on the first mistake. */
AgentConfig agent_config(const CommandLine &cl, const core::Plugin &plugin)
{
    std::vector<std::string> keys;
    for (const auto &k : plugin.info().keys)
        keys.push_back(lower(k.name));
    if (cl.have_ini)
        check_agent_config(cl.ini, keys);
    core::Options given = cl.sel.options;
    core::fill_in_role(plugin.info(), given, cl.sel.role);
    core::validate_options(plugin.info(), given);

    AgentConfig cfg;
    cfg.opt_dir = cl.setting("opt-dir", "optdir");
    if (cfg.opt_dir.empty())
        cfg.opt_dir = "/opt/todd/agent";
    double interval = cl.vm["advert-interval"].as<double>();
    if (!(interval > 0) || interval > 86400)
        throw core::ConfigError(
            "--advert-interval must be between 0 and 86400 seconds");
    cfg.advert_interval =
        std::chrono::milliseconds(static_cast<int64_t>(interval * 1000));
    cfg.state_dir = cl.vm["state-dir"].as<std::string>();
    cfg.builtin_testlet_dir = cl.vm["testlet-dir"].as<std::string>();
    cfg.builtin_factcollector_dir =
        cl.vm["factcollector-dir"].as<std::string>();
    cfg.default_addr = derive_default_addr(
        cl.setting("ip-addr-override", "ipaddroverride"),
        cl.setting("default-interface", "defaultinterface"));
    return cfg;
}

/** Where to serve metrics, when asked to: host and port. */
struct MetricsListen {
    bool enabled = false;
    std::string host = "127.0.0.1";
    uint16_t port = 0;
};

MetricsListen metrics_listen(const CommandLine &cl)
{
    MetricsListen m;
    std::string port;
    if (cl.vm.count("metrics-port"))
        port = std::to_string(cl.vm["metrics-port"].as<unsigned>());
    else if (cl.have_ini)
        port = cl.ini.get("metrics", "port");
    if (port.empty())
        return m;
    char *end = nullptr;
    unsigned long v = std::strtoul(port.c_str(), &end, 10);
    if (*end != '\0' || v > 65535 ||
        port.find_first_not_of("0123456789") != std::string::npos)
        throw core::ConfigError((cl.vm.count("metrics-port")
                                     ? std::string("--metrics-port")
                                     : cl.ini.where("metrics", "port")) +
                                ": \"" + port + "\" is not a port (0-65535)");
    m.enabled = true;
    m.port = static_cast<uint16_t>(v);
    if (cl.vm.count("metrics-host"))
        m.host = cl.vm["metrics-host"].as<std::string>();
    else if (cl.have_ini && !cl.ini.get("metrics", "host").empty())
        m.host = cl.ini.get("metrics", "host");
    return m;
}

/** The metrics endpoint's routes. */
http::Response serve_metrics(Agent &agent, const http::Request &req)
{
    std::string_view target(req.target().data(), req.target().size());
    std::string_view path = target.substr(0, target.find('?'));
    if (path == "/metrics")
        return service::metrics_reply(req, agent.metrics_text());
    if (path == "/healthz")
        return service::health_reply(req, {});
    if (path == "/readyz")
        return service::health_reply(req, agent.readiness());
    return http::not_found(req);
}

/** Create the transport and the agent and start it; the exit status on
 *  failure. */
std::optional<int> start_agent(const core::CommsSelection &sel, AgentConfig cfg,
                               std::unique_ptr<Agent> &agent)
{
    try {
        auto comms = std::make_unique<core::Comms>(
            core::open_transport(sel), core::SendPolicy{}, sel.limits);
        agent = std::make_unique<Agent>(std::move(cfg), std::move(comms));
        agent->start();
    } catch (const core::CommsError &e) {
        // The plugin refused its configuration in create (e.g. a TLS file
        // that cannot be used): nothing has connected, retrying cannot help.
        std::cerr << "todd-agent: " << e.what() << "\n";
        return e.status() == TODD_COMMS_E_CONFIG ? exit_usage : exit_failure;
    } catch (const std::exception &e) {
        std::cerr << "todd-agent: " << e.what() << "\n";
        return exit_failure;
    }
    return std::nullopt;
}

} // namespace

int agent_main(int argc, char **argv)
{
    sigset_t stop_signals = block_stop_signals();
    po::options_description all = agent_options();
    CommandLine cl;
    if (auto rc = parse_command_line(argc, argv, all, cl))
        return *rc;

    core::PluginRegistry registry(core::plugin_search_path(cl.sel.plugin_dirs));
    std::shared_ptr<const core::Plugin> plugin;
    std::string plugin_error;
    try {
        plugin = registry.load(cl.sel.plugin_name);
    } catch (const std::exception &e) {
        plugin_error = e.what();
    }
    if (cl.vm.count("help")) {
        print_help(all, cl.sel, plugin.get(), plugin_error);
        return exit_ok;
    }
    if (!plugin) {
        std::cerr << "todd-agent: " << plugin_error << "\n";
        return exit_usage;
    }

    // Everything the user wrote is checked before anything connects.
    AgentConfig cfg;
    MetricsListen listen;
    try {
        cfg = agent_config(cl, *plugin);
        listen = metrics_listen(cl);
    } catch (const std::exception &e) {
        std::cerr << "todd-agent: " << e.what() << "\n";
        return exit_usage;
    }

    std::unique_ptr<Agent> agent;
    if (auto rc = start_agent(cl.sel, std::move(cfg), agent))
        return *rc;
    std::unique_ptr<service::Endpoint> endpoint;
    if (listen.enabled) {
        try {
            Agent *a = agent.get();
            endpoint = std::make_unique<service::Endpoint>(
                listen.host, listen.port,
                [a](const http::Request &r) { return serve_metrics(*a, r); },
                "metrics");
            endpoint->start();
            log::info(log_component, "metrics at http://" + listen.host + ":" +
                                         std::to_string(endpoint->port()) +
                                         "/metrics (and /healthz, /readyz)");
        } catch (const std::exception &e) {
            std::cerr << "todd-agent: metrics endpoint " << listen.host << ":"
                      << listen.port << ": " << e.what() << "\n";
            agent->stop();
            return exit_failure;
        }
    }
    log::info(log_component, "running with transport '" + cl.sel.plugin_name +
                                 "'; SIGINT or SIGTERM stops");
    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0) {
    }
    log::info(log_component, std::string("got ") + ::strsignal(sig));
    if (endpoint)
        endpoint->stop(); // its handler uses the agent
    agent->stop();
    agent.reset();
    return exit_ok;
}

} // namespace todd::agent
