// `inferscope report comparison|trend`: a report of the query API printed at a terminal.

#include <httplib.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "cli/commands.h"

namespace inferscope {

int ReportCommand(const std::string& kind, const ReportArgs& args) {
  std::vector<std::pair<std::string, std::string>> params = {
      {"format", args.format}, {"window", args.window}, {"to", args.to}};
  if (kind == "comparison") {
    params.insert(params.end(), {{"instances", args.instances}, {"models", args.models}});
  } else {
    params.insert(params.end(), {{"instance", args.instance},
                                 {"model", args.model},
                                 {"period", args.period},
                                 {"alpha", args.alpha}});
  }
  std::string path = "/v1/reports/" + kind;
  char sep = '?';
  for (const auto& [name, value] : params) {
    if (value.empty()) continue;
    path += sep + name + "=" + httplib::detail::encode_query_param(value);
    sep = '&';
  }
  httplib::Client http(args.url);
  http.set_connection_timeout(5);
  http.set_read_timeout(30);
  httplib::Headers headers;
  if (!args.token.empty()) headers.emplace("Authorization", "Bearer " + args.token);
  auto res = http.Get(path, headers);
  if (!res) {
    std::fprintf(stderr, "report: GET %s%s failed: %s\n", args.url.c_str(), path.c_str(),
                 httplib::to_string(res.error()).c_str());
    return 1;
  }
  if (res->status != 200) {
    // The API's error shape: {"error": {"code", "message", "details"}, "timestamp"}.
    nlohmann::json body = nlohmann::json::parse(res->body, nullptr, false);
    std::string message = res->body;
    if (body.is_object() && body.contains("error") && body["error"].is_object()) {
      message = body["error"].value("code", "") + ": " + body["error"].value("message", "");
    }
    std::fprintf(stderr, "report: HTTP %d %s\n", res->status, message.c_str());
    return 1;
  }
  if (args.format == "json") {
    nlohmann::json body = nlohmann::json::parse(res->body, nullptr, false);
    if (!body.is_discarded()) {
      std::printf("%s\n",
                  body.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      return 0;
    }
  }
  std::fwrite(res->body.data(), 1, res->body.size(), stdout);
  return 0;
}

}  // namespace inferscope
