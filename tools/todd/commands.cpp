#include "commands.hpp"

#include "format.hpp"
#include "json_text.hpp"
#include "net.hpp"
#include "objects.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "todd_build_config.h"

namespace todd::cli {

namespace {

using Clock = std::chrono::steady_clock;

// A bad command line: printed with a hint, exit status 2.
struct UsageError {
    std::string message;
    std::string command; // for the "--help" hint
};

// A failed command: printed, exit status 1.
struct CommandError {
    std::string message;
};

struct Options {
    ServerAddress server;
    std::string stream_port = "8081";
    std::chrono::milliseconds http_timeout{10000};
    std::string command;
    std::vector<std::string> args; // command arguments, flags included
    bool help = false;
    bool version = false;
};

const char *const kMainHelp =
    R"(todd - command line client for a ToDD server (Testing on Demand: Distributed)

Usage: todd [GLOBAL OPTIONS] COMMAND [ARGS]

Commands:
  agents [UUID-PREFIX]   list registered agents, or show one in detail
  groups                 show which group each agent is in
  objects TYPE           list stored objects (TYPE: group or testrun)
  create [FILE|-]        create or replace an object from a YAML file
  delete TYPE NAME       delete an object (TYPE: group or testrun)
  run NAME [OPTIONS]     run a testrun object and print its results
  help [COMMAND]         show help for a command

Global options (before or after the command):
  -H, --host HOST        ToDD server host name or address (default localhost)
  -P, --port PORT        ToDD server REST API port (default 8080)
      --stream-port PORT test-run status stream port (default 8081)
      --http-timeout S   timeout of each HTTP request in seconds (default 10)
  -h, --help             show this help (also: todd COMMAND --help)
  -v, --version          print the version

Exit status: 0 success, 1 error (server unreachable, error reply, invalid
object file, failed or timed-out run), 2 command-line usage error.
)";

const std::map<std::string, std::string> kCommandHelp = {
    {"agents", R"(Usage: todd agents [UUID-PREFIX]

Without an argument, lists the registered agents: UUID (first 12 characters),
EXPIRES (time left until the registration lapses), ADDR, FACT SUMMARY and
COLLECTOR SUMMARY. With a UUID prefix, shows the matching agent in detail
(its full UUID, expiry, fact collectors and facts). Exit status 1 if no
agent matches the prefix.
)"},
    {"groups", R"(Usage: todd groups

Shows the group of every agent that is in one (UUID prefix, GROUP NAME).
)"},
    {"objects", R"(Usage: todd objects TYPE

Lists the stored objects of TYPE (group or testrun): LABEL, TYPE and SPEC.
)"},
    {"create", R"(Usage: todd create [FILE]
       todd create - < FILE
       cat FILE | todd create

Creates (or replaces) the object defined in the YAML file FILE. With "-" or
no FILE, reads the definition from standard input (which must then not be a
terminal). The file has three keys: type (group or testrun), label and spec.

  type: group                      type: testrun
  label: red                       label: ping-red
  spec:                            spec:
    group: red                       targettype: uncontrolled
    matches:                         source: {name: red, app: ping,
    - hostname: "agent-.*"                    args: "-c 3"}
    - within_subnet: 10.0.0.0/8      target: [127.0.0.1]

A testrun with targettype group has a target map (name, app, args) instead
of a list of addresses. The file is checked before anything is sent; errors
name the line and field.
)"},
    {"delete", R"(Usage: todd delete TYPE NAME

Deletes the object of TYPE (group or testrun) labelled NAME.
)"},
    {"run", R"(Usage: todd run NAME [-y] [-j] [--timeout S] [--source-group G]
                [--source-app A] [--source-args ARGS]

Runs the testrun object NAME: asks for confirmation (unless -y), starts the
run, shows the status of every agent while it runs (one line per change,
with the counts of agents in init, ready, testing, finished and fail), then
fetches the results and prints them as a table (AGENT, TARGET, METRIC,
VALUE), or as indented JSON with -j. An agent that fails is reported and the
run goes on to its end.

Options:
  -y, --yes              do not ask for confirmation
  -j, --json             print the results as indented JSON
      --timeout S        give up waiting for the results after S seconds
                         (default 120); exit status 1
      --source-group G   use source group G for this run only (implies -j,
                         as in ToDD's CLI)
      --source-app A     use testlet A for this run only
      --source-args ARGS use testlet arguments ARGS for this run only
)"},
    {"help", R"(Usage: todd help [COMMAND]

Shows the general help, or the help of COMMAND.
)"},
};

bool starts_with(std::string_view s, std::string_view p)
{
    return s.substr(0, p.size()) == p;
}

std::string trim(std::string s)
{
    auto ws = [](unsigned char c) { return std::isspace(c) != 0; };
    while (!s.empty() && ws(s.back()))
        s.pop_back();
    std::size_t i = 0;
    while (i < s.size() && ws(s[i]))
        ++i;
    return s.substr(i);
}

// The first line of an error reply body, to show the server's reason.
std::string reason_of(const HttpReply &r)
{
    std::string body = trim(r.body);
    auto nl = body.find('\n');
    if (nl != std::string::npos)
        body = body.substr(0, nl) + " ...";
    if (body.size() > 200)
        body = body.substr(0, 200) + "...";
    return body.empty() ? r.status_line() : r.status_line() + ": " + body;
}

bool ok(const HttpReply &r)
{
    return r.status >= 200 && r.status <= 299;
}

std::string url_escape(std::string_view s)
{
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    return out;
}

std::chrono::milliseconds parse_seconds(const std::string &opt,
                                        const std::string &v,
                                        const std::string &command)
{
    try {
        std::size_t used = 0;
        double s = std::stod(v, &used);
        if (used == v.size() && s > 0 && s <= 86400)
            return std::chrono::milliseconds(static_cast<long long>(s * 1000));
    } catch (const std::exception &) {
    }
    throw UsageError{opt + ": '" + v +
                         "' is not a number of seconds between 0 and 86400",
                     command};
}

std::string parse_port(const std::string &opt, const std::string &v,
                       const std::string &command)
{
    try {
        std::size_t used = 0;
        int p = std::stoi(v, &used);
        if (used == v.size() && p > 0 && p < 65536)
            return v;
    } catch (const std::exception &) {
    }
    throw UsageError{opt + ": '" + v + "' is not a port number (1-65535)",
                     command};
}

// Splits "--name=value"; returns the name part.
std::string flag_name(const std::string &a,
                      std::optional<std::string> &inline_value)
{
    inline_value.reset();
    auto eq = a.find('=');
    if (starts_with(a, "-") && eq != std::string::npos) {
        inline_value = a.substr(eq + 1);
        return a.substr(0, eq);
    }
    return a;
}

Options parse_global(const std::vector<std::string> &argv)
{
    Options o;
    bool only_args = false;
    for (std::size_t i = 0; i < argv.size(); ++i) {
        const std::string &a = argv[i];
        if (only_args || a == "-" || !starts_with(a, "-")) {
            if (o.command.empty())
                o.command = a;
            else
                o.args.push_back(a);
            continue;
        }
        if (a == "--") {
            only_args = true;
            if (!o.command.empty())
                o.args.push_back(a);
            continue;
        }
        std::optional<std::string> inl;
        std::string name = flag_name(a, inl);
        auto value = [&]() -> std::string {
            if (inl)
                return *inl;
            if (i + 1 >= argv.size())
                throw UsageError{name + " needs a value", o.command};
            return argv[++i];
        };
        if (name == "-H" || name == "--host") {
            o.server.host = value();
            if (o.server.host.empty())
                throw UsageError{name + ": empty host", o.command};
        } else if (name == "-P" || name == "--port") {
            o.server.port = parse_port(name, value(), o.command);
        } else if (name == "--stream-port") {
            o.stream_port = parse_port(name, value(), o.command);
        } else if (name == "--http-timeout") {
            o.http_timeout = parse_seconds(name, value(), o.command);
        } else if (name == "-h" || name == "--help") {
            o.help = true;
        } else if ((name == "-v" || name == "--version") && o.command.empty()) {
            o.version = true;
        } else if (o.command.empty()) {
            throw UsageError{"unknown option " + name, ""};
        } else {
            o.args.push_back(a); // the command's own flag
        }
    }
    return o;
}

struct RunOptions;

/** What the status stream of a run showed. */
struct RunWatch {
    std::map<std::string, std::string> last; // agent: its last status
    std::set<std::string> participants;      // the agents of the first line
    bool complete = false; // every participant finished or failed
};

class Cli {
  public:
    Cli(Options o, Io io) : o_(std::move(o)), io_(io) {}

    int dispatch()
    {
        const std::string &c = o_.command;
        if (c == "agents")
            return agents();
        if (c == "groups")
            return groups();
        if (c == "objects")
            return objects();
        if (c == "create")
            return create();
        if (c == "delete")
            return del();
        if (c == "run")
            return run();
        throw UsageError{"unknown command '" + c + "'", ""};
    }

  private:
    HttpReply get(const std::string &target)
    {
        return http_request(o_.server, "GET", target, "", o_.http_timeout);
    }
    HttpReply post(const std::string &target, const std::string &body)
    {
        return http_request(o_.server, "POST", target, body, o_.http_timeout);
    }

    // Positional arguments of the command; any flag is a usage error.
    std::vector<std::string> positional(std::size_t min, std::size_t max,
                                        const std::string &what)
    {
        std::vector<std::string> pos;
        bool only = false;
        for (const auto &a : o_.args) {
            if (!only && a == "--") {
                only = true;
            } else if (!only && starts_with(a, "-") && a != "-") {
                throw UsageError{"unknown option " + a + " for '" + o_.command +
                                     "'",
                                 o_.command};
            } else {
                pos.push_back(a);
            }
        }
        if (pos.size() < min)
            throw UsageError{what, o_.command};
        if (pos.size() > max)
            throw UsageError{"too many arguments for '" + o_.command + "'",
                             o_.command};
        return pos;
    }

    void need_ok(const HttpReply &r)
    {
        if (!ok(r))
            throw CommandError{reason_of(r)};
    }

    int agents()
    {
        auto pos = positional(0, 1, "");
        std::string prefix = pos.empty() ? "" : pos[0];
        HttpReply r =
            get(prefix.empty() ? "/v1/agent"
                               : "/v1/agent?uuid=" + url_escape(prefix));
        need_ok(r);
        std::vector<Agent> list = parse_agents(r.body);
        if (!prefix.empty()) {
            // The Go server returns every agent when none matches.
            std::erase_if(list, [&](const Agent &a) {
                return !starts_with(a.uuid, prefix);
            });
            if (list.empty())
                throw CommandError{"no agent with a UUID starting with '" +
                                   prefix + "'"};
            for (std::size_t i = 0; i < list.size(); ++i)
                io_.out << (i ? "\n" : "") << format_agent_detail(list[i]);
            return kExitOk;
        }
        if (list.empty() || list.front().uuid.empty()) {
            io_.out << "No agents found.\n";
            return kExitOk;
        }
        std::sort(list.begin(), list.end(), [](const Agent &a, const Agent &b) {
            return a.uuid < b.uuid;
        });
        io_.out << format_agents_table(list);
        return kExitOk;
    }

    int groups()
    {
        positional(0, 0, "");
        HttpReply r = get("/v1/groups");
        need_ok(r);
        io_.out << format_groups_table(parse_groups(r.body));
        return kExitOk;
    }

    static void check_type(const std::string &type, const std::string &cmd)
    {
        if (type != "group" && type != "testrun")
            throw UsageError{"unknown object type '" + type +
                                 "' (expected group or testrun)",
                             cmd};
    }

    int objects()
    {
        auto pos = positional(1, 1,
                              "please provide the object type "
                              "(group or testrun)");
        check_type(pos[0], "objects");
        HttpReply r = get("/v1/object/" + pos[0]);
        need_ok(r);
        io_.out << format_objects_table(r.body);
        return kExitOk;
    }

    int create()
    {
        auto pos = positional(0, 1, "");
        std::string file = pos.empty() ? "-" : pos[0];
        std::string text, source;
        if (file == "-") {
            if (io_.in_is_tty)
                throw UsageError{"object definition file not provided - "
                                 "please provide via filename or stdin",
                                 "create"};
            std::ostringstream ss;
            ss << io_.in.rdbuf();
            text = ss.str();
            source = "<stdin>";
        } else {
            std::ifstream f(file, std::ios::binary);
            if (!f)
                throw CommandError{"cannot read object definition file '" +
                                   file + "': " + std::strerror(errno)};
            std::ostringstream ss;
            ss << f.rdbuf();
            text = ss.str();
            source = file;
        }
        ObjectJson obj = yaml_object_to_json(text, source);
        HttpReply r = post("/v1/object/create", obj.json);
        need_ok(r);
        io_.out << "[OK]\n";
        return kExitOk;
    }

    int del()
    {
        auto pos = positional(2, 2,
                              "need to provide type and label (Ex. 'todd "
                              "delete group datacenter')");
        check_type(pos[0], "delete");
        if (pos[1].empty())
            throw UsageError{"empty label", "delete"};
        HttpReply r = post("/v1/object/delete",
                           "{\"label\":" + go_json_quote(pos[1]) +
                               ",\"type\":" + go_json_quote(pos[0]) + "}");
        if (!ok(r))
            throw CommandError{reason_of(r) +
                               "\n(Are you sure you provided the right "
                               "object type and/or label?)"};
        io_.out << "[OK]\n";
        return kExitOk;
    }

    // `todd run`, step by step.
    int run();
    bool confirm(const RunOptions &ro);          // false: the user said no
    std::string start_run(const RunOptions &ro); // the run's UUID
    void watch_status(Clock::time_point start, Clock::time_point deadline,
                      RunWatch &w);
    HttpReply fetch_results(const std::string &uuid, const RunOptions &ro,
                            Clock::time_point deadline, bool complete);
    void print_results(const RunOptions &ro, const HttpReply &result,
                       const RunWatch &w);

    Options o_;
    Io io_;
};

struct RunOptions {
    std::string name;
    bool yes = false;
    bool json = false;
    std::chrono::milliseconds timeout{120000};
    std::string source_group, source_app, source_args;
};

RunOptions parse_run(const std::vector<std::string> &args)
{
    RunOptions r;
    bool only = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string &a = args[i];
        if (only || !starts_with(a, "-") || a == "-") {
            if (!r.name.empty())
                throw UsageError{"too many arguments for 'run' ('" + r.name +
                                     "' and '" + a + "')",
                                 "run"};
            r.name = a;
            continue;
        }
        if (a == "--") {
            only = true;
            continue;
        }
        std::optional<std::string> inl;
        std::string name = flag_name(a, inl);
        auto value = [&]() -> std::string {
            if (inl)
                return *inl;
            if (i + 1 >= args.size())
                throw UsageError{name + " needs a value", "run"};
            return args[++i];
        };
        if (name == "-y" || name == "--y" || name == "--yes")
            r.yes = true;
        else if (name == "-j" || name == "--j" || name == "--json")
            r.json = true;
        else if (name == "--timeout")
            r.timeout = parse_seconds(name, value(), "run");
        else if (name == "--source-group")
            r.source_group = value();
        else if (name == "--source-app")
            r.source_app = value();
        else if (name == "--source-args")
            r.source_args = value();
        else
            throw UsageError{"unknown option " + name + " for 'run'", "run"};
    }
    if (r.name.empty())
        throw UsageError{"please provide testrun object name to run", "run"};
    return r;
}

int Cli::run()
{
    RunOptions ro = parse_run(o_.args);
    if (!ro.yes && !confirm(ro)) {
        io_.out << "Aborted.\n";
        return kExitOk;
    }
    // The run's time budget starts once the user has confirmed.
    auto start = Clock::now();
    auto deadline = start + ro.timeout;
    std::string uuid = start_run(ro);
    io_.out << "\nRUNNING TEST: " << uuid
            << "\n\n(Please be patient while the test finishes...)\n"
            << std::flush;
    RunWatch watch;
    try {
        watch_status(start, deadline, watch);
    } catch (const std::exception &e) {
        io_.out << "Problem subscribing to testrun updates stream: " << e.what()
                << "\n"
                << "Will now watch the testrun metrics API until the run "
                   "timeout to see if we get a result that way. Please "
                   "wait...\n"
                << std::flush;
    }
    HttpReply result = fetch_results(uuid, ro, deadline, watch.complete);
    print_results(ro, result, watch);
    return kExitOk;
}

bool Cli::confirm(const RunOptions &ro)
{
    io_.out << "Activate testrun \"" << ro.name << "\"? (y/n): " << std::flush;
    std::string answer;
    if (!std::getline(io_.in, answer))
        throw CommandError{"no answer to the confirmation on stdin (use "
                           "-y to skip it)"};
    answer = trim(answer);
    return answer == "y" || answer == "Y" || answer == "yes";
}

std::string Cli::start_run(const RunOptions &ro)
{
    std::string body = "{\"testRunName\":" + go_json_quote(ro.name) +
                       ",\"sourceGroup\":" + go_json_quote(ro.source_group) +
                       ",\"sourceApp\":" + go_json_quote(ro.source_app) +
                       ",\"sourceArgs\":" + go_json_quote(ro.source_args) +
                       "}\n";
    HttpReply r = post("/v1/testrun/run", body);
    need_ok(r);
    std::string uuid = trim(r.body);
    if (uuid == "invalidtopology")
        throw CommandError{"Not enough agents are in the groups specified "
                           "by the testrun"};
    if (uuid == "notfound")
        throw CommandError{"Specified testrun object not found"};
    if (uuid == "failure")
        throw CommandError{"some kind of error was encountered on the "
                           "server. Test was not run"};
    if (uuid.empty() ||
        std::any_of(uuid.begin(), uuid.end(), [](unsigned char c) {
            return !std::isalnum(c) && c != '-';
        }))
        throw CommandError{"unexpected reply to the run request: \"" +
                           uuid.substr(0, 100) + "\""};
    return uuid;
}

void Cli::watch_status(Clock::time_point start, Clock::time_point deadline,
                       RunWatch &w)
{
    ServerAddress stream_addr{o_.server.host, o_.stream_port};
    // A server without a stream must not cost the whole run timeout:
    // after 10 s of refused connections, poll for the result instead.
    StatusStream stream(
        stream_addr,
        std::min(deadline, Clock::now() + std::chrono::seconds(10)));
    bool first = true;
    std::string previous;
    while (true) {
        auto line = stream.read_line(deadline);
        if (!line)
            throw TransportError("disconnected from testrun status "
                                 "stream");
        auto statuses = parse_status_line(*line);
        if (first) {
            for (const auto &kv : statuses)
                w.participants.insert(kv.first);
            first = false;
        }
        for (const auto &kv : statuses)
            w.last[kv.first] = kv.second;
        std::size_t done = 0;
        for (const auto &p : w.participants) {
            auto it = statuses.find(p);
            if (it != statuses.end() &&
                (it->second == "finished" || it->second == "fail"))
                ++done;
        }
        std::string shown =
            format_status_counts(statuses, w.participants.size()) + "  | " +
            format_agent_statuses(statuses);
        if (shown != previous) {
            double t =
                std::chrono::duration<double>(Clock::now() - start).count();
            io_.out << " [" << std::fixed << std::setprecision(3) << t << "s] "
                    << shown << "\n"
                    << std::flush;
            previous = shown;
        }
        if (done == w.participants.size()) {
            w.complete = true;
            return; // like the Go CLI, no ack for the final line
        }
        stream.ack(deadline);
    }
}

HttpReply Cli::fetch_results(const std::string &uuid, const RunOptions &ro,
                             Clock::time_point deadline, bool complete)
{
    // The results may land just after the last status.
    std::string target = "/v1/testdata?testUuid=" + url_escape(uuid);
    std::chrono::milliseconds pause(complete ? 5 : 100);
    std::string last_problem = "no reply yet";
    while (true) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - Clock::now());
        if (left.count() <= 0)
            break;
        try {
            HttpReply d = http_request(o_.server, "GET", target, "",
                                       std::min(left, o_.http_timeout));
            if (ok(d))
                return d;
            last_problem = reason_of(d);
        } catch (const std::exception &e) {
            last_problem = e.what();
        }
        std::this_thread::sleep_for(std::min(
            pause, std::chrono::duration_cast<std::chrono::milliseconds>(
                       deadline - Clock::now())));
        pause = std::min(pause * 2, std::chrono::milliseconds(500));
    }
    std::ostringstream msg;
    msg << "failed to retrieve test data within "
        << std::chrono::duration<double>(ro.timeout).count()
        << " seconds (--timeout); last reply: " << last_problem;
    throw CommandError{msg.str()};
}

void Cli::print_results(const RunOptions &ro, const HttpReply &result,
                        const RunWatch &w)
{
    std::vector<std::string> failed;
    for (const auto &[agent, status] : w.last)
        if (status == "fail")
            failed.push_back(agent);

    io_.out << "\nDone.\n";
    if (ro.json || !ro.source_group.empty()) {
        std::string why;
        if (!json_is_valid(result.body, &why))
            throw CommandError{"the test data is not valid JSON (" + why +
                               "): " + result.body.substr(0, 200)};
        io_.out << json_indent(result.body, "  ") << "\n";
    } else {
        io_.out << format_results_table(result.body, failed);
    }
    io_.out << std::flush;
    if (!failed.empty()) {
        io_.err << "WARNING: " << failed.size() << " of "
                << std::max(w.participants.size(), w.last.size())
                << " agents failed:";
        for (const auto &f : failed)
            io_.err << " " << f;
        io_.err << "\n";
    }
}

void print_help(std::ostream &out, const std::string &command)
{
    auto it = kCommandHelp.find(command);
    out << (it == kCommandHelp.end() ? kMainHelp : it->second);
}

} // namespace

int run_cli(const std::vector<std::string> &args, Io io)
{
    std::string command;
    try {
        Options o = parse_global(args);
        command = o.command;
        if (o.version) {
            io.out << "todd version " TODD_VERSION "\n";
            return kExitOk;
        }
        if (o.command == "help") {
            std::string topic = o.args.empty() ? "" : o.args[0];
            if (!topic.empty() && !kCommandHelp.count(topic))
                throw UsageError{"no help topic for '" + topic + "'", ""};
            print_help(io.out, topic);
            return kExitOk;
        }
        if (o.help) {
            if (!o.command.empty() && !kCommandHelp.count(o.command))
                throw UsageError{"unknown command '" + o.command + "'", ""};
            print_help(io.out, o.command);
            return kExitOk;
        }
        if (o.command.empty())
            throw UsageError{"no command given", ""};
        return Cli(std::move(o), io).dispatch();
    } catch (const UsageError &e) {
        io.err << "ERROR: " << e.message << "\n"
               << "Run 'todd " << (e.command.empty() ? "" : e.command + " ")
               << "--help' for usage.\n";
        return kExitUsage;
    } catch (const CommandError &e) {
        io.err << "ERROR: " << e.message << "\n";
    } catch (const ObjectError &e) {
        io.err << "ERROR: " << e.what() << "\n";
    } catch (const ReplyError &e) {
        io.err << "ERROR: unexpected reply from the ToDD server: " << e.what()
               << "\n";
    } catch (const std::exception &e) {
        io.err << "ERROR: " << e.what() << "\n";
    }
    io.out << std::flush;
    return kExitError;
}

} // namespace todd::cli
