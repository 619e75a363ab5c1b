// SPDX-License-Identifier: Apache-2.0
// todd::json::parse, the depth-bounded parser every site uses for text from
// outside: the bound is exact, the refusal names it, and input nested far
// past it (500 000 levels) is refused without recursion.
#include <todd/core/json_limits.hpp>

#include <gtest/gtest.h>

#include <string>

namespace {

using todd::json::parse;
using todd::json::ParseOptions;

std::string arrays(size_t n)
{
    return std::string(n, '[') + std::string(n, ']');
}

std::string objects(size_t n)
{
    std::string s;
    for (size_t i = 0; i < n; ++i)
        s += "{\"k\":";
    s += "1";
    s += std::string(n, '}');
    return s;
}

TEST(JsonLimits, AtTheBoundIsParsedOnePastIsRefused)
{
    for (auto make : {arrays, objects}) {
        rapidjson::Document doc;
        EXPECT_FALSE(parse(doc, make(todd::json::max_depth)));
        EXPECT_FALSE(doc.IsNull());
        auto err = parse(doc, make(todd::json::max_depth + 1));
        ASSERT_TRUE(err);
        EXPECT_TRUE(err->too_deep);
        EXPECT_EQ(err->reason, "nesting deeper than 64 levels");
        EXPECT_TRUE(doc.IsNull()); // nothing half-built is left
    }
}

TEST(JsonLimits, BoundIsAnOption)
{
    rapidjson::Document doc;
    ParseOptions o;
    o.max_depth = 3;
    EXPECT_FALSE(parse(doc, "[{\"a\":[]}]", o));
    auto err = parse(doc, "[{\"a\":[[]]}]", o);
    ASSERT_TRUE(err);
    EXPECT_EQ(err->reason, "nesting deeper than 3 levels");
    EXPECT_EQ(err->offset, 7u); // the fourth opening bracket
}

TEST(JsonLimits, FarTooDeepIsRefusedWithoutRecursion)
{
    rapidjson::Document doc;
    std::string deep_obj;
    for (int i = 0; i < 500000; ++i)
        deep_obj += "{\"a\":";
    for (const std::string &deep :
         {std::string(500000, '['), deep_obj, arrays(500000)}) {
        auto err = parse(doc, deep);
        ASSERT_TRUE(err);
        EXPECT_TRUE(err->too_deep);
    }
    std::string mixed;
    for (int i = 0; i < 250000; ++i)
        mixed += "[{\"a\":";
    auto err = parse(doc, mixed);
    ASSERT_TRUE(err);
    EXPECT_TRUE(err->too_deep);
}

TEST(JsonLimits, BracketsInStringsDoNotCount)
{
    rapidjson::Document doc;
    const std::string s = "{\"k\":\"" + std::string(100000, '[') + "\"}";
    EXPECT_FALSE(parse(doc, s));
    EXPECT_EQ(doc["k"].GetStringLength(), 100000u);
}

TEST(JsonLimits, SyntaxErrorsKeepRapidJsonsReasonAndOffset)
{
    rapidjson::Document doc;
    auto err = parse(doc, "{\"a\":1} x");
    ASSERT_TRUE(err);
    EXPECT_FALSE(err->too_deep);
    EXPECT_EQ(err->reason,
              "The document root must not be followed by other values.");
    EXPECT_EQ(err->offset, 8u);
    err = parse(doc, "");
    ASSERT_TRUE(err);
    EXPECT_EQ(err->reason, "The document is empty.");
    // Not NUL-terminated: only the view's bytes are read.
    const char buf[] = "[1]]";
    EXPECT_FALSE(parse(doc, std::string_view(buf, 3)));
}

TEST(JsonLimits, TextIsStrict)
{
    rapidjson::Document doc;
    EXPECT_FALSE(parse(doc, "\"\xff\""));
    ParseOptions o;
    o.validate_utf8 = true;
    auto err = parse(doc, "\"\xff\"", o);
    ASSERT_TRUE(err);
    EXPECT_EQ(err->reason, "Invalid encoding in string.");
    // A NUL would otherwise end the input: "{}\0x" must not read as "{}".
    err = parse(doc, std::string_view("{}\0x", 4));
    ASSERT_TRUE(err);
    EXPECT_EQ(err->reason, "NUL byte in the text");
    EXPECT_EQ(err->offset, 2u);
    EXPECT_TRUE(doc.IsNull());
    // A lone surrogate escape would decode to bytes that are not UTF-8.
    err = parse(doc, R"(["\udc00"])", o);
    ASSERT_TRUE(err);
    EXPECT_EQ(err->reason, "Invalid encoding in string.");
    EXPECT_FALSE(parse(doc, R"(["\ud83d\ude00"])", o)); // a valid pair
    // A byte of a BOM is not skipped on its own, nor is a whole BOM.
    EXPECT_TRUE(parse(doc, "\xBF{}"));
    EXPECT_TRUE(parse(doc, "\xEF\xBB\xBF{}"));
    err = parse(doc, "1e400");
    ASSERT_TRUE(err);
    EXPECT_EQ(err->reason, "Number too big to be stored in double.");
}

TEST(JsonLimits, NumbersAreReadExactly)
{
    rapidjson::Document doc;
    // Correctly rounded: RapidJSON's default parse is one ULP off here.
    ASSERT_FALSE(parse(doc, "[0.1, 2.2250738585072011e-308, 1e-400]"));
    EXPECT_EQ(doc[0].GetDouble(), 0.1);
    EXPECT_EQ(doc[1].GetDouble(), 2.2250738585072011e-308);
    EXPECT_EQ(doc[2].GetDouble(), 0.0);
    ASSERT_FALSE(parse(doc, "[7, -7, 4294967296, -9223372036854775808, "
                            "18446744073709551615, 184467440737095516155]"));
    EXPECT_TRUE(doc[0].IsInt());
    EXPECT_EQ(doc[0].GetInt(), 7);
    EXPECT_EQ(doc[1].GetInt(), -7);
    EXPECT_EQ(doc[2].GetUint64(), 4294967296u);
    EXPECT_EQ(doc[3].GetInt64(), INT64_MIN);
    EXPECT_EQ(doc[4].GetUint64(), UINT64_MAX);
    // Above 2^64 an integer is a double, the nearest one.
    EXPECT_TRUE(doc[5].IsDouble());
    EXPECT_EQ(doc[5].GetDouble(), 184467440737095516155.0);
}

TEST(JsonLimits, ReusedDocumentHoldsOnlyTheLastParse)
{
    rapidjson::Document doc;
    EXPECT_FALSE(parse(doc, "{\"a\":1}"));
    EXPECT_TRUE(parse(doc, "[[["));
    EXPECT_TRUE(doc.IsNull());
    EXPECT_FALSE(parse(doc, "[2]"));
    EXPECT_EQ(doc[0].GetInt(), 2);
}

} // namespace
