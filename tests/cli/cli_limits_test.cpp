// What the CLI reads from outside (server replies, YAML object files) is
// nested at most todd::json::max_depth levels; deeper is refused with a
// message naming the bound, never a stack overflow (500 000 levels here).
#include "format.hpp"
#include "json_text.hpp"
#include "objects.hpp"

#include <gtest/gtest.h>

#include <string>

using namespace todd::cli;

namespace {

std::string arrays(size_t n)
{
    return std::string(n, '[') + std::string(n, ']');
}

template <class F> std::string error_of(F f)
{
    try {
        f();
    } catch (const std::exception &e) {
        return e.what();
    }
    return "(no error)";
}

TEST(CliLimits, ServerRepliesNestedTooDeeplyAreRefused)
{
    const std::string deep = arrays(500000);
    std::string why;
    EXPECT_FALSE(json_is_valid(deep, &why));
    EXPECT_EQ(why, "nesting deeper than 64 levels (at offset 64)");
    EXPECT_TRUE(json_is_valid(arrays(64)));

    const std::string body = "{\"agent\":{\"target\":" + deep + "}}";
    EXPECT_NE(error_of([&] {
                  format_results_table(body);
              }).find("test data refused: nesting deeper than 64 levels"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  parse_agents(deep);
              }).find("nesting deeper than 64 levels"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  parse_groups(deep);
              }).find("nesting deeper than 64 levels"),
              std::string::npos);
}

TEST(CliLimits, YamlNestedTooDeeplyIsRefusedWithTheBound)
{
    // Flow style, block style, and just past the bound under an unknown key.
    const std::string flow =
        "type: group\nlabel: g\nspec:\n  x: " + std::string(100000, '[') + "\n";
    std::string block = "type: group\nlabel: g\nspec:\n";
    for (int i = 0; i < 2000; ++i)
        block += std::string(2 + i, ' ') + "k:\n";
    std::string edge = "type: group\nlabel: g\nspec:\n  matches: []\n  x: " +
                       std::string(62, '[') + std::string(62, ']') + "\n";
    // edge: root map, spec map, then 62 lists = 64 levels: accepted.
    EXPECT_NO_THROW(yaml_object_to_json(edge, "edge.yml"));
    edge.insert(edge.find("  x: ") + 5, "[");
    edge.insert(edge.rfind(']'), "]");
    for (const auto &[yaml, name] :
         {std::pair{flow, "flow.yml"}, std::pair{block, "block.yml"},
          std::pair{edge, "edge.yml"}}) {
        const std::string err =
            error_of([&] { yaml_object_to_json(yaml, name); });
        EXPECT_NE(err.find(std::string(name) + ":"), std::string::npos) << err;
        EXPECT_NE(err.find("not valid YAML: nesting deeper than 64 levels"),
                  std::string::npos)
            << err;
    }
}

} // namespace
