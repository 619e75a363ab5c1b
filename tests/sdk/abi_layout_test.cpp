// SPDX-License-Identifier: Apache-2.0
// ABI freeze: every struct, field and constant of v1.0 keeps its size,
// offset and value in the current headers. A later minor may only grow a
// struct at its end, so sizes may then grow; within the same minor they are
// identical.
#include "abi_layout.hpp"

#include <gtest/gtest.h>

using abi_layout::Row;

TEST(AbiFreeze, SameRowsInBothTables)
{
    auto f = abi_layout::frozen(), c = abi_layout::current();
    ASSERT_EQ(f.size(), c.size());
    ASSERT_GT(f.size(), 100u);
    for (size_t i = 0; i < f.size(); ++i)
        EXPECT_EQ(f[i].name, c[i].name);
}

TEST(AbiFreeze, FieldsKeepOffsetAndSize)
{
    auto f = abi_layout::frozen(), c = abi_layout::current();
    for (size_t i = 0; i < f.size() && i < c.size(); ++i) {
        if (f[i].kind != Row::Field)
            continue;
        EXPECT_EQ(f[i].a, c[i].a) << f[i].name << ": offset changed";
        EXPECT_EQ(f[i].b, c[i].b) << f[i].name << ": size changed";
    }
}

TEST(AbiFreeze, StructsKeepSizeAndAlignment)
{
    auto f = abi_layout::frozen(), c = abi_layout::current();
    const bool same_minor =
        abi_layout::frozen_minor() == abi_layout::current_minor();
    for (size_t i = 0; i < f.size() && i < c.size(); ++i) {
        if (f[i].kind != Row::Struct)
            continue;
        if (same_minor) {
            EXPECT_EQ(f[i].a, c[i].a) << f[i].name << ": size changed";
        } else {
            EXPECT_GE(c[i].a, f[i].a) << f[i].name << ": shrank";
        }
        EXPECT_EQ(f[i].b, c[i].b) << f[i].name << ": alignment changed";
    }
}

TEST(AbiFreeze, ConstantsKeepTheirValues)
{
    auto f = abi_layout::frozen(), c = abi_layout::current();
    for (size_t i = 0; i < f.size() && i < c.size(); ++i) {
        if (f[i].kind == Row::Constant) {
            EXPECT_EQ(f[i].a, c[i].a) << f[i].name << ": value changed";
        }
    }
}

TEST(AbiFreeze, MinorNeverGoesBack)
{
    EXPECT_GE(abi_layout::current_minor(), abi_layout::frozen_minor());
}
