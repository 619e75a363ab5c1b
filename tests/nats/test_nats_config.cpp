// SPDX-License-Identifier: Apache-2.0
// The NATS plugin refuses a configuration it cannot use in create, with
// E_CONFIG naming the key, before anything connects (no server is needed:
// the servers name a port nothing listens on).
#include "files.hpp"
#include "rabbitmq_broker.hpp" // make_test_pki
#include "temp_dir.hpp"

#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <gtest/gtest.h>

#include <string>

using todd::core::CommsError;
using todd::core::Options;
using todd::core::Transport;

namespace {

std::shared_ptr<const todd::core::Plugin> plugin()
{
    static auto p = todd::core::PluginRegistry({NATS_PLUGIN_DIR}).load("nats");
    return p;
}

Options with(const Options &o)
{
    Options all = {{"servers", "nats://127.0.0.1:1"}};
    for (auto &[k, v] : o)
        all[k] = v;
    return all;
}

// create must fail with E_CONFIG and a message naming key (and `also`).
void expect_refused(const Options &o, const std::string &key,
                    const std::string &also = "")
{
    try {
        auto t = Transport::create(plugin(), with(o));
        ADD_FAILURE() << "accepted a configuration with bad '" << key << "'";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG) << e.what();
        const std::string what = e.what();
        EXPECT_NE(what.find("'" + key + "'"), std::string::npos) << what;
        if (!also.empty()) {
            EXPECT_NE(what.find(also), std::string::npos) << what;
        }
    }
}

} // namespace

TEST(NatsConfig, ValuesThatCannotWorkAreRefusedNamingTheKey)
{
    expect_refused({{"servers", "http://127.0.0.1:4222"}}, "servers", "scheme");
    expect_refused({{"servers", "nats://127.0.0.1:99999"}}, "servers", "port");
    expect_refused({{"servers", "nats://127.0.0.1:"}}, "servers", "port");
    expect_refused({{"servers", "nats://:4222"}}, "servers", "host");
    expect_refused({{"servers", ","}}, "servers", "empty");
    expect_refused({{"servers", "nats://a b:4222"}}, "servers");
    expect_refused({{"password", "p"}}, "password", "without user");
    expect_refused({{"user", "u"}, {"token", "t"}}, "token", "choose one");
    expect_refused({{"creds_file", "/nonexistent/x.creds"}}, "creds_file",
                   "/nonexistent/x.creds");
    expect_refused({{"tls_ca", "/nonexistent/ca.pem"}}, "tls_ca",
                   "/nonexistent/ca.pem");
    expect_refused({{"tls_cert", "/etc/hostname"}}, "tls_cert",
                   "without tls_key");
    expect_refused({{"stream", "a.b"}}, "stream");
    expect_refused({{"stream", ""}}, "stream");
    expect_refused({{"stream", std::string(65, 'S')}}, "stream");
    expect_refused({{"subject_prefix", "todd.*"}}, "subject_prefix");
    expect_refused({{"subject_prefix", "todd..msg"}}, "subject_prefix",
                   "empty token");
    expect_refused({{"subject_prefix", "$JS.x"}}, "subject_prefix", "reserved");
    expect_refused({{"subject_prefix", "_TODD"}}, "subject_prefix", "reserved");
    expect_refused({{"replicas", "0"}}, "replicas", "range");
    expect_refused({{"replicas", "7"}}, "replicas", "range");
    expect_refused({{"storage", "disk"}}, "storage", "file, memory");
    expect_refused({{"retention_ms", "10"}}, "retention_ms", "range");
    expect_refused(
        {{"duplicate_window_ms", "200000"}, {"retention_ms", "100000"}},
        "duplicate_window_ms", "retention_ms");
    expect_refused({{"ack_wait_ms", "0"}}, "ack_wait_ms", "range");
    expect_refused({{"max_ack_pending", "0"}}, "max_ack_pending", "range");
    expect_refused({{"publish_timeout_ms", "-1"}}, "publish_timeout_ms",
                   "range");
    // The host refuses values that do not parse as the key's type, and
    // unknown keys, before create.
    expect_refused({{"replicas", "three"}}, "replicas");
    expect_refused({{"tls", "maybe"}}, "tls");
    expect_refused({{"bootstrap_servers", "127.0.0.1:9092"}},
                   "bootstrap_servers");
}

TEST(NatsConfig, FilesTheClientCannotUseAreRefusedNamingKeyAndPath)
{
    todd::test::TempDir dir;
    const std::string garbage = dir.path() + "/garbage.pem";
    todd::test::write_file(garbage, "not a certificate\n");
    expect_refused({{"tls_ca", garbage}}, "tls_ca", garbage);
    auto pki = todd::test::make_test_pki(dir.path() + "/pki");
    // A key that is not the certificate's.
    expect_refused({{"tls_cert", pki.client_cert}, {"tls_key", pki.server_key}},
                   "tls_cert");
}

TEST(NatsConfig, AGoodConfigurationIsAcceptedWithoutAServer)
{
    todd::test::TempDir dir;
    auto pki = todd::test::make_test_pki(dir.path() + "/pki");
    // Nothing listens there: create must not wait for a server.
    auto t = Transport::create(
        plugin(),
        with({{"servers", "tls://127.0.0.1:1, nats://[::1]:2,127.0.0.1"},
              {"tls_ca", pki.ca_cert},
              {"tls_cert", pki.client_cert},
              {"tls_key", pki.client_key},
              {"user", "todd"},
              {"password", "secret"},
              {"replicas", "3"},
              {"storage", "memory"},
              {"subject_prefix", "fleet.todd"}}));
    EXPECT_NE(t, nullptr);
}
