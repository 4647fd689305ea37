#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/operator.h"
#include "pipeline/sink.h"
#include "pipeline/source.h"
#include "pipeline/status.h"

namespace inferscope {

// Registry creates sources, operators and sinks by the `type` name a topology gives them.
//
// Registration is explicit: RegisterBuiltins() (cli/builtins.cc) calls each module's Register*()
// once at start-up; there is no static self-registration. Each registered class carries kName and
// kDescription, and the registry can list itself (served at /v1/capabilities).
// Concurrency: register before use; afterwards lookups are read-only and thread-safe.
class Registry {
 public:
  template <typename T>
  using Factory = std::function<Result<std::unique_ptr<T>>(const ConfigNode& options)>;

  struct Entry {
    std::string kind;  // "source", "operator" or "sink"
    std::string name;
    std::string description;
  };

  // Registers class T under T::kName with T::kDescription; T must have
  // `static Result<std::unique_ptr<T>> Create(const ConfigNode& options)`.
  template <typename T>
  void AddSource() {
    AddSource(std::string(T::kName), std::string(T::kDescription), &CreateAs<Source, T>);
  }
  template <typename T>
  void AddOperator() {
    AddOperator(std::string(T::kName), std::string(T::kDescription), &CreateAs<Operator, T>);
  }
  template <typename T>
  void AddSink() {
    AddSink(std::string(T::kName), std::string(T::kDescription), &CreateAs<Sink, T>);
  }

  void AddSource(std::string name, std::string description, Factory<Source> factory);
  void AddOperator(std::string name, std::string description, Factory<Operator> factory);
  void AddSink(std::string name, std::string description, Factory<Sink> factory);

  bool HasSource(std::string_view name) const { return sources_.count(name) > 0; }
  bool HasOperator(std::string_view name) const { return operators_.count(name) > 0; }
  bool HasSink(std::string_view name) const { return sinks_.count(name) > 0; }

  // NotFound when `type` is not registered; otherwise whatever the factory returns.
  Result<std::unique_ptr<Source>> CreateSource(std::string_view type,
                                               const ConfigNode& options) const;
  Result<std::unique_ptr<Operator>> CreateOperator(std::string_view type,
                                                   const ConfigNode& options) const;
  Result<std::unique_ptr<Sink>> CreateSink(std::string_view type, const ConfigNode& options) const;

  // Every registered type, sources first, each kind sorted by name.
  std::vector<Entry> List() const;
  // Comma-separated names of one kind, for error messages.
  std::string Names(std::string_view kind) const;

 private:
  template <typename Base, typename T>
  static Result<std::unique_ptr<Base>> CreateAs(const ConfigNode& options) {
    Result<std::unique_ptr<T>> made = T::Create(options);
    if (!made.ok()) return made.status();
    return std::unique_ptr<Base>(std::move(made).value());
  }

  template <typename T>
  struct Registered {
    std::string description;
    Factory<T> factory;
  };
  std::map<std::string, Registered<Source>, std::less<>> sources_;
  std::map<std::string, Registered<Operator>, std::less<>> operators_;
  std::map<std::string, Registered<Sink>, std::less<>> sinks_;
};

}  // namespace inferscope
