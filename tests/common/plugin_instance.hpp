// SPDX-License-Identifier: Apache-2.0
// Small pieces every broker-backed transport test needs: an instance of a
// loaded plugin, options with overrides, and names no other test uses.
#pragma once

#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

namespace todd::test {

/** A created instance of plugin p with options o, started unless told
 *  otherwise. Throws core::CommsError as Transport::create does. */
inline std::unique_ptr<core::Transport>
make_instance(std::shared_ptr<const core::Plugin> p, const core::Options &o,
              bool start = true)
{
    auto t = core::Transport::create(std::move(p), o);
    if (start)
        t->start();
    return t;
}

/** o with each key of extra set to extra's value. */
inline core::Options with(core::Options o, const core::Options &extra)
{
    for (const auto &kv : extra)
        o[kv.first] = kv.second;
    return o;
}

/** base-<pid>-<n>: a destination name no other test uses, in this process
 *  or another one at the same time. */
inline std::string unique_name(const std::string &base)
{
    static std::atomic<int> n{0};
    return base + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

/** One publish_batch to destination of "task-<id>" for each id. Returns
 *  the ids whose publish did not return OK (all of them when the call
 *  threw), to be sent again as the Comms facade does; the others are
 *  appended to *ok. */
inline std::vector<int> publish_tasks(core::Transport &t,
                                      const std::string &destination,
                                      const std::vector<int> &ids,
                                      std::vector<int> *ok)
{
    std::vector<std::pair<std::string, std::string>> msgs;
    for (int id : ids)
        msgs.emplace_back(destination, "task-" + std::to_string(id));
    std::vector<int32_t> st;
    try {
        st = t.publish_batch(msgs);
    } catch (const core::CommsError &) {
        st.assign(ids.size(), TODD_COMMS_E_UNAVAILABLE);
    }
    std::vector<int> again;
    for (size_t i = 0; i < ids.size(); ++i)
        (st[i] == TODD_COMMS_OK ? *ok : again).push_back(ids[i]);
    return again;
}

} // namespace todd::test
