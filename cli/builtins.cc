#include "cli/builtins.h"

#include "operators/register.h"
#include "sinks/register.h"
#include "sources/register.h"
#include "state/register.h"

namespace inferscope {

void RegisterBuiltins(Registry& registry) {
  RegisterSources(registry);
  RegisterOperators(registry);
  RegisterSinks(registry);
  RegisterStateSinks(registry);
}

}  // namespace inferscope
