#include "query/openapi.h"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

#include "query/handlers.h"

namespace inferscope {

const nlohmann::json& OpenApiDocument() {
  static const nlohmann::json doc =
      nlohmann::json::parse(OpenApiDocumentText(), nullptr, /*allow_exceptions=*/false);
  return doc;
}

std::optional<std::vector<std::string>> DocumentedQueryParameters(
    std::string_view method, std::string_view path, std::vector<std::string>* repeatable) {
  const nlohmann::json& doc = OpenApiDocument();
  if (!doc.is_object() || !doc.contains("paths")) return std::nullopt;
  const nlohmann::json& paths = doc["paths"];
  auto item = paths.find(std::string(path));
  if (item == paths.end() || !item->is_object()) return std::nullopt;
  std::string verb(method);
  std::transform(verb.begin(), verb.end(), verb.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  auto op = item->find(verb);
  if (op == item->end() || !op->is_object()) return std::nullopt;
  std::vector<std::string> names;
  // Parameters of the path item apply to every operation; the operation's own follow.
  for (const nlohmann::json* list : {&*item, &*op}) {
    auto params = list->find("parameters");
    if (params == list->end() || !params->is_array()) continue;
    for (const nlohmann::json& p : *params) {
      const nlohmann::json* param = &p;
      // A reference to a shared parameter: "#/components/parameters/<name>".
      if (p.contains("$ref") && p["$ref"].is_string()) {
        const std::string ref = p["$ref"].get<std::string>();
        if (ref.rfind("#/components/parameters/", 0) != 0) continue;
        const nlohmann::json::json_pointer pointer(ref.substr(1));
        if (!doc.contains(pointer)) continue;
        param = &doc.at(pointer);
      }
      if (param->value("in", "") == "query" && param->contains("name")) {
        names.push_back(param->value("name", ""));
        if (repeatable != nullptr && param->value("x-repeatable", false)) {
          repeatable->push_back(names.back());
        }
      }
    }
  }
  return names;
}

ApiReply HandleOpenApi(const ApiContext&, const ApiRequest&) {
  ApiReply reply;
  reply.text = std::string(OpenApiDocumentText());
  reply.content_type = "application/json";
  return reply;
}

}  // namespace inferscope
