// SPDX-License-Identifier: Apache-2.0
// The registry: adverts, expiry, assets an agent lacks, and groups.
#include "server_impl.hpp"

namespace todd::server {

std::vector<std::string> Server::Impl::missing_assets(const msg::AgentAdvert &a)
{
    AssetMap m = assets->current();
    std::vector<std::string> urls;
    auto check = [&](const msg::Hashes &server, const msg::Hashes &agent,
                     const char *type) {
        for (const auto &[name, hash] : server) {
            auto it = agent.find(name);
            if (it == agent.end() || it->second != hash)
                urls.push_back("http://" + url_host + ":" +
                               std::to_string(asset_http->port()) + "/" + type +
                               "/" + name);
        }
    };
    check(m.factcollectors, a.fact_collectors, "factcollectors");
    check(m.testlets, a.testlets, "testlets");
    return urls;
}

void Server::Impl::on_advert(msg::AgentAdvert a)
{
    if (a.uuid.empty() || a.uuid.find('/') != std::string::npos) {
        log::warn(C, "advert with an invalid Uuid \"" + a.uuid + "\" ignored");
        metrics.advert("invalid");
        return;
    }
    auto urls = missing_assets(a);
    if (!urls.empty() &&
        steady::now() - last_rescan > std::chrono::seconds(1)) {
        // The map may be stale if inotify missed something.
        last_rescan = steady::now();
        assets->rescan();
        urls = missing_assets(a);
    }
    if (!urls.empty()) {
        metrics.advert("assets_missing");
        auto now = steady::now();
        auto it = downloads.find(a.uuid);
        if (it != downloads.end() && now - it->second < cfg.download_retry) {
            log::debug(C, "agent " + a.uuid +
                              " still lacks assets; download pending");
            return;
        }
        downloads[a.uuid] = now;
        log::info(C, "agent " + a.uuid + " lacks " +
                         std::to_string(urls.size()) +
                         " asset(s); sending DownloadAsset");
        sender->push(a.uuid, msg::DownloadAssetTask{urls});
        return;
    }
    downloads.erase(a.uuid);
    metrics.advert("accepted");
    std::vector<std::string> dropped;
    if (a.facts)
        dropped = drop_long_facts(*a.facts, max_fact_bytes);
    auto [it, inserted] = agents.try_emplace(a.uuid);
    Agent &ag = it->second;
    bool facts_changed = inserted || ag.advert.facts != a.facts;
    if (facts_changed) // once, not on every advert
        for (const auto &d : dropped)
            log::warn(C, "agent " + a.uuid + ": " + d);
    ag.advert = std::move(a);
    ag.advert.expires_ns = 0;
    ag.deadline = steady::now() + cfg.agent_expiry;
    if (!ag.timer)
        ag.timer = std::make_unique<asio::steady_timer>(ioc);
    ag.timer->expires_at(ag.deadline);
    std::string id = it->first;
    ag.timer->async_wait([this, id](boost::system::error_code ec) {
        if (!ec)
            expire_agent(id);
    });
    if (inserted) {
        metrics.agent_registered();
        log::info(C, "agent " + id + " registered (" + ag.advert.default_addr +
                         ")");
        if (obs.on_agent)
            obs.on_agent(id, true);
    }
    if (facts_changed)
        recompute_groups();
}

void Server::Impl::expire_agent(const std::string &id)
{
    auto it = agents.find(id);
    if (it == agents.end() || steady::now() < it->second.deadline)
        return;
    agents.erase(it);
    metrics.agent_expired();
    log::warn(C, "agent " + id + " expired: no advert for " +
                     std::to_string(cfg.agent_expiry.count()) + " ms");
    if (obs.on_agent)
        obs.on_agent(id, false);
    for (auto &[uuid, run] : runs) {
        if (run->phase == Run::Phase::done)
            continue;
        auto p = run->parts.find(id);
        if (p != run->parts.end() && !p->second.failed &&
            p->second.status != msg::status_finished) {
            fail_part(*run, id,
                      "agent vanished (no advert for " +
                          std::to_string(cfg.agent_expiry.count()) + " ms)");
            advance(run);
        }
    }
    recompute_groups();
}

void Server::Impl::reload_groups()
{
    groups.clear();
    for (const auto &o : store->list_objects("group")) {
        try {
            groups.push_back(parse_group(o.json));
        } catch (const std::exception &e) {
            log::error(C, "group " + o.label + " skipped: " + e.what());
        }
    }
}

void Server::Impl::recompute_groups()
{
    static const msg::Facts no_facts;
    for (auto &[id, ag] : agents) {
        const msg::Facts &facts = ag.advert.facts ? *ag.advert.facts : no_facts;
        std::string g;
        for (const auto &grp : groups)
            if (grp.matches_agent(facts)) {
                g = grp.label;
                break;
            }
        ag.group = g;
        if (g != ag.sent_group) {
            ag.sent_group = g;
            log::info(C, "agent " + id + " -> group \"" + g + "\"");
            sender->push(id, msg::SetGroupTask{g, false});
            if (obs.on_group)
                obs.on_group(id, g);
        }
    }
}

} // namespace todd::server
