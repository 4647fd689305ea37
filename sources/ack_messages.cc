#include "sources/ack_messages.h"

#include <exception>

#include <msgpack.hpp>

#include "pipeline/names.h"
#include "pipeline/utf8.h"

namespace inferscope {
namespace {

// Small control maps only: a few keys, short strings. The limits keep a hostile payload (a 5-byte
// array32 header claiming 4 G elements) from making the parser allocate for it.
msgpack::unpack_limit Limits() {
  return msgpack::unpack_limit(/*array=*/64, /*map=*/64, /*str=*/1024, /*bin=*/1024,
                               /*ext=*/1024, /*depth=*/8);
}

// The top-level map of `payload`; false (with `*error`) when it is not one msgpack map.
bool Unpack(std::string_view payload, msgpack::object_handle* handle, std::string* error) {
  try {
    size_t offset = 0;
    *handle = msgpack::unpack(payload.data(), payload.size(), offset, nullptr, nullptr, Limits());
    if (offset != payload.size()) {
      *error = "trailing bytes after the msgpack value";
      return false;
    }
  } catch (const std::exception& e) {
    *error = std::string("not msgpack: ") + e.what();
    return false;
  }
  if (handle->get().type != msgpack::type::MAP) {
    *error = "not a msgpack map";
    return false;
  }
  return true;
}

// The value of string key `key` in `map` (the last one if repeated), or null.
const msgpack::object* Find(const msgpack::object& map, std::string_view key) {
  const msgpack::object* found = nullptr;
  for (const msgpack::object_kv& kv : map.via.map) {
    if (kv.key.type == msgpack::type::STR &&
        std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key) {
      found = &kv.val;
    }
  }
  return found;
}

bool IsUint(const msgpack::object* o) {
  return o != nullptr && o->type == msgpack::type::POSITIVE_INTEGER;
}

// Checks "v" is 1 and reads "pub" (1..kMaxNameBytes bytes) and "inc" (optional uint).
Status ReadCommon(const msgpack::object& map, std::string* publisher, uint64_t* incarnation) {
  const msgpack::object* v = Find(map, "v");
  if (!IsUint(v) || v->via.u64 != 1) {
    return Status::InvalidArgument("\"v\" missing or not 1");
  }
  const msgpack::object* pub = Find(map, "pub");
  if (pub == nullptr || pub->type != msgpack::type::STR || pub->via.str.size == 0 ||
      pub->via.str.size > kMaxNameBytes) {
    return Status::InvalidArgument("\"pub\" missing or not a string of 1.." +
                                   std::to_string(kMaxNameBytes) + " bytes");
  }
  if (!IsValidUtf8(std::string_view(pub->via.str.ptr, pub->via.str.size))) {
    return Status::InvalidArgument("\"pub\" is not valid UTF-8");
  }
  publisher->assign(pub->via.str.ptr, pub->via.str.size);
  const msgpack::object* inc = Find(map, "inc");
  if (inc != nullptr && !IsUint(inc)) {
    return Status::InvalidArgument("\"inc\" not an unsigned integer");
  }
  *incarnation = inc != nullptr ? inc->via.u64 : 0;
  return Status::Ok();
}

// An optional uint field: absent or nil → nullopt; another type → error.
Status ReadOptionalUint(const msgpack::object& map, std::string_view key,
                        std::optional<uint64_t>* out) {
  const msgpack::object* o = Find(map, key);
  if (o == nullptr || o->type == msgpack::type::NIL) {
    out->reset();
    return Status::Ok();
  }
  if (!IsUint(o)) {
    std::string message(1, '"');  // (built up: GCC 12 warns wrongly on "literal" + std::string&&)
    message.append(key);
    message.append("\" not an unsigned integer or nil");
    return Status::InvalidArgument(message);
  }
  *out = o->via.u64;
  return Status::Ok();
}

template <typename Packer>
void PackOptional(Packer& pk, std::string_view key, const std::optional<uint64_t>& v) {
  pk.pack(key);
  if (v) {
    pk.pack(*v);
  } else {
    pk.pack_nil();
  }
}

}  // namespace

Result<HelloMessage> ParseHello(std::string_view payload) {
  msgpack::object_handle handle;
  std::string error;
  if (!Unpack(payload, &handle, &error)) return Status::InvalidArgument("hello: " + error);
  HelloMessage hello;
  Status st = ReadCommon(handle.get(), &hello.publisher, &hello.incarnation);
  if (!st.ok()) return st.WithContext("hello");
  return hello;
}

Result<AckMessage> ParseAck(std::string_view payload) {
  msgpack::object_handle handle;
  std::string error;
  if (!Unpack(payload, &handle, &error)) return Status::InvalidArgument("ack: " + error);
  const msgpack::object& map = handle.get();
  AckMessage ack;
  Status st = ReadCommon(map, &ack.publisher, &ack.incarnation);
  if (st.ok()) st = ReadOptionalUint(map, "ack", &ack.ack);
  if (st.ok()) st = ReadOptionalUint(map, "next", &ack.next);
  if (st.ok()) st = ReadOptionalUint(map, "latest", &ack.latest);
  if (!st.ok()) return st.WithContext("ack");
  return ack;
}

Result<NackMessage> ParseNack(std::string_view payload) {
  msgpack::object_handle handle;
  std::string error;
  if (!Unpack(payload, &handle, &error)) return Status::InvalidArgument("nack: " + error);
  const msgpack::object& map = handle.get();
  NackMessage nack;
  Status st = ReadCommon(map, &nack.publisher, &nack.incarnation);
  if (!st.ok()) return st.WithContext("nack");
  const msgpack::object* seq = Find(map, "seq");
  if (!IsUint(seq)) return Status::InvalidArgument("nack: \"seq\" missing or not unsigned");
  nack.seq = seq->via.u64;
  const msgpack::object* reason = Find(map, "reason");
  if (reason == nullptr || reason->type != msgpack::type::STR) {
    return Status::InvalidArgument("nack: \"reason\" missing or not a string");
  }
  nack.reason.assign(reason->via.str.ptr, reason->via.str.size);
  const msgpack::object* consumed = Find(map, "consumed");
  if (consumed != nullptr && consumed->type != msgpack::type::BOOLEAN) {
    return Status::InvalidArgument("nack: \"consumed\" not a bool");
  }
  nack.consumed = consumed != nullptr && consumed->via.boolean;
  st = ReadOptionalUint(map, "latest", &nack.latest);
  if (!st.ok()) return st.WithContext("nack");
  return nack;
}

std::string EncodeHello(const HelloMessage& hello) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(3);
  pk.pack("v");
  pk.pack(1);
  pk.pack("pub");
  pk.pack(hello.publisher);
  pk.pack("inc");
  pk.pack(hello.incarnation);
  return std::string(buf.data(), buf.size());
}

std::string EncodeAck(const AckMessage& ack) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(6);
  pk.pack("v");
  pk.pack(1);
  pk.pack("pub");
  pk.pack(ack.publisher);
  pk.pack("inc");
  pk.pack(ack.incarnation);
  PackOptional(pk, "ack", ack.ack);
  PackOptional(pk, "next", ack.next);
  PackOptional(pk, "latest", ack.latest);
  return std::string(buf.data(), buf.size());
}

std::string EncodeNack(const NackMessage& nack) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(7);
  pk.pack("v");
  pk.pack(1);
  pk.pack("pub");
  pk.pack(nack.publisher);
  pk.pack("inc");
  pk.pack(nack.incarnation);
  pk.pack("seq");
  pk.pack(nack.seq);
  pk.pack("reason");
  pk.pack(nack.reason);
  pk.pack("consumed");
  pk.pack(nack.consumed);
  PackOptional(pk, "latest", nack.latest);
  return std::string(buf.data(), buf.size());
}

}  // namespace inferscope
