// SPDX-License-Identifier: Apache-2.0
// The Kafka plugin refuses a configuration it cannot use in create, with
// E_CONFIG naming the key, before anything connects (no broker is needed:
// bootstrap_servers names a port nothing listens on).
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
    static auto p =
        todd::core::PluginRegistry({KAFKA_PLUGIN_DIR}).load("kafka");
    return p;
}

// create must fail with E_CONFIG and a message naming key (and `also`).
void expect_refused(const Options &o, const std::string &key,
                    const std::string &also = "")
{
    Options all = {{"bootstrap_servers", "127.0.0.1:1"}};
    for (auto &[k, v] : o)
        all[k] = v;
    try {
        auto t = Transport::create(plugin(), all);
        ADD_FAILURE() << "accepted a configuration with bad '" << key << "'";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG) << e.what();
        const std::string what = e.what();
        EXPECT_NE(what.find(key), std::string::npos) << what;
        if (!also.empty()) {
            EXPECT_NE(what.find(also), std::string::npos) << what;
        }
    }
}

} // namespace

TEST(KafkaConfig, ValuesThatCannotWorkAreRefusedNamingTheKey)
{
    expect_refused({{"bootstrap_servers", "127.0.0.1"}}, "bootstrap_servers",
                   "host:port");
    expect_refused({{"bootstrap_servers", "127.0.0.1:99999"}},
                   "bootstrap_servers", "port");
    expect_refused({{"bootstrap_servers", ","}}, "bootstrap_servers", "empty");
    expect_refused({{"topics", "0"}}, "topics", "range");
    expect_refused({{"partitions", "-3"}}, "partitions", "range");
    expect_refused({{"replication_factor", "0"}}, "replication_factor");
    expect_refused({{"topic_prefix", "todd/"}}, "topic_prefix", "character");
    expect_refused({{"security_protocol", "tls"}}, "security_protocol",
                   "sasl_ssl");
    expect_refused({{"security_protocol", "sasl_plaintext"}}, "sasl_username",
                   "missing");
    expect_refused(
        {{"security_protocol", "sasl_plaintext"}, {"sasl_username", "u"}},
        "sasl_password", "missing");
    expect_refused({{"sasl_username", "u"}, {"sasl_password", "p"}},
                   "security_protocol", "SASL");
    expect_refused({{"sasl_mechanism", "GSSAPI"}}, "sasl_mechanism");
    expect_refused({{"ssl_ca", "/etc/hostname"}}, "security_protocol", "TLS");
    expect_refused(
        {{"security_protocol", "ssl"}, {"ssl_ca", "/nonexistent/ca.pem"}},
        "ssl_ca", "/nonexistent/ca.pem");
    expect_refused(
        {{"security_protocol", "ssl"}, {"ssl_cert", "/etc/hostname"}},
        "ssl_key", "together");
    expect_refused(
        {{"session_timeout_ms", "60000"}, {"max_poll_interval_ms", "30000"}},
        "max_poll_interval_ms");
    expect_refused({{"debug", "nonsense"}}, "debug");
}

TEST(KafkaConfig, TlsFilesLibrdkafkaCannotLoadAreRefused)
{
    todd::test::TempDir dir("todd-kafka-config");
    auto pki = todd::test::make_test_pki(dir.path());
    // Not PEM at all.
    const std::string junk = dir.path() + "/junk.pem";
    todd::test::write_file(junk, "not a certificate\n");
    expect_refused({{"security_protocol", "ssl"}, {"ssl_ca", junk}},
                   "'ssl_ca' names '" + junk + "'", "no certificate");
    // A key that does not belong to the certificate.
    expect_refused({{"security_protocol", "ssl"},
                    {"ssl_ca", pki.ca_cert},
                    {"ssl_cert", pki.client_cert},
                    {"ssl_key", pki.server_key}},
                   "'ssl_key' names '" + pki.server_key + "'", "mismatch");
    expect_refused({{"security_protocol", "ssl"},
                    {"ssl_ca", pki.ca_cert},
                    {"ssl_cert", junk},
                    {"ssl_key", pki.client_key}},
                   "'ssl_cert' names '" + junk + "'");
    // The right files are accepted (nothing connects: create only).
    auto t = Transport::create(plugin(), {{"bootstrap_servers", "127.0.0.1:1"},
                                          {"security_protocol", "ssl"},
                                          {"ssl_ca", pki.ca_cert},
                                          {"ssl_cert", pki.client_cert},
                                          {"ssl_key", pki.client_key}});
    EXPECT_NE(t, nullptr);
}
