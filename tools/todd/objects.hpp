// ToDD object files (YAML) to the JSON body that `todd create` sends.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace todd::cli {

/// A YAML object file that cannot become a valid ToDD object. what() names
/// the source, the line (when known), the field and what is wrong.
class ObjectError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// A converted object: its type ("group" or "testrun"), its label and the
/// compact JSON for POST /v1/object/create.
struct ObjectJson {
    std::string type;
    std::string label;
    std::string json;
};

/// Decodes one ToDD object (the first YAML document of @p yaml) and encodes
/// it as the Go CLI does: keys label, type, spec; group spec group, matches;
/// testrun spec targettype, source, target; maps with sorted keys; Go string
/// escaping. Scalars are taken as their text (`hostname: 5` -> "5"), absent
/// optional parts become null, unknown keys are dropped.
///
/// Stricter than the Go CLI where its output would break a server: label and
/// type are required; `matches` keys must be hostname or within_subnet, and a
/// within_subnet must be a CIDR; a testrun needs targettype group or
/// uncontrolled, source name and app, and either a non-empty list of targets
/// (uncontrolled) or a target map with string name, app and args (group).
/// @p source_name (a file name or "<stdin>") prefixes every error message.
/// @throws ObjectError on any YAML syntax error or invalid object.
ObjectJson yaml_object_to_json(std::string_view yaml,
                               std::string_view source_name);

} // namespace todd::cli
