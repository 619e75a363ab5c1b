// SPDX-License-Identifier: Apache-2.0
// The ABI v1 layout is frozen: these numbers may only grow at the end of a
// struct (a new minor). Checked at compile time for C++ and at run time
// against what the C compiler produced (layout_c.c).
#include <todd/comms/plugin.h>

#include "layout.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#if defined(__x86_64__)
#define SZ(T, n) static_assert(sizeof(T) == (n), #T " size changed")
#define OFF(T, F, n) static_assert(offsetof(T, F) == (n), #T "." #F " moved")

SZ(todd_comms_config_key, 32);
OFF(todd_comms_config_key, name, 0);
OFF(todd_comms_config_key, type, 8);
OFF(todd_comms_config_key, flags, 12);
OFF(todd_comms_config_key, default_value, 16);
OFF(todd_comms_config_key, description, 24);

SZ(todd_comms_kv, 16);
OFF(todd_comms_kv, key, 0);
OFF(todd_comms_kv, value, 8);

SZ(todd_comms_config, 16);
OFF(todd_comms_config, struct_size, 0);
OFF(todd_comms_config, count, 4);
OFF(todd_comms_config, items, 8);

SZ(todd_comms_publish_opts, 24);
OFF(todd_comms_publish_opts, struct_size, 0);
OFF(todd_comms_publish_opts, flags, 4);
OFF(todd_comms_publish_opts, ttl_ms, 8);
OFF(todd_comms_publish_opts, content_type, 16);

SZ(todd_comms_outgoing, 32);
OFF(todd_comms_outgoing, destination, 0);
OFF(todd_comms_outgoing, payload, 8);
OFF(todd_comms_outgoing, payload_len, 16);
OFF(todd_comms_outgoing, opts, 24);

SZ(todd_comms_subscribe_opts, 16);
OFF(todd_comms_subscribe_opts, struct_size, 0);
OFF(todd_comms_subscribe_opts, flags, 4);
OFF(todd_comms_subscribe_opts, prefetch, 8);
OFF(todd_comms_subscribe_opts, reserved, 12);

SZ(todd_comms_message, 40);
OFF(todd_comms_message, struct_size, 0);
OFF(todd_comms_message, flags, 4);
OFF(todd_comms_message, destination, 8);
OFF(todd_comms_message, payload, 16);
OFF(todd_comms_message, payload_len, 24);
OFF(todd_comms_message, content_type, 32);

SZ(todd_comms_host_api, 40);
OFF(todd_comms_host_api, struct_size, 0);
OFF(todd_comms_host_api, abi_minor, 4);
OFF(todd_comms_host_api, log_enabled, 8);
OFF(todd_comms_host_api, log, 16);
OFF(todd_comms_host_api, deliver, 24);
OFF(todd_comms_host_api, state, 32);

SZ(todd_comms_host_info, 24);
OFF(todd_comms_host_info, struct_size, 0);
OFF(todd_comms_host_info, abi_major, 4);
OFF(todd_comms_host_info, abi_minor, 8);
OFF(todd_comms_host_info, reserved, 12);
OFF(todd_comms_host_info, host_version, 16);

SZ(todd_comms_plugin_descriptor, 144);
OFF(todd_comms_plugin_descriptor, struct_size, 0);
OFF(todd_comms_plugin_descriptor, abi_major, 4);
OFF(todd_comms_plugin_descriptor, abi_minor, 8);
OFF(todd_comms_plugin_descriptor, min_host_abi_minor, 12);
OFF(todd_comms_plugin_descriptor, name, 16);
OFF(todd_comms_plugin_descriptor, version, 24);
OFF(todd_comms_plugin_descriptor, description, 32);
OFF(todd_comms_plugin_descriptor, license, 40);
OFF(todd_comms_plugin_descriptor, vendor, 48);
OFF(todd_comms_plugin_descriptor, capabilities, 56);
OFF(todd_comms_plugin_descriptor, config_keys, 64);
OFF(todd_comms_plugin_descriptor, config_key_count, 72);
OFF(todd_comms_plugin_descriptor, reserved, 76);
OFF(todd_comms_plugin_descriptor, create, 80);
OFF(todd_comms_plugin_descriptor, destroy, 88);
OFF(todd_comms_plugin_descriptor, start, 96);
OFF(todd_comms_plugin_descriptor, stop, 104);
OFF(todd_comms_plugin_descriptor, publish, 112);
OFF(todd_comms_plugin_descriptor, subscribe, 120);
OFF(todd_comms_plugin_descriptor, unsubscribe, 128);
OFF(todd_comms_plugin_descriptor, publish_batch, 136);
#endif

// Status codes and flags are ABI too.
static_assert(TODD_COMMS_ABI_MAJOR == 1);
static_assert(TODD_COMMS_OK == 0 && TODD_COMMS_E_INVAL == -1 &&
              TODD_COMMS_E_CONFIG == -12);
static_assert(TODD_COMMS_VERDICT_ACK == 0 && TODD_COMMS_VERDICT_REQUEUE == 1 &&
              TODD_COMMS_VERDICT_REJECT == 2);
static_assert(TODD_COMMS_CAP_BATCH == (1ull << 6));
static_assert(TODD_COMMS_MSG_REDELIVERED == 1u);

namespace {

#define S(T)                                                                   \
    {                                                                          \
#T, sizeof(T), (size_t)-1, ""                                          \
    }
#define O(T, F)                                                                \
    {                                                                          \
#T, sizeof(T), offsetof(T, F), #F                                      \
    }
const todd_abi_layout cpp_rows[] = {
#include "layout_rows.h"
};

TEST(AbiLayout, CAndCxxAgree)
{
    size_t n = 0;
    const todd_abi_layout *c = todd_abi_layout_c(&n);
    ASSERT_EQ(n, sizeof cpp_rows / sizeof cpp_rows[0]);
    for (size_t i = 0; i < n; ++i) {
        SCOPED_TRACE(std::string(c[i].type) + "." + c[i].field);
        EXPECT_STREQ(c[i].type, cpp_rows[i].type);
        EXPECT_EQ(c[i].size, cpp_rows[i].size);
        EXPECT_EQ(c[i].offset, cpp_rows[i].offset);
    }
}

TEST(AbiLayout, HasFieldFollowsStructSize)
{
    todd_comms_publish_opts o{};
    o.struct_size = offsetof(todd_comms_publish_opts, content_type);
    const todd_comms_publish_opts *p = &o;
    EXPECT_TRUE(TODD_COMMS_HAS_FIELD(p, todd_comms_publish_opts, ttl_ms));
    EXPECT_FALSE(
        TODD_COMMS_HAS_FIELD(p, todd_comms_publish_opts, content_type));
    p = nullptr;
    EXPECT_FALSE(TODD_COMMS_HAS_FIELD(p, todd_comms_publish_opts, ttl_ms));
}

TEST(AbiLayout, StatusStringsNeverNull)
{
    for (int s = 1; s >= -20; --s)
        EXPECT_NE(todd_comms_status_str(s), nullptr);
    EXPECT_STREQ(todd_comms_status_str(TODD_COMMS_E_FULL), "limit reached");
}

} // namespace
