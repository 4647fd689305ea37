// The /v1/workflows handlers (docs/WORKFLOWS.md): create, list, get, and the API transitions
// approve, reject and applied.

#include <algorithm>
#include <cctype>
#include <initializer_list>

#include "query/handlers.h"
#include "workflows/workflow.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr std::string_view kValidationError = "VALIDATION_ERROR";

ApiReply NoWorkflows(const ApiContext& ctx) {
  return ErrorReply(*ctx.clock, 500, "INTERNAL_ERROR", "this query node has no workflow registry");
}

// A registry failure as a reply: NotFound 404, FailedPrecondition 409 (CONFLICT), InvalidArgument
// 400 naming the field, Unavailable (the registry is full) 503.
ApiReply RegistryError(const ApiContext& ctx, const Status& st) {
  if (st.code() == Status::Code::kUnavailable) {
    return ErrorReply(*ctx.clock, 503, "UNAVAILABLE", st.message());
  }
  if (st.code() == Status::Code::kInvalidArgument) {
    const std::string& m = st.message();
    const size_t colon = m.find(':');
    json details = json::object();
    if (colon != std::string::npos && colon < 64 && m.find(' ') > colon) {
      details["field"] = m.substr(0, colon);
    }
    return ErrorReply(*ctx.clock, 400, kValidationError, m, std::move(details));
  }
  return StatusReply(*ctx.clock, st);
}

// The body of a transition: empty, or a JSON object with only `fields` (strings, except
// applied_at). Sets *error and returns nullopt on a problem.
std::optional<json> TransitionBody(const ApiContext& ctx, const ApiRequest& req,
                                   std::initializer_list<std::string_view> fields,
                                   ApiReply* error) {
  if (std::all_of(req.body.begin(), req.body.end(),
                  [](char c) { return std::isspace(static_cast<unsigned char>(c)); })) {
    return json::object();
  }
  json body;
  if (std::optional<ApiReply> refused = ParseJsonBody(ctx, req.body, &body)) {
    *error = std::move(*refused);
    return std::nullopt;
  }
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (std::find(fields.begin(), fields.end(), it.key()) == fields.end()) {
      *error = BadField(ctx, it.key(), "unknown field");
      return std::nullopt;
    }
    if (it.key() != "applied_at" && !it->is_string()) {
      *error = BadField(ctx, it.key(), "expected a string");
      return std::nullopt;
    }
    if (it->is_string() && it->get<std::string>().size() > kMaxWorkflowTextBytes) {
      *error = BadField(ctx, it.key(), "too long");
      return std::nullopt;
    }
  }
  return body;
}

ApiReply WorkflowReply(const Workflow& w, int status = 200) {
  ApiReply reply;
  reply.status = status;
  reply.body = WorkflowToJson(w);
  return reply;
}

}  // namespace

ApiReply HandleCreateWorkflow(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.workflows == nullptr) return NoWorkflows(ctx);
  json body;
  if (std::optional<ApiReply> error = ParseJsonBody(ctx, req.body, &body)) return *error;
  Result<Workflow> w = WorkflowFromRequest(body);
  if (!w.ok()) return RegistryError(ctx, w.status());
  Result<Workflow> created = ctx.workflows->Create(std::move(w).value());
  if (!created.ok()) return RegistryError(ctx, created.status());
  return WorkflowReply(*created, 201);
}

ApiReply HandleListWorkflows(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.workflows == nullptr) return NoWorkflows(ctx);
  std::optional<WorkflowState> status;
  if (std::optional<std::string> text = req.Param("status")) {
    std::string upper = *text;
    std::transform(upper.begin(), upper.end(), upper.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    status = ParseWorkflowState(upper);
    if (!status) {
      return ErrorReply(*ctx.clock, 400, kValidationError,
                        "status must be one of PENDING_APPROVAL, APPROVED, APPLIED, COMPLETED, "
                        "ROLLED_BACK, FAILED, REJECTED",
                        {{"parameter", "status"}, {"value", text->substr(0, 64)}});
    }
  }
  std::optional<std::string> instance = req.Param("instance_id");
  ApiReply error;
  std::optional<PageRequest> page = ParsePage(ctx, req, &error);
  if (!page) return error;
  json list = json::array();
  std::string last_id;
  bool more = false;
  for (const Workflow& w : ctx.workflows->List()) {  // by id
    if (page->after && w.id <= *page->after) continue;
    if (status && w.state != *status) continue;
    if (instance && w.instance != *instance) continue;
    if (list.size() == page->limit) {
      more = true;
      break;
    }
    last_id = w.id;
    list.push_back(WorkflowToJson(w));
  }
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())},
                {"workflows", std::move(list)},
                {"next_cursor", more ? json(EncodeCursor(last_id)) : json()}};
  return reply;
}

ApiReply HandleGetWorkflow(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.workflows == nullptr) return NoWorkflows(ctx);
  const std::string& id = req.path_params.at(0);
  std::optional<Workflow> w = ctx.workflows->Get(id);
  if (!w) {
    return ErrorReply(*ctx.clock, 404, "NOT_FOUND", "no workflow '" + id.substr(0, 64) + "'",
                      {{"id", id.substr(0, 64)}});
  }
  return WorkflowReply(*w);
}

ApiReply HandleApproveWorkflow(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.workflows == nullptr) return NoWorkflows(ctx);
  ApiReply error;
  std::optional<json> body = TransitionBody(ctx, req, {"by"}, &error);
  if (!body) return error;
  Result<Workflow> w = ctx.workflows->Approve(req.path_params.at(0), body->value("by", ""));
  if (!w.ok()) return RegistryError(ctx, w.status());
  return WorkflowReply(*w);
}

ApiReply HandleRejectWorkflow(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.workflows == nullptr) return NoWorkflows(ctx);
  ApiReply error;
  std::optional<json> body = TransitionBody(ctx, req, {"by", "reason"}, &error);
  if (!body) return error;
  Result<Workflow> w = ctx.workflows->Reject(req.path_params.at(0), body->value("by", ""),
                                             body->value("reason", ""));
  if (!w.ok()) return RegistryError(ctx, w.status());
  return WorkflowReply(*w);
}

ApiReply HandleWorkflowApplied(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.workflows == nullptr) return NoWorkflows(ctx);
  ApiReply error;
  std::optional<json> body = TransitionBody(ctx, req, {"by", "applied_at"}, &error);
  if (!body) return error;
  int64_t applied_at = ctx.clock->NowMs();
  if (auto it = body->find("applied_at"); it != body->end()) {
    std::optional<int64_t> ms;
    if (it->is_number_integer()) {
      ms = it->get<int64_t>();
    } else if (it->is_string()) {
      ms = ParseTimeMs(it->get<std::string>());
    }
    if (!ms || *ms <= 0) {
      return BadField(ctx, "applied_at", "expected epoch milliseconds or an RFC 3339 time");
    }
    applied_at = *ms;
  }
  Result<Workflow> w =
      ctx.workflows->MarkApplied(req.path_params.at(0), applied_at, body->value("by", ""));
  if (!w.ok()) return RegistryError(ctx, w.status());
  return WorkflowReply(*w);
}

}  // namespace inferscope
