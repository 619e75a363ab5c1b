// SPDX-License-Identifier: Apache-2.0
#include <todd/service/metrics.hpp>

#include <prometheus/text_serializer.h>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace todd::service {

using prometheus::MetricType;

MetricFamily family(std::string name, std::string help, MetricType type)
{
    MetricFamily f;
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
    return f;
}

void sample(MetricFamily &f,
            std::vector<std::pair<std::string, std::string>> labels,
            double value, int64_t timestamp_ms)
{
    prometheus::ClientMetric m;
    for (auto &[k, v] : labels)
        m.label.push_back({std::move(k), std::move(v)});
    if (f.type == MetricType::Counter)
        m.counter.value = value;
    else if (f.type == MetricType::Gauge)
        m.gauge.value = value;
    else
        m.untyped.value = value;
    m.timestamp_ms = timestamp_ms;
    f.metric.push_back(std::move(m));
}

namespace {

/** Fields 14 (utime), 15 (stime), 22 (starttime), 23 (vsize) and 24 (rss)
 *  of /proc/self/stat; false when it cannot be read. */
bool read_stat(double out[5])
{
    std::ifstream in("/proc/self/stat");
    std::string line;
    if (!std::getline(in, line))
        return false;
    // The command name may hold spaces and parentheses: skip to the last ')'.
    auto close = line.rfind(')');
    if (close == std::string::npos)
        return false;
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    const int want[5] = {14, 15, 22, 23, 24};
    int got = 0;
    for (int n = 3; got < 5 && rest >> field; ++n)
        if (n == want[got])
            out[got++] = std::strtod(field.c_str(), nullptr);
    return got == 5;
}

double boot_time()
{
    std::ifstream in("/proc/stat");
    for (std::string key; in >> key;) {
        if (key == "btime") {
            double t = 0;
            in >> t;
            return t;
        }
        in.ignore(1 << 20, '\n');
    }
    return 0;
}

double open_fds()
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    double n = 0;
    while (const dirent *e = readdir(d))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; // the directory's own descriptor
}

} // namespace

std::vector<MetricFamily> process_families()
{
    std::vector<MetricFamily> out;
    double st[5];
    if (read_stat(st)) {
        const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
        const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
        auto cpu = family("process_cpu_seconds_total",
                          "User and system CPU time spent in seconds.",
                          MetricType::Counter);
        sample(cpu, {}, (st[0] + st[1]) / tick);
        out.push_back(std::move(cpu));
        auto start =
            family("process_start_time_seconds",
                   "Start time of the process since unix epoch in seconds.",
                   MetricType::Gauge);
        sample(start, {}, boot_time() + st[2] / tick);
        out.push_back(std::move(start));
        auto vsz = family("process_virtual_memory_bytes",
                          "Virtual memory size in bytes.", MetricType::Gauge);
        sample(vsz, {}, st[3]);
        out.push_back(std::move(vsz));
        auto rss = family("process_resident_memory_bytes",
                          "Resident memory size in bytes.", MetricType::Gauge);
        sample(rss, {}, st[4] * page);
        out.push_back(std::move(rss));
    }
    auto fds = family("process_open_fds", "Number of open file descriptors.",
                      MetricType::Gauge);
    sample(fds, {}, open_fds());
    out.push_back(std::move(fds));
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        auto max = family("process_max_fds",
                          "Maximum number of open file descriptors.",
                          MetricType::Gauge);
        sample(max, {},
               rl.rlim_cur == RLIM_INFINITY ? 1e18
                                            : static_cast<double>(rl.rlim_cur));
        out.push_back(std::move(max));
    }
    return out;
}

std::vector<MetricFamily> comms_families(core::Comms &comms)
{
    const core::Transport &t = comms.transport();
    const core::TransportCounters c = t.counters();
    const std::string name = t.plugin().name;
    std::vector<MetricFamily> out;
    auto counter = [&](const char *metric, const char *help, uint64_t v) {
        auto f = family(metric, help, MetricType::Counter);
        sample(f, {{"transport", name}}, static_cast<double>(v));
        out.push_back(std::move(f));
    };
    counter("todd_comms_published_total",
            "Messages the transport accepted for publishing.", c.published);
    counter("todd_comms_publish_failures_total",
            "Publishes the transport refused or failed.", c.publish_failed);
    counter("todd_comms_deliveries_total",
            "Messages the transport delivered to a handler.", c.delivered);
    counter("todd_comms_redelivered_total",
            "Deliveries the transport flagged as redelivered.", c.redelivered);
    auto verdicts = family("todd_comms_verdicts_total",
                           "Deliveries settled, by the handler's verdict.",
                           MetricType::Counter);
    for (auto [v, n] :
         {std::pair{"ack", c.acked}, std::pair{"requeue", c.requeued},
          std::pair{"reject", c.rejected}})
        sample(verdicts, {{"transport", name}, {"verdict", v}},
               static_cast<double>(n));
    out.push_back(std::move(verdicts));
    auto refused =
        family("todd_messages_refused_total",
               "Deliveries refused before reaching ToDD's logic, by reason.",
               MetricType::Counter);
    sample(refused, {{"transport", name}, {"reason", "undecodable"}},
           static_cast<double>(comms.undecodable_rejected()));
    sample(refused, {{"transport", name}, {"reason", "oversized"}},
           static_cast<double>(comms.oversized_rejected()));
    out.push_back(std::move(refused));
    counter("todd_comms_reconnects_total",
            "Times the link came back after being connected once.",
            c.connects > 0 ? c.connects - 1 : 0);
    counter("todd_comms_disconnects_total",
            "Times the link left the connected state.", c.disconnects);
    auto up = family("todd_comms_connected",
                     "1 while the transport reports its link connected.",
                     MetricType::Gauge);
    sample(up, {{"transport", name}},
           t.state() == core::LinkState::connected ? 1 : 0);
    out.push_back(std::move(up));
    return out;
}

std::string
exposition(const std::vector<std::shared_ptr<prometheus::Collectable>> &from)
{
    std::vector<MetricFamily> all;
    for (const auto &c : from) {
        auto fs = c->Collect();
        std::move(fs.begin(), fs.end(), std::back_inserter(all));
    }
    return prometheus::TextSerializer().Serialize(all);
}

http::Response metrics_reply(const http::Request &req, std::string text)
{
    auto res = http::ok(req, std::move(text));
    res.set(http::bhttp::field::content_type,
            "text/plain; version=0.0.4; charset=utf-8");
    res.set(http::bhttp::field::cache_control, "no-store");
    return res;
}

http::Response health_reply(const http::Request &req,
                            const std::vector<Check> &checks)
{
    bool ok = true;
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    w.StartObject();
    w.Key("checks");
    w.StartObject();
    for (const auto &c : checks) {
        ok = ok && c.ok;
        w.Key(c.name.c_str(), static_cast<rapidjson::SizeType>(c.name.size()));
        w.StartObject();
        w.Key("ok");
        w.Bool(c.ok);
        w.Key("detail");
        w.String(c.detail.c_str(),
                 static_cast<rapidjson::SizeType>(c.detail.size()));
        w.EndObject();
    }
    w.EndObject();
    w.Key("status");
    w.String(ok ? "ok" : "unavailable");
    w.EndObject();
    auto res =
        http::ok(req, std::string(buf.GetString(), buf.GetSize()) + "\n");
    res.result(ok ? http::bhttp::status::ok
                  : http::bhttp::status::service_unavailable);
    res.set(http::bhttp::field::content_type, "application/json");
    res.set(http::bhttp::field::cache_control, "no-store");
    return res;
}

} // namespace todd::service
