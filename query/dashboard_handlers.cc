// GET / and GET /ui/{file}: the dashboard's static files (query/dashboard/), served from the bytes
// embedded at build time (query/dashboard_assets.h). The files hold no data: the page reads the
// API from the browser, so they are served without a token.

#include <string>
#include <string_view>

#include "query/dashboard_assets.h"
#include "query/handlers.h"

namespace inferscope {
namespace {

std::string_view ContentType(std::string_view path) {
  auto ends_with = [&](std::string_view suffix) {
    return path.size() >= suffix.size() && path.substr(path.size() - suffix.size()) == suffix;
  };
  if (ends_with(".html")) return "text/html; charset=utf-8";
  if (ends_with(".js")) return "text/javascript; charset=utf-8";
  if (ends_with(".css")) return "text/css; charset=utf-8";
  return "text/plain; charset=utf-8";
}

ApiReply Serve(const ApiContext& ctx, std::string_view path) {
  for (const EmbeddedFile& file : EmbeddedFiles()) {
    if (file.path != path) continue;
    ApiReply reply;
    reply.text = std::string(file.data);
    reply.content_type = std::string(ContentType(path));
    // Scripts and data only from this origin; uPlot sizes its elements through style attributes.
    reply.headers = {{"Content-Security-Policy",
                      "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                      "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"},
                     {"X-Content-Type-Options", "nosniff"},
                     {"Cache-Control", "no-cache"}};
    return reply;
  }
  return ErrorReply(*ctx.clock, 404, "NOT_FOUND",
                    "no dashboard file '" + std::string(path.substr(0, 128)) + "'",
                    {{"path", "/ui/" + std::string(path.substr(0, 128))}});
}

}  // namespace

ApiReply HandleDashboardIndex(const ApiContext& ctx, const ApiRequest&) {
  return Serve(ctx, "index.html");
}

ApiReply HandleDashboardFile(const ApiContext& ctx, const ApiRequest& req) {
  return Serve(ctx, req.path_params.empty() ? std::string_view() : req.path_params[0]);
}

}  // namespace inferscope
