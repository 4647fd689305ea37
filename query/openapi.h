#pragma once

// The OpenAPI 3.1 document of the query API. Its source is docs/openapi.json, compiled into the
// binary (cmake/embed_text.cmake), so GET /v1/openapi.json needs no file at run time and the
// engine and every query node serve the document of the code they run.
//
// The document is also the declaration of each route's query parameters: QueryServer refuses a
// parameter the document does not list for the route's operation (400 naming it), so a parameter
// cannot be accepted without being documented. Tests check that the document and the route table
// name the same operations and validate every response of the API tests against it
// (tests/query/openapi_test.cc, tests/query/validate_openapi.py).

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace inferscope {

// The document's text, as in docs/openapi.json.
std::string_view OpenApiDocumentText();
// The document, parsed once (a discarded JSON value if the text does not parse).
const nlohmann::json& OpenApiDocument();
// The query parameters the document declares for the operation `method` ("GET", "POST"...) on the
// path template `path` (a Route's name, "/v1/instances/{id}/summary"), in the document's order;
// nullopt when the document has no such operation. `repeatable`, when given, gets those that may
// be given more than once (`"x-repeatable": true`); any other may appear once.
std::optional<std::vector<std::string>> DocumentedQueryParameters(
    std::string_view method, std::string_view path, std::vector<std::string>* repeatable = nullptr);

}  // namespace inferscope
