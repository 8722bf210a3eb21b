#include "service/request_validation.h"

#include "absl/strings/str_cat.h"

namespace kvsession::service {
namespace {

absl::Status Invalid(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

absl::Status ValidateCommon(int32_t max_tokens,
                            const google::protobuf::RepeatedPtrField<std::string>& stop,
                            const v1::SamplingParams& sampling,
                            const ValidationLimits& limits) {
  if (max_tokens < 0 || max_tokens > limits.max_tokens) {
    return Invalid("max_tokens", absl::StrCat(max_tokens, " is outside [0, ",
                                              limits.max_tokens, "]"));
  }
  if (stop.size() > limits.max_stop_strings) {
    return Invalid("stop", absl::StrCat(stop.size(), " strings, at most ",
                                        limits.max_stop_strings));
  }
  for (int i = 0; i < stop.size(); ++i) {
    const std::string& s = stop[i];
    if (s.empty() || static_cast<int32_t>(s.size()) > limits.max_stop_bytes ||
        !IsValidUtf8(s)) {
      return Invalid(absl::StrCat("stop[", i, "]"),
                     absl::StrCat("must be 1-", limits.max_stop_bytes,
                                  " bytes of valid UTF-8"));
    }
  }
  return ToSamplingParams(sampling).status();
}

}  // namespace

// Hand-written: Debian 12's Abseil has no UTF-8 validator, and this one is
// a dozen lines (rejects overlongs, surrogates and code points > U+10FFFF).
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (int k = 1; k <= n; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
        (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

absl::Status ValidateSessionId(std::string_view id, bool required) {
  if (id.empty()) {
    return required ? Invalid("session_id", "is required") : absl::OkStatus();
  }
  if (id.size() > 128) {
    return Invalid("session_id",
                   absl::StrCat("is ", id.size(), " characters, at most 128"));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == ':' || c == '-';
    if (!ok) {
      return Invalid("session_id",
                     "may contain only letters, digits and . _ : -");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateChatRequest(const v1::ChatRequest& r,
                                 const ValidationLimits& limits) {
  if (absl::Status s = ValidateSessionId(r.session_id(), true); !s.ok()) {
    return s;
  }
  if (r.messages_size() == 0) return Invalid("messages", "must not be empty");
  if (r.messages_size() > limits.max_messages) {
    return Invalid("messages", absl::StrCat(r.messages_size(), " messages, at most ",
                                            limits.max_messages));
  }
  if (!v1::HistoryMode_IsValid(r.mode())) {
    return Invalid("mode", absl::StrCat("unknown value ", r.mode()));
  }
  int64_t total = 0;
  for (int i = 0; i < r.messages_size(); ++i) {
    const v1::Message& m = r.messages(i);
    const std::string field = absl::StrCat("messages[", i, "]");
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant") {
      return Invalid(field + ".role",
                     absl::StrCat("'", m.role().substr(0, 32),
                                  "' is not system, user or assistant"));
    }
    if (static_cast<int32_t>(m.content().size()) > limits.max_message_bytes) {
      return Invalid(field + ".content",
                     absl::StrCat(m.content().size(), " bytes, at most ",
                                  limits.max_message_bytes));
    }
    if (!IsValidUtf8(m.content())) {
      return Invalid(field + ".content", "is not valid UTF-8");
    }
    total += static_cast<int64_t>(m.content().size());
  }
  if (total > limits.max_request_bytes) {
    return Invalid("messages", absl::StrCat(total, " bytes of content, at most ",
                                            limits.max_request_bytes));
  }
  return ValidateCommon(r.max_tokens(), r.stop(), r.sampling(), limits);
}

absl::Status ValidateCompleteRequest(const v1::CompleteRequest& r,
                                     const ValidationLimits& limits) {
  if (absl::Status s = ValidateSessionId(r.session_id(), false); !s.ok()) {
    return s;
  }
  switch (r.prompt_case()) {
    case v1::CompleteRequest::kText:
      if (r.text().empty()) return Invalid("text", "must not be empty");
      if (static_cast<int32_t>(r.text().size()) > limits.max_request_bytes) {
        return Invalid("text", absl::StrCat(r.text().size(), " bytes, at most ",
                                            limits.max_request_bytes));
      }
      if (!IsValidUtf8(r.text())) return Invalid("text", "is not valid UTF-8");
      break;
    case v1::CompleteRequest::kTokens:
      if (r.tokens().ids_size() == 0) {
        return Invalid("tokens.ids", "must not be empty");
      }
      for (int i = 0; i < r.tokens().ids_size(); ++i) {
        const int32_t id = r.tokens().ids(i);
        if (id < 0 || id >= limits.vocab_size) {
          return Invalid(absl::StrCat("tokens.ids[", i, "]"),
                         absl::StrCat(id, " is outside the vocab [0, ",
                                      limits.vocab_size, ")"));
        }
      }
      break;
    default:
      return Invalid("prompt", "set text or tokens");
  }
  return ValidateCommon(r.max_tokens(), r.stop(), r.sampling(), limits);
}

absl::StatusOr<runtime::SamplingParams> ToSamplingParams(
    const v1::SamplingParams& p) {
  runtime::SamplingParams out;
  out.temperature = p.temperature();
  out.top_k = p.top_k();
  out.top_p = p.top_p() == 0.0f ? 1.0f : p.top_p();
  out.min_p = p.min_p();
  out.repetition_penalty =
      p.repetition_penalty() == 0.0f ? 1.0f : p.repetition_penalty();
  out.seed = p.seed();
  if (absl::Status s = runtime::ValidateSamplingParams(out); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.", s.message()));
  }
  return out;
}

}  // namespace kvsession::service
