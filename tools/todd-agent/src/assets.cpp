// SPDX-License-Identifier: Apache-2.0
#include <todd/agent/assets.hpp>
#include <todd/core/hash.hpp>
#include <todd/core/json_limits.hpp>
#include <todd/core/log.hpp>

#include <filesystem>
#include <system_error>

namespace fs = std::filesystem;

namespace todd::agent {

namespace {
constexpr const char *log_component = "agent.assets";
} // namespace

bool is_download_temp(const std::string &name)
{
    return name.rfind(download_temp_prefix, 0) == 0;
}

msg::Hashes asset_hashes(const std::string &dir)
{
    core::HashDirOptions o;
    o.recursive = true;
    o.skip = is_download_temp;
    core::DirHashes r = core::hash_directory(dir, o);
    for (const auto &p : r.problems)
        log::warn(log_component, p);
    return std::move(r.hashes);
}

std::map<std::string, std::string>
fact_collector_paths(const std::string &builtin_dir,
                     const std::string &downloaded_dir)
{
    std::map<std::string, std::string> out;
    for (const auto &dir : {builtin_dir, downloaded_dir}) {
        if (dir.empty())
            continue;
        std::error_code ec;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
             it.increment(ec)) {
            std::error_code ec2;
            if (it->is_regular_file(ec2) &&
                !is_download_temp(it->path().filename().string()))
                out[it->path().filename().string()] = it->path().string();
        }
    }
    return out;
}

msg::Facts collect_facts(const std::map<std::string, std::string> &collectors,
                         std::chrono::milliseconds timeout,
                         ProcessGroups *groups)
{
    msg::Facts facts;
    for (const auto &[name, path] : collectors) {
        ProcessSpec spec;
        spec.argv = {path};
        spec.timeout = timeout;
        spec.log_component = "factcollector:" + name;
        spec.groups = groups;
        ProcessResult r = run_process(spec);
        if (!r.exited_ok()) {
            log::warn(log_component, "fact collector " + path + " failed (" +
                                         r.describe() +
                                         "); its facts are skipped");
            continue;
        }
        rapidjson::Document d;
        json::ParseOptions o;
        o.validate_utf8 = true;
        std::string why;
        if (auto err = json::parse(d, r.out, o))
            why = (err->too_deep ? "refused: " : "not JSON: ") + err->reason;
        else if (!d.IsObject() || d.MemberCount() != 1)
            why = "not an object with exactly one key";
        else if (!d.MemberBegin()->value.IsArray())
            why = "the value is not an array";
        std::vector<std::string> values;
        if (why.empty()) {
            for (const auto &v : d.MemberBegin()->value.GetArray()) {
                if (!v.IsString()) {
                    why = "the array holds a non-string";
                    break;
                }
                values.emplace_back(v.GetString(), v.GetStringLength());
            }
        }
        if (!why.empty()) {
            log::warn(log_component, "fact collector " + path +
                                         " printed bad output (" + why +
                                         "); its facts are skipped");
            continue;
        }
        facts[std::string(d.MemberBegin()->name.GetString(),
                          d.MemberBegin()->name.GetStringLength())] =
            std::move(values);
    }
    return facts;
}

} // namespace todd::agent
