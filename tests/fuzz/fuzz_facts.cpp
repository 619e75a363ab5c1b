// SPDX-License-Identifier: Apache-2.0
// Fact-collector output as todd-agent reads it (collect_facts in
// tools/todd-agent/src/assets.cpp): the input is what a real collector
// process prints. Output that is not {"Name": ["v", ...]} is skipped with one
// warning naming the collector; what is accepted is one fact of strings.
#include "fuzz_common.hpp"

#include <todd/agent/assets.hpp>
#include <todd/core/log.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

using todd::fuzz::check;

namespace {

struct Collector {
    std::string dir, input, script;
    Collector()
    {
        char tmpl[] = "/tmp/todd-fuzz-facts-XXXXXX";
        check(::mkdtemp(tmpl) != nullptr, "mkdtemp failed");
        dir = tmpl;
        input = dir + "/output";
        script = dir + "/collector";
        const std::string body = "#!/bin/sh\nexec cat '" + input + "'\n";
        int fd = ::open(script.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0700);
        check(fd >= 0 && ::write(fd, body.data(), body.size()) ==
                             static_cast<ssize_t>(body.size()),
              "cannot write the collector script");
        ::close(fd);
    }
    ~Collector()
    {
        ::unlink(input.c_str());
        ::unlink(script.c_str());
        ::rmdir(dir.c_str());
    }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static Collector c;
    static int warnings = 0;
    static bool sink = [] {
        todd::log::set_sink(
            [](todd::log::Level l, std::string_view, std::string_view) {
                warnings += l <= todd::log::Level::warn;
            });
        return true;
    }();
    (void)sink;
    int fd = ::open(c.input.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    check(fd >= 0 && ::write(fd, data, size) == static_cast<ssize_t>(size),
          "cannot write the collector's output");
    ::close(fd);
    warnings = 0;
    const todd::msg::Facts facts = todd::agent::collect_facts(
        {{"fuzz", c.script}}, std::chrono::milliseconds(10000), nullptr);
    check(facts.size() <= 1, "one collector gave several facts");
    check(facts.empty() == (warnings == 1),
          "a refused output is not logged once, or an accepted one is");
    return 0;
}
