// SPDX-License-Identifier: Apache-2.0
// Discovery, loading and validation of plugins. Rule IDs (LOAD-*) are those
// of docs/plugin-abi.md; every refusal names the file and the rule.
#include <todd/core/log.hpp>
#include <todd/core/plugin_registry.hpp>
#include <todd/core/unique_fd.hpp>

#include "elf_check.hpp"
#include "plugin_trust.hpp"
#include "todd_build_config.h"

#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

namespace todd::core {
namespace {

namespace stdfs = std::filesystem;

constexpr const char *kPrefix = "libtodd-comms-";
constexpr const char *kSuffix = ".so";
constexpr const char *kComponent = "plugins";

// Size of the descriptor as ABI 1.0 defines it; a plugin may be larger.
constexpr size_t kDescriptorV1Size = sizeof(todd_comms_plugin_descriptor);

using EntryFn =
    const todd_comms_plugin_descriptor *(const todd_comms_host_info *);

bool valid_plugin_name(std::string_view s)
{
    if (s.empty())
        return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '-';
    });
}

bool valid_key_name(std::string_view s)
{
    if (s.empty())
        return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

/** "<name>" of libtodd-comms-<name>.so, or nullopt when the file name has
 *  another shape (such files are not plugin candidates at all). */
std::optional<std::string> candidate_name(const std::string &filename)
{
    const size_t p = std::strlen(kPrefix), s = std::strlen(kSuffix);
    if (filename.size() <= p + s || filename.compare(0, p, kPrefix) != 0 ||
        filename.compare(filename.size() - s, s, kSuffix) != 0)
        return std::nullopt;
    return filename.substr(p, filename.size() - p - s);
}

bool value_parses(uint32_t type, const std::string &v)
{
    switch (type) {
    case TODD_COMMS_CFG_INT: {
        if (v.empty())
            return false;
        errno = 0;
        char *end = nullptr;
        (void)std::strtoll(v.c_str(), &end, 10);
        return errno == 0 && *end == '\0' && end != v.c_str();
    }
    case TODD_COMMS_CFG_BOOL:
        return v == "true" || v == "false" || v == "yes" || v == "no" ||
               v == "on" || v == "off" || v == "1" || v == "0";
    default: return true;
    }
}

bool known_type(uint32_t t)
{
    return t >= TODD_COMMS_CFG_STRING && t <= TODD_COMMS_CFG_SECRET;
}

/** A file refused for breaking a rule. */
struct Refused {
    Refusal r;
};

[[noreturn]] void refuse(const std::string &path, const std::string &rule,
                         const std::string &why)
{
    throw Refused{{path, rule, path + ": refused (" + rule + "): " + why}};
}

using Fd = UniqueFd;

bool same_file(const struct stat &a, const struct stat &b)
{
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/** The dlerror part of Boost.DLL's message, or the whole message. */
std::string loader_text(const std::system_error &e)
{
    std::string w = e.what();
    const std::string marker = "dlerror system message: ";
    auto at = w.find(marker);
    if (at == std::string::npos)
        return w;
    auto start = at + marker.size();
    auto end = w.rfind(')');
    if (end == std::string::npos || end < start)
        return w.substr(start);
    return w.substr(start, end - start);
}

// Process-lifetime registry: libraries are never unloaded (docs/plugin-abi.md
// HOST-5), so no instance, callback or function pointer outlives its code.
// Leaked on purpose: no dlclose from static destructors at exit either.
struct Registry {
    std::mutex mutex;
    std::vector<boost::dll::shared_library> libraries;
    std::map<std::string, std::shared_ptr<const Plugin>> by_path;
};
Registry &registry()
{
    static auto *r = new Registry;
    return *r;
}

/** A file past LOAD-1: canonical path, <name>, and the file opened once. */
struct Candidate {
    stdfs::path path;
    std::string ps; // path.string()
    std::string name;
    Fd fd{-1};
    struct stat st {}; // fstat of fd
};

void check_load1(const std::string &given_path, Candidate &c)
{
    // LOAD-1: name and file type, before anything touches the file's code.
    stdfs::path p = stdfs::absolute(given_path).lexically_normal();
    const std::string filename = p.filename().string();
    auto name = candidate_name(filename);
    if (!name || !valid_plugin_name(*name))
        refuse(p.string(), "LOAD-1",
               "file name must be libtodd-comms-<name>.so with <name> in "
               "[a-z0-9_-]+");
    std::error_code ec;
    stdfs::path dir = stdfs::canonical(p.parent_path(), ec);
    if (ec)
        refuse(p.string(), "LOAD-1",
               "directory " + p.parent_path().string() + ": " + ec.message());
    c.path = dir / filename; // canonical: the file itself is no link
    c.ps = c.path.string();
    c.name = *name;
    const std::string &ps = c.ps;

    struct stat st {};
    if (::lstat(ps.c_str(), &st) != 0)
        refuse(ps, "LOAD-1",
               std::string("cannot stat: ") + std::strerror(errno));
    if (S_ISLNK(st.st_mode))
        refuse(ps, "LOAD-1",
               "is a symbolic link; plugins must be regular files");
    if (!S_ISREG(st.st_mode))
        refuse(ps, "LOAD-1", "is not a regular file");
    // Opened once: the checks below read this file, not whatever the path
    // names later. O_NONBLOCK: a FIFO swapped in must not hang the open.
    c.fd =
        Fd(::open(ps.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
    if (c.fd.get() < 0)
        refuse(ps, "LOAD-1",
               std::string("cannot open: ") + std::strerror(errno));
    if (::fstat(c.fd.get(), &c.st) != 0 || !same_file(st, c.st) ||
        !S_ISREG(c.st.st_mode))
        refuse(ps, "LOAD-1", "file changed while being checked");
}

void check_load2(const Candidate &c)
{
    // LOAD-2: nobody but root or us may swap the code we are about to run.
    if (auto why = detail::untrusted_reason(c.path, c.st, ::geteuid()))
        refuse(c.ps, "LOAD-2", *why);
}

void check_load3_elf(const Candidate &c)
{
    // LOAD-3, first half: the dynamic loader trusts the ELF headers and maps
    // what they say, so a truncated or corrupt file kills the host (SIGBUS).
    // Read the headers first; nothing has mapped the file yet.
    if (auto why = detail::elf_shared_object_problem(
            c.fd.get(), static_cast<uint64_t>(c.st.st_size)))
        refuse(c.ps, "LOAD-3",
               "not a complete ELF shared object for this host: " + *why);
    // dlopen takes the path, not "/proc/self/fd/N": glibc would take a later
    // plugin opened on the same fd number for the first one (it matches
    // loaded objects by name), and debuggers and sanitizers could not find
    // the file by that name. LOAD-2 leaves only root or us able to swap the
    // file in between; this catches a writer racing with the check.
    struct stat now {};
    struct stat at_path {};
    if (::fstat(c.fd.get(), &now) != 0 || now.st_size != c.st.st_size ||
        now.st_mtim.tv_sec != c.st.st_mtim.tv_sec ||
        now.st_mtim.tv_nsec != c.st.st_mtim.tv_nsec ||
        ::lstat(c.ps.c_str(), &at_path) != 0 || !same_file(at_path, c.st))
        refuse(c.ps, "LOAD-3", "file changed while being checked");
}

boost::dll::shared_library load3_dlopen(const std::string &ps)
{
    // LOAD-3, second half: absolute canonical path (a bare name would be
    // searched in the working directory by Boost.DLL 1.74), symbols bound
    // now, local binding.
    boost::dll::shared_library lib;
    try {
        lib.load(boost::dll::fs::path(ps),
                 boost::dll::load_mode::rtld_now |
                     boost::dll::load_mode::rtld_local);
    } catch (const std::system_error &e) {
        refuse(ps, "LOAD-3", "cannot load: " + loader_text(e));
    }
    return lib;
}

EntryFn &check_load4(boost::dll::shared_library &lib, const std::string &ps)
{
    // LOAD-4
    if (!lib.has(TODD_COMMS_ENTRY_SYMBOL_V1)) {
        std::string other;
        for (int major = 2; major <= 9; ++major) {
            std::string sym =
                "todd_comms_plugin_entry_v" + std::to_string(major);
            if (lib.has(sym))
                other += (other.empty() ? "" : ", ") + sym;
        }
        refuse(ps, "LOAD-4",
               std::string("no entry symbol " TODD_COMMS_ENTRY_SYMBOL_V1) +
                   (other.empty() ? ""
                                  : " (exports only " + other +
                                        ": built for another ABI major)"));
    }
    return lib.get<EntryFn>(TODD_COMMS_ENTRY_SYMBOL_V1);
}

const todd_comms_plugin_descriptor *check_load5(EntryFn &entry,
                                                const std::string &ps)
{
    // LOAD-5
    todd_comms_host_info host{};
    host.struct_size = sizeof host;
    host.abi_major = TODD_COMMS_ABI_MAJOR;
    host.abi_minor = TODD_COMMS_ABI_MINOR;
    host.host_version = TODD_VERSION;
    const todd_comms_plugin_descriptor *d = entry(&host);
    if (d == nullptr)
        refuse(ps, "LOAD-5",
               "entry " TODD_COMMS_ENTRY_SYMBOL_V1
               " returned NULL (plugin declined this host)");
    return d;
}

void check_load6_to_9(const todd_comms_plugin_descriptor *d,
                      const std::string &ps)
{
    // LOAD-6, before any other field: another major may lay them out
    // differently.
    if (d->abi_major != TODD_COMMS_ABI_MAJOR)
        refuse(ps, "LOAD-6",
               "ABI major " + std::to_string(d->abi_major) + ", host speaks " +
                   std::to_string(TODD_COMMS_ABI_MAJOR));
    // LOAD-7
    if (d->struct_size < kDescriptorV1Size)
        refuse(ps, "LOAD-7",
               "descriptor struct_size " + std::to_string(d->struct_size) +
                   " is smaller than the ABI 1.0 descriptor (" +
                   std::to_string(kDescriptorV1Size) + " bytes)");
    // LOAD-8
    const std::pair<const char *, bool> mandatory[] = {
        {"create", d->create != nullptr},
        {"destroy", d->destroy != nullptr},
        {"start", d->start != nullptr},
        {"stop", d->stop != nullptr},
        {"publish", d->publish != nullptr},
        {"subscribe", d->subscribe != nullptr},
        {"unsubscribe", d->unsubscribe != nullptr},
    };
    for (auto &[fn, present] : mandatory)
        if (!present)
            refuse(ps, "LOAD-8",
                   std::string("mandatory function '") + fn + "' is NULL");
    // LOAD-9
    if (d->min_host_abi_minor > TODD_COMMS_ABI_MINOR)
        refuse(ps, "LOAD-9",
               "needs host ABI minor " + std::to_string(d->min_host_abi_minor) +
                   ", host is " + std::to_string(TODD_COMMS_ABI_MAJOR) + "." +
                   std::to_string(TODD_COMMS_ABI_MINOR));
}

void check_load10(const todd_comms_plugin_descriptor *d,
                  const std::string &name, const std::string &ps)
{
    // LOAD-10
    if (d->name == nullptr)
        refuse(ps, "LOAD-10",
               "descriptor name is NULL, expected '" + name + "'");
    if (name != d->name)
        refuse(ps, "LOAD-10",
               "descriptor name '" + std::string(d->name) +
                   "' does not match the file name ('" + name + "')");
}

/** LOAD-11, and the metadata copied out of the descriptor. */
PluginInfo check_load11(const todd_comms_plugin_descriptor *d,
                        const std::string &ps)
{
    // LOAD-11
    const std::pair<const char *, const char *> strings[] = {
        {"version", d->version},
        {"description", d->description},
        {"license", d->license}};
    for (auto &[field, value] : strings)
        if (value == nullptr)
            refuse(ps, "LOAD-11",
                   std::string("descriptor field '") + field + "' is NULL");
    if (d->config_key_count > 0 && d->config_keys == nullptr)
        refuse(ps, "LOAD-11",
               "config_key_count is " + std::to_string(d->config_key_count) +
                   " but config_keys is NULL");

    PluginInfo info;
    info.name = d->name;
    info.version = d->version;
    info.description = d->description;
    info.license = d->license;
    info.vendor = d->vendor ? d->vendor : "";
    info.path = ps;
    info.abi_major = d->abi_major;
    info.abi_minor = d->abi_minor;
    info.min_host_abi_minor = d->min_host_abi_minor;
    info.capabilities = d->capabilities;
    std::set<std::string> seen;
    for (uint32_t i = 0; i < d->config_key_count; ++i) {
        const todd_comms_config_key &k = d->config_keys[i];
        const std::string at = "config key #" + std::to_string(i);
        if (k.name == nullptr || !valid_key_name(k.name))
            refuse(ps, "LOAD-11",
                   at + ": name " +
                       (k.name ? "'" + std::string(k.name) + "'" : "NULL") +
                       " is not [a-z0-9_]+");
        if (!seen.insert(k.name).second)
            refuse(ps, "LOAD-11",
                   "config key '" + std::string(k.name) + "' declared twice");
        if (!known_type(k.type))
            refuse(ps, "LOAD-11",
                   "config key '" + std::string(k.name) +
                       "' has unknown type " + std::to_string(k.type));
        if (k.default_value != nullptr &&
            !value_parses(k.type, k.default_value))
            refuse(ps, "LOAD-11",
                   "config key '" + std::string(k.name) + "': default '" +
                       k.default_value + "' is not a valid " +
                       config_type_name(k.type));
        ConfigKeyInfo ki;
        ki.name = k.name;
        ki.type = k.type;
        ki.required = (k.flags & TODD_COMMS_CFG_REQUIRED) != 0;
        if (k.default_value != nullptr)
            ki.default_value = k.default_value;
        ki.description = k.description ? k.description : "";
        info.keys.push_back(std::move(ki));
    }
    return info;
}

/** Load and validate one file, rule by rule in the order of
 *  docs/plugin-abi.md. Throws Refused. Caller holds the mutex. */
std::shared_ptr<const Plugin> load_file_locked(const std::string &given_path)
{
    Candidate c;
    check_load1(given_path, c);
    check_load2(c);
    auto &reg = registry();
    if (auto it = reg.by_path.find(c.ps); it != reg.by_path.end())
        return it->second;
    check_load3_elf(c);
    boost::dll::shared_library lib = load3_dlopen(c.ps);
    // Kept even when refused below: its constructors have run, and unloading
    // code of unknown quality buys nothing.
    reg.libraries.push_back(lib);
    const std::string &ps = c.ps;
    const todd_comms_plugin_descriptor *d =
        check_load5(check_load4(lib, ps), ps);
    check_load6_to_9(d, ps);
    check_load10(d, c.name, ps);
    PluginInfo info = check_load11(d, ps);

    auto plugin = std::make_shared<const Plugin>(std::move(info), d);
    reg.by_path.emplace(ps, plugin);
    log::debug(kComponent, "loaded " + ps + " (" + plugin->info().name + " " +
                               plugin->info().version + ", ABI " +
                               std::to_string(d->abi_major) + "." +
                               std::to_string(d->abi_minor) + ", " +
                               capabilities_string(d->capabilities) + ")");
    return plugin;
}

std::shared_ptr<const Plugin> load_file(const std::string &path)
{
    std::lock_guard lock(registry().mutex);
    return load_file_locked(path);
}

/** Plugin candidate files of one directory, sorted by name. */
std::vector<std::pair<std::string, stdfs::path>>
candidates(const std::string &dir)
{
    std::vector<std::pair<std::string, stdfs::path>> out;
    std::error_code ec;
    for (stdfs::directory_iterator it(dir, ec), end; !ec && it != end;
         it.increment(ec)) {
        auto name = candidate_name(it->path().filename().string());
        if (name)
            out.emplace_back(*name, it->path());
    }
    std::sort(out.begin(), out.end());
    return out;
}

bool exists_nofollow(const stdfs::path &p)
{
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0;
}

} // namespace

std::string default_plugin_dir()
{
    return TODD_PLUGINDIR;
}

std::vector<std::string>
plugin_search_path(const std::vector<std::string> &cli_dirs)
{
    std::vector<std::string> out;
    auto add = [&](const std::string &d) {
        if (!d.empty() && std::find(out.begin(), out.end(), d) == out.end())
            out.push_back(d);
    };
    for (const auto &d : cli_dirs)
        add(d);
    // secure_getenv already returns NULL in AT_SECURE processes; the explicit
    // id check also covers a process that changed ids after exec.
    const bool privileged = getuid() != geteuid() || getgid() != getegid();
    if (const char *env = secure_getenv("TODD_COMMS_PLUGIN_PATH");
        env && !privileged) {
        std::string_view s = env;
        while (true) {
            auto colon = s.find(':');
            add(std::string(s.substr(0, colon)));
            if (colon == std::string_view::npos)
                break;
            s.remove_prefix(colon + 1);
        }
    }
    add(default_plugin_dir());
    return out;
}

std::string capabilities_string(uint64_t caps)
{
    static const std::pair<uint64_t, const char *> names[] = {
        {TODD_COMMS_CAP_ACK, "ack"},
        {TODD_COMMS_CAP_TTL, "ttl"},
        {TODD_COMMS_CAP_CONFIRMS, "confirms"},
        {TODD_COMMS_CAP_DURABLE, "durable"},
        {TODD_COMMS_CAP_REMOTE, "remote"},
        {TODD_COMMS_CAP_TLS, "tls"},
        {TODD_COMMS_CAP_BATCH, "batch"},
    };
    std::string out;
    for (auto &[bit, n] : names) {
        if (caps & bit) {
            out += (out.empty() ? "" : ",");
            out += n;
            caps &= ~bit;
        }
    }
    if (caps != 0) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "0x%llx",
                      static_cast<unsigned long long>(caps));
        out += (out.empty() ? "" : ",");
        out += buf;
    }
    return out.empty() ? "none" : out;
}

std::string config_type_name(uint32_t type)
{
    switch (type) {
    case TODD_COMMS_CFG_STRING: return "string";
    case TODD_COMMS_CFG_INT: return "int";
    case TODD_COMMS_CFG_BOOL: return "bool";
    case TODD_COMMS_CFG_LIST: return "list";
    case TODD_COMMS_CFG_SECRET: return "secret";
    default: return "unknown(" + std::to_string(type) + ")";
    }
}

PluginRegistry::PluginRegistry(std::vector<std::string> search_path)
    : path_(std::move(search_path))
{
}

ScanResult PluginRegistry::scan()
{
    ScanResult result;
    std::set<std::string>
        names; // first file per name wins, later ones are shadowed
    for (const auto &dir : path_) {
        for (const auto &[name, file] : candidates(dir)) {
            if (!names.insert(name).second)
                continue;
            try {
                result.plugins.push_back(load_file(file.string())->info());
            } catch (const Refused &r) {
                result.refused.push_back(r.r);
            } catch (const std::exception &e) {
                result.refused.push_back(
                    {file.string(), "LOAD-3",
                     file.string() + ": refused (LOAD-3): " + e.what()});
            }
        }
    }
    return result;
}

std::shared_ptr<const Plugin>
PluginRegistry::load(const std::string &name_or_path)
{
    try {
        if (name_or_path.find('/') != std::string::npos)
            return load_file(name_or_path);
        if (!valid_plugin_name(name_or_path))
            throw PluginError(
                "invalid plugin name '" + name_or_path +
                "': expected [a-z0-9_-]+ (or a path containing '/')");
        const std::string filename = kPrefix + name_or_path + kSuffix;
        for (const auto &dir : path_) {
            stdfs::path p = stdfs::path(dir) / filename;
            if (exists_nofollow(p))
                return load_file(p.string());
        }
        std::string dirs;
        for (const auto &d : path_)
            dirs += (dirs.empty() ? "" : ", ") + d;
        throw PluginError(
            "no plugin named '" + name_or_path + "' (" + filename +
            ") in the search path: " + (dirs.empty() ? "(empty)" : dirs));
    } catch (const Refused &r) {
        throw PluginError(r.r.message);
    } catch (const PluginError &) {
        throw;
    } catch (const std::exception &e) {
        throw PluginError(name_or_path + ": " + e.what());
    }
}

} // namespace todd::core
