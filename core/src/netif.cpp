// SPDX-License-Identifier: Apache-2.0
#include <todd/core/netif.hpp>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <cerrno>
#include <fstream>
#include <memory>
#include <sstream>
#include <system_error>

namespace todd::core {

std::optional<std::string> interface_ipv4(const std::string &ifname)
{
    ifaddrs *list = nullptr;
    if (::getifaddrs(&list) != 0)
        throw std::system_error(errno, std::generic_category(), "getifaddrs");
    std::unique_ptr<ifaddrs, decltype(&::freeifaddrs)> owned(list,
                                                             &::freeifaddrs);
    for (ifaddrs *a = list; a != nullptr; a = a->ifa_next) {
        if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET ||
            ifname != a->ifa_name)
            continue;
        char buf[INET_ADDRSTRLEN];
        auto *sin = reinterpret_cast<sockaddr_in *>(a->ifa_addr);
        if (::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf))
            return std::string(buf);
    }
    return std::nullopt;
}

std::optional<std::string> default_route_interface()
{
    const char *table = "/proc/net/route";
    std::ifstream in(table);
    if (!in)
        throw std::system_error(errno, std::generic_category(),
                                std::string("cannot read ") + table);
    std::string line;
    std::getline(in, line); // header
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string iface, dest, gw, flags, refcnt, use, metric, mask;
        if (!(ls >> iface >> dest >> gw >> flags >> refcnt >> use >> metric >>
              mask))
            continue;
        if (dest == "00000000" && mask == "00000000")
            return iface;
    }
    return std::nullopt;
}

} // namespace todd::core
