#include "objects.hpp"

#include "json_text.hpp"

#include <todd/core/cidr.hpp>
#include <todd/core/json_limits.hpp>

#include <map>
#include <sstream>
#include <stdexcept>
#include <vector>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

namespace todd::cli {

namespace {

using StringMap = std::map<std::string, std::string>;

// yaml-cpp throws InvalidNode when a missing key's node is asked its type, so
// every type test goes through these.
bool is_map(const YAML::Node &n)
{
    return n.IsDefined() && n.IsMap();
}
bool is_seq(const YAML::Node &n)
{
    return n.IsDefined() && n.IsSequence();
}
bool is_absent(const YAML::Node &n)
{
    return !n.IsDefined() || n.IsNull();
}

class Decoder {
  public:
    explicit Decoder(std::string_view source) : source_(source) {}

    [[noreturn]] void fail(const YAML::Node &at, const std::string &what) const
    {
        std::string where(source_);
        YAML::Mark m = at.IsDefined() ? at.Mark() : YAML::Mark::null_mark();
        if (m.line >= 0)
            where += ":" + std::to_string(m.line + 1);
        throw ObjectError(where + ": " + what);
    }

    static const char *kind(const YAML::Node &n)
    {
        if (!n.IsDefined())
            return "nothing";
        switch (n.Type()) {
        case YAML::NodeType::Sequence: return "a list";
        case YAML::NodeType::Map: return "a map";
        case YAML::NodeType::Null: return "nothing";
        case YAML::NodeType::Scalar: return "a scalar";
        default: return "nothing";
        }
    }

    // A scalar as text, null as "" (what yaml.v2 gives a Go string field).
    std::string scalar(const YAML::Node &n, const std::string &field) const
    {
        if (is_absent(n))
            return {};
        if (!n.IsScalar())
            fail(n, field + " must be a string, not " + kind(n));
        return n.Scalar();
    }

    // A map of scalars (Go map[string]string).
    StringMap string_map(const YAML::Node &n, const std::string &field) const
    {
        if (!is_map(n))
            fail(n, field + " must be a map of strings, not " + kind(n));
        StringMap out;
        for (const auto &kv : n) {
            std::string key = scalar(kv.first, field + " key");
            out[key] = scalar(kv.second, field + "." + key);
        }
        return out;
    }

  private:
    std::string_view source_;
};

/** Counts nesting from the parser's events, before any node is built:
 *  the same bound as for JSON, and a clearer refusal than yaml-cpp's own
 *  (its depth guard stops at about 500 levels saying "bad file"). */
class DepthCheck : public YAML::EventHandler {
  public:
    struct TooDeep {
        YAML::Mark mark;
    };
    void OnDocumentStart(const YAML::Mark &) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark &, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark &, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark &, const std::string &, YAML::anchor_t,
                  const std::string &) override
    {
    }
    void OnSequenceStart(const YAML::Mark &m, const std::string &,
                         YAML::anchor_t, YAML::EmitterStyle::value) override
    {
        open(m);
    }
    void OnSequenceEnd() override { --depth_; }
    void OnMapStart(const YAML::Mark &m, const std::string &, YAML::anchor_t,
                    YAML::EmitterStyle::value) override
    {
        open(m);
    }
    void OnMapEnd() override { --depth_; }

  private:
    void open(const YAML::Mark &m)
    {
        if (++depth_ > json::max_depth)
            throw TooDeep{m};
    }
    unsigned depth_ = 0;
};

void append_map(std::string &out, const StringMap &m)
{
    out.push_back('{');
    bool first = true;
    for (const auto &[k, v] : m) {
        if (!first)
            out.push_back(',');
        first = false;
        out += go_json_quote(k);
        out.push_back(':');
        out += go_json_quote(v);
    }
    out.push_back('}');
}

std::string group_spec(const Decoder &d, const YAML::Node &spec,
                       const std::string &label)
{
    std::string out = "{\"group\":";
    out += go_json_quote(d.scalar(spec["group"], "spec.group"));
    out += ",\"matches\":";
    YAML::Node matches = spec["matches"];
    if (is_absent(matches)) {
        out += "null}";
        return out;
    }
    if (!is_seq(matches))
        d.fail(matches, "group '" + label +
                            "': spec.matches must be a list of match "
                            "statements (- hostname: REGEX or - "
                            "within_subnet: CIDR), not " +
                            Decoder::kind(matches));
    out.push_back('[');
    std::size_t i = 0;
    for (const auto &stmt : matches) {
        std::string field = "spec.matches[" + std::to_string(i) + "]";
        StringMap m = d.string_map(stmt, field);
        for (const auto &[k, v] : m) {
            if (k != "hostname" && k != "within_subnet")
                d.fail(stmt, "group '" + label + "': " + field +
                                 ": unknown match key '" + k +
                                 "' (expected hostname or within_subnet)");
            if (k == "within_subnet") {
                try {
                    core::Cidr::parse(v);
                } catch (const std::invalid_argument &e) {
                    d.fail(stmt, "group '" + label + "': " + field +
                                     ".within_subnet: " + e.what());
                }
            }
        }
        if (i++ > 0)
            out.push_back(',');
        append_map(out, m);
    }
    out += "]}";
    return out;
}

std::string testrun_spec(const Decoder &d, const YAML::Node &spec,
                         const std::string &label)
{
    const std::string what = "testrun '" + label + "': ";
    std::string targettype = d.scalar(spec["targettype"], "spec.targettype");
    if (targettype != "group" && targettype != "uncontrolled")
        d.fail(spec["targettype"].IsDefined() ? spec["targettype"] : spec,
               what + "spec.targettype must be 'group' or 'uncontrolled'" +
                   (targettype.empty() ? std::string(" (missing)")
                                       : ", not '" + targettype + "'"));

    YAML::Node source = spec["source"];
    if (is_absent(source))
        d.fail(spec, what + "spec.source is missing (name: GROUP, app: "
                            "TESTLET, args: ARGS)");
    StringMap src = d.string_map(source, "spec.source");
    for (const char *key : {"name", "app"})
        if (src[key].empty())
            d.fail(source, what + "spec.source." + key + " is missing");

    std::string out =
        "{\"targettype\":" + go_json_quote(targettype) + ",\"source\":";
    append_map(out, src);
    out += ",\"target\":";

    YAML::Node target = spec["target"];
    if (targettype == "group") {
        if (!is_map(target))
            d.fail(target.IsDefined() ? target : spec,
                   what +
                       "spec.target must be a map with name, app and args "
                       "when targettype is group, not " +
                       Decoder::kind(target));
        StringMap tgt = d.string_map(target, "spec.target");
        for (const char *key : {"name", "app", "args"}) {
            YAML::Node v = target[key];
            if (is_absent(v))
                d.fail(target, what + "spec.target." + key +
                                   " must be a string" +
                                   (std::string(key) == "args"
                                        ? " (write args: \"\" for none)"
                                        : ""));
        }
        for (const char *key : {"name", "app"})
            if (tgt[key].empty())
                d.fail(target, what + "spec.target." + key + " is empty");
        append_map(out, tgt);
    } else {
        if (!is_seq(target) || target.size() == 0)
            d.fail(target.IsDefined() ? target : spec,
                   what +
                       "spec.target must be a non-empty list of target "
                       "addresses when targettype is uncontrolled, not " +
                       (is_seq(target) ? std::string("an empty list")
                                       : Decoder::kind(target)));
        out.push_back('[');
        std::size_t i = 0;
        for (const auto &t : target) {
            std::string field = "spec.target[" + std::to_string(i) + "]";
            std::string addr = d.scalar(t, field);
            if (addr.empty())
                d.fail(t, what + field + " is empty");
            if (i++ > 0)
                out.push_back(',');
            out += go_json_quote(addr);
        }
        out.push_back(']');
    }
    out.push_back('}');
    return out;
}

} // namespace

ObjectJson yaml_object_to_json(std::string_view yaml,
                               std::string_view source_name)
{
    Decoder d(source_name);
    YAML::Node loaded;
    try {
        std::istringstream in{std::string(yaml)};
        YAML::Parser parser(in);
        DepthCheck depth;
        parser.HandleNextDocument(depth); // the document YAML::Load reads
        loaded = YAML::Load(std::string(yaml));
    } catch (const DepthCheck::TooDeep &e) {
        throw ObjectError(
            std::string(source_name) + ":" + std::to_string(e.mark.line + 1) +
            ":" + std::to_string(e.mark.column + 1) +
            ": not valid YAML: " + json::too_deep(json::max_depth));
    } catch (const YAML::Exception &e) {
        std::string where(source_name);
        if (e.mark.line >= 0)
            where += ":" + std::to_string(e.mark.line + 1) + ":" +
                     std::to_string(e.mark.column + 1);
        throw ObjectError(where + ": not valid YAML: " + e.msg);
    }
    const YAML::Node &root = loaded; // const lookups never insert keys
    if (is_absent(root))
        throw ObjectError(std::string(source_name) +
                          ": empty object definition (expected a map with "
                          "type, label and spec)");
    if (!is_map(root))
        d.fail(root, std::string("an object definition must be a map with "
                                 "type, label and spec, not ") +
                         Decoder::kind(root));

    ObjectJson obj;
    obj.type = d.scalar(root["type"], "type");
    if (obj.type != "group" && obj.type != "testrun")
        d.fail(root["type"].IsDefined() ? root["type"] : root,
               obj.type.empty()
                   ? std::string("type is missing (expected group or "
                                 "testrun)")
                   : "invalid object type '" + obj.type +
                         "' (expected group or testrun)");
    obj.label = d.scalar(root["label"], "label");
    if (obj.label.empty())
        d.fail(root, obj.type + " object without a label (label: NAME is "
                                "required)");

    YAML::Node spec = root["spec"];
    if (!is_map(spec))
        d.fail(spec.IsDefined() ? spec : root,
               obj.type + " '" + obj.label + "': spec must be a map, not " +
                   Decoder::kind(spec));

    obj.json = "{\"label\":" + go_json_quote(obj.label) +
               ",\"type\":" + go_json_quote(obj.type) + ",\"spec\":" +
               (obj.type == "group" ? group_spec(d, spec, obj.label)
                                    : testrun_spec(d, spec, obj.label)) +
               "}";
    return obj;
}

} // namespace todd::cli
