// SPDX-License-Identifier: Apache-2.0
// gcfg-style INI files (the format of ToDD's server.cfg and agent.cfg) and
// the options every program shares to choose and configure a transport.
// docs/configuration.md describes both.
#include <todd/core/config.hpp>

#include <todd_build_config.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

namespace po = boost::program_options;

namespace todd::core {
namespace {

std::string lower(std::string s)
{
    for (char &c : s)
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
    return s;
}

bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}
bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

std::string trim(std::string_view s)
{
    size_t b = 0, e = s.size();
    while (b < e && is_space(s[b]))
        ++b;
    while (e > b && is_space(s[e - 1]))
        --e;
    return std::string(s.substr(b, e - b));
}

/** Reads one file's lines and reports errors as "path:line: reason". */
class IniParser {
  public:
    IniParser(const std::string &text, const std::string &path) : path_(path)
    {
        std::string_view t(text);
        if (t.substr(0, 3) == "\xEF\xBB\xBF") // a UTF-8 byte order mark
            t.remove_prefix(3);
        size_t start = 0;
        while (start <= t.size()) {
            size_t nl = t.find('\n', start);
            if (nl == std::string_view::npos)
                nl = t.size();
            std::string_view line = t.substr(start, nl - start);
            if (!line.empty() && line.back() == '\r') // CRLF files
                line.remove_suffix(1);
            lines_.push_back(line);
            start = nl + 1;
        }
    }

    IniFile parse()
    {
        IniFile ini;
        ini.path = path_;
        std::string section;
        bool have_section = false;
        for (idx_ = 0; idx_ < lines_.size(); ++idx_) {
            const int lineno = static_cast<int>(idx_) + 1;
            line_ = lines_[idx_];
            pos_ = 0;
            skip_space();
            if (at_end() || peek() == ';' || peek() == '#')
                continue;
            if (peek() == '[') {
                section = parse_section_header();
                have_section = true;
                ini.sections[section]; // an empty section still exists
                continue;
            }
            std::string key = parse_name();
            if (!have_section)
                fail("key \"" + key + "\" appears before any [section]");
            skip_space();
            std::string value;
            if (at_end() || peek() == ';' || peek() == '#') {
                value = "true"; // gcfg: a bare name is a true boolean
            } else if (peek() == '=') {
                ++pos_;
                value = parse_value();
            } else {
                fail("expected '=' after key \"" + key + "\"");
            }
            key = lower(key);
            ini.sections[section][key] = value;
            ini.lines[section][key] = lineno;
        }
        return ini;
    }

  private:
    [[noreturn]] void fail(const std::string &why)
    {
        throw ConfigError(path_ + ":" + std::to_string(idx_ + 1) + ": " + why);
    }
    bool at_end() const { return pos_ >= line_.size(); }
    char peek() const { return line_[pos_]; }
    void skip_space()
    {
        while (!at_end() && is_space(peek()))
            ++pos_;
    }
    void expect_line_end(const char *after)
    {
        skip_space();
        if (!at_end() && peek() != ';' && peek() != '#')
            fail(std::string("unexpected text after ") + after);
    }

    // [name] or [name "subsection"]
    std::string parse_section_header()
    {
        ++pos_; // '['
        skip_space();
        std::string name;
        while (!at_end() && (is_alpha(peek()) || is_digit(peek()) ||
                             peek() == '-' || peek() == '.' || peek() == '_'))
            name += line_[pos_++];
        if (name.empty())
            fail("missing or invalid section name");
        skip_space();
        if (!at_end() && peek() == '"') {
            ++pos_;
            std::string sub;
            for (;;) {
                if (at_end())
                    fail("unterminated subsection name");
                char c = line_[pos_++];
                if (c == '"')
                    break;
                if (c == '\\') {
                    if (at_end())
                        fail("unterminated subsection name");
                    c = line_[pos_++];
                    if (c != '"' && c != '\\')
                        fail(std::string("invalid escape \\") + c +
                             " in subsection name");
                }
                sub += c;
            }
            name += "." + sub;
            skip_space();
        }
        if (at_end() || peek() != ']')
            fail("expected ']' to close the section header");
        ++pos_;
        expect_line_end("the section header");
        return lower(name);
    }

    std::string parse_name()
    {
        std::string name;
        if (!is_alpha(peek()))
            fail(std::string("invalid key name starting with '") + peek() +
                 "' (keys start with a letter)");
        while (!at_end() && (is_alpha(peek()) || is_digit(peek()) ||
                             peek() == '-' || peek() == '_'))
            name += line_[pos_++];
        return name;
    }

    // Quotes may open and close anywhere; ; and # outside quotes start a
    // comment; unquoted space at the ends is dropped; a backslash at the end
    // of a line continues the value on the next one.
    std::string parse_value()
    {
        skip_space();
        std::string v;
        size_t keep = 0; // v's length up to its last significant character
        bool quoted = false;
        for (;;) {
            if (at_end()) {
                if (quoted)
                    fail("unterminated quoted value");
                break;
            }
            const char c = line_[pos_++];
            if (c == '"') {
                quoted = !quoted;
                keep = v.size();
            } else if (c == '\\') {
                if (at_end()) { // continuation
                    if (idx_ + 1 >= lines_.size())
                        fail("backslash at the end of the file");
                    line_ = lines_[++idx_];
                    pos_ = 0;
                    continue;
                }
                const char e = line_[pos_++];
                switch (e) {
                case '\\': v += '\\'; break;
                case '"': v += '"'; break;
                case 'n': v += '\n'; break;
                case 't': v += '\t'; break;
                case 'b': v += '\b'; break;
                default:
                    fail(std::string("invalid escape \\") + e +
                         " (valid: \\\\ \\\" \\n \\t \\b)");
                }
                keep = v.size();
            } else if (!quoted && (c == ';' || c == '#')) {
                break;
            } else {
                v += c;
                if (quoted || !is_space(c))
                    keep = v.size();
            }
        }
        v.resize(keep);
        return v;
    }

    std::string path_;
    std::vector<std::string_view> lines_;
    size_t idx_ = 0;
    std::string_view line_;
    size_t pos_ = 0;
};

} // namespace

bool IniFile::has(const std::string &section, const std::string &key) const
{
    auto s = sections.find(lower(section));
    return s != sections.end() && s->second.count(lower(key)) != 0;
}

std::string IniFile::get(const std::string &section, const std::string &key,
                         const std::string &fallback) const
{
    auto s = sections.find(lower(section));
    if (s == sections.end())
        return fallback;
    auto k = s->second.find(lower(key));
    return k == s->second.end() ? fallback : k->second;
}

std::string IniFile::where(const std::string &section,
                           const std::string &key) const
{
    if (auto s = lines.find(section); s != lines.end())
        if (auto k = s->second.find(key); k != s->second.end())
            return path + ":" + std::to_string(k->second);
    return path;
}

std::string IniFile::where(const std::string &section) const
{
    auto s = lines.find(section);
    if (s == lines.end() || s->second.empty())
        return path;
    int first = s->second.begin()->second;
    for (const auto &kv : s->second)
        first = std::min(first, kv.second);
    return path + ":" + std::to_string(first);
}

IniFile parse_ini(const std::string &text, const std::string &path)
{
    return IniParser(text, path).parse();
}

IniFile parse_ini_file(const std::string &path)
{
    std::FILE *f = std::fopen(path.c_str(), "rb");
    if (!f)
        throw ConfigError(path + ": cannot open: " + std::strerror(errno));
    std::string text;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        text.append(buf, n);
        if (text.size() > (16u << 20)) {
            std::fclose(f);
            throw ConfigError(path + ": larger than 16 MiB: not a config file");
        }
    }
    const int err = std::ferror(f) ? errno : 0;
    std::fclose(f);
    if (err)
        throw ConfigError(path + ": cannot read: " + std::strerror(err));
    return parse_ini(text, path);
}

std::string default_comms_plugin()
{
    return TODD_DEFAULT_COMMS;
}

void add_comms_options(po::options_description &desc)
{
    desc.add_options()(
        "comms", po::value<std::string>()->value_name("NAME"),
        ("transport plugin to use (default: [Comms] Plugin of the config "
         "file, else " +
         default_comms_plugin() + ")")
            .c_str())(
        "plugin-dir",
        po::value<std::vector<std::string>>()->composing()->value_name("DIR"),
        "look for libtodd-comms-<name>.so in DIR first (repeatable)")(
        "config", po::value<std::string>()->value_name("FILE"),
        "INI configuration file (gcfg format, as ToDD's server.cfg/agent.cfg)")(
        "comms-opt",
        po::value<std::vector<std::string>>()->composing()->value_name(
            "KEY=VALUE"),
        "set a transport option, overriding [Comms] KEY of the config file "
        "(repeatable)");
}

CommsSelection resolve_comms(const po::variables_map &vm, const IniFile *config)
{
    CommsSelection sel;
    if (vm.count("plugin-dir"))
        sel.plugin_dirs = vm["plugin-dir"].as<std::vector<std::string>>();
    if (vm.count("config"))
        sel.config_path = vm["config"].as<std::string>();
    else if (config)
        sel.config_path = config->path;

    if (vm.count("comms") && !trim(vm["comms"].as<std::string>()).empty())
        sel.plugin_name = trim(vm["comms"].as<std::string>());
    else if (config && !trim(config->get("comms", "plugin")).empty())
        sel.plugin_name = trim(config->get("comms", "plugin"));
    else
        sel.plugin_name = default_comms_plugin();

    if (config) {
        auto s = config->sections.find("comms");
        if (s != config->sections.end())
            for (const auto &[k, v] : s->second)
                if (k != "plugin")
                    sel.options[k] = v;
    }
    if (vm.count("comms-opt")) {
        for (const auto &kv : vm["comms-opt"].as<std::vector<std::string>>()) {
            const auto eq = kv.find('=');
            const std::string key =
                eq == std::string::npos ? "" : lower(trim(kv.substr(0, eq)));
            if (key.empty())
                throw ConfigError("--comms-opt \"" + kv +
                                  "\": expected KEY=VALUE");
            sel.options[key] = kv.substr(eq + 1);
        }
    }
    // Keys of the Comms facade, not of the plugin.
    for (auto [key, bound] :
         {std::pair{"max_message_bytes", &sel.limits.max_message_bytes},
          std::pair{"max_response_bytes", &sel.limits.max_response_bytes}}) {
        auto it = sel.options.find(key);
        if (it == sel.options.end())
            continue;
        const std::string v = trim(it->second);
        errno = 0;
        char *end = nullptr;
        const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
        if (v.empty() || v[0] == '-' || *end != '\0' || errno != 0 || n == 0)
            throw ConfigError(std::string("[Comms] ") + key + " \"" + v +
                              "\": expected a positive number of bytes");
        *bound = static_cast<size_t>(n);
        sel.options.erase(it);
    }
    return sel;
}

std::unique_ptr<Transport> open_transport(const CommsSelection &sel)
{
    PluginRegistry registry(plugin_search_path(sel.plugin_dirs));
    std::shared_ptr<const Plugin> plugin = registry.load(sel.plugin_name);
    const PluginInfo &info = plugin->info();

    Options opts = sel.options;
    std::set<std::string> known;
    for (const auto &k : info.keys)
        known.insert(k.name);
    // Name where an unknown key came from: the user has two places to look.
    for (const auto &[k, v] : opts) {
        if (known.count(k))
            continue;
        std::string list;
        for (const auto &n : known)
            list += (list.empty() ? "" : ", ") + n;
        throw ConfigError(
            "unknown option \"" + k + "\" for comms plugin \"" + info.name +
            "\" (set by --comms-opt" +
            (sel.config_path.empty() ? std::string()
                                     : " or [Comms] in " + sel.config_path) +
            "); its keys are: " + (list.empty() ? "(none)" : list));
    }
    fill_in_role(info, opts, sel.role);
    return Transport::create(plugin, opts);
}

bool declares_key(const PluginInfo &info, const std::string &key)
{
    return std::any_of(info.keys.begin(), info.keys.end(),
                       [&](const ConfigKeyInfo &k) { return k.name == key; });
}

bool fill_in_role(const PluginInfo &info, Options &opts,
                  const std::string &role)
{
    if (role.empty() || opts.count("role") || !declares_key(info, "role"))
        return false;
    opts["role"] = role;
    return true;
}

std::string describe_keys(const PluginInfo &info)
{
    if (info.keys.empty())
        return "  (no configuration keys)\n";
    size_t name_w = 0, type_w = 0, def_w = 0;
    std::vector<std::string> types, defs;
    for (const auto &k : info.keys) {
        types.push_back(config_type_name(k.type));
        std::string d;
        if (k.required)
            d = "required";
        else if (!k.default_value)
            d = "optional";
        else if (k.type == TODD_COMMS_CFG_SECRET)
            d = "default: (hidden)";
        else if (k.default_value->empty())
            d = "default: \"\"";
        else
            d = "default: " + *k.default_value;
        defs.push_back(d);
        name_w = std::max(name_w, k.name.size());
        type_w = std::max(type_w, types.back().size());
        def_w = std::max(def_w, d.size());
    }
    std::ostringstream out;
    for (size_t i = 0; i < info.keys.size(); ++i) {
        const auto &k = info.keys[i];
        const auto pad = [](const std::string &s, size_t w) {
            return s + std::string(w - s.size(), ' ');
        };
        out << "  " << pad(k.name, name_w) << "  " << pad(types[i], type_w)
            << "  " << pad(defs[i], def_w) << "  " << k.description << "\n";
    }
    return out.str();
}

} // namespace todd::core
