#include "coordinator/server/chat_template.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

void Append(const std::vector<int>& ids, std::vector<int32_t>* out) { out->insert(out->end(), ids.begin(), ids.end()); }

// Mistral's v1 template, by the line its system message is rendered with (llama.cpp recognises the
// family by the same string).
bool IsMistralV1(const std::string& jinja) { return absl::StrContains(jinja, "' [INST] ' + system_message"); }

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::ForModel(const std::string& flag, const std::string& model_dir) {
  if (flag == "mistral-v1") return MistralV1();
  if (flag != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("--chat-template must be auto or mistral-v1, got \"", flag, "\""));
  }
  const std::string path = model_dir + "/tokenizer_config.json";
  std::ifstream in(path);
  if (!in) return MistralV1();  // no tokenizer config: the Mixtral-Instruct default
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json config = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return MistralV1();
  if (!it->is_string()) {
    // A list of named templates (tool use, RAG): the "default" one is what chat uses.
    if (it->is_array()) {
      for (const nlohmann::json& t : *it) {
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") &&
            t["template"].is_string()) {
          if (IsMistralV1(t["template"].get<std::string>())) return MistralV1();
        }
      }
    }
    return ChatTemplate(ChatTemplateKind::kNone,
                        absl::StrCat(path, "'s chat_template is not a Mistral v1 template; give "
                                           "--chat-template mistral-v1 to use that one anyway"));
  }
  if (IsMistralV1(it->get<std::string>())) return MistralV1();
  return ChatTemplate(ChatTemplateKind::kNone,
                      absl::StrCat(path, " has a chat_template this server does not know (only Mistral v1, ",
                                   "Mixtral-Instruct's, is built in); give --chat-template mistral-v1 ",
                                   "to use that one anyway"));
}

const std::string& ChatTemplate::MistralV1Jinja() {
  static const std::string* const kJinja =
      new std::string(R"({%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
)");
  return *kJinja;
}

const char* ChatTemplate::name() const { return kind_ == ChatTemplateKind::kMistralV1 ? "mistral-v1" : "none"; }

absl::StatusOr<std::vector<int32_t>> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                          const Tokenizer& tokenizer) const {
  if (kind_ == ChatTemplateKind::kNone) return absl::FailedPreconditionError(disabled_reason_);
  if (messages.empty()) return absl::InvalidArgumentError("messages is empty");
  // An optional system message first (OpenAI's newer name for it is "developer"), then user and
  // assistant strictly alternating from the user, as the template demands.
  size_t first = 0;
  const bool has_system = messages[0].role == "system" || messages[0].role == "developer";
  if (has_system) first = 1;
  if (first == messages.size()) return absl::InvalidArgumentError("messages holds a system message and no user message");
  std::vector<int32_t> ids = {tokenizer.bos_id()};
  std::string span;  // text since the last special token
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool user_turn = (i - first) % 2 == 0;
    if (m.role != (user_turn ? "user" : "assistant")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i, "] has role \"", m.role, "\" where the template needs \"",
          user_turn ? "user" : "assistant",
          "\": after an optional system message, roles alternate user, assistant, user, ..."));
    }
    if (user_turn) {
      absl::StrAppend(&span, " [INST] ", i == first && has_system ? messages[0].content + "\n\n" : "", m.content,
                      " [/INST]");
    } else {
      absl::StrAppend(&span, " ", m.content);
      Append(tokenizer.Encode(span, /*add_bos=*/false), &ids);
      ids.push_back(tokenizer.eos_id());
      span.clear();
    }
  }
  if (messages.back().role != "user") {
    return absl::InvalidArgumentError("the last of messages must be the user's (the reply is the assistant's)");
  }
  Append(tokenizer.Encode(span, /*add_bos=*/false), &ids);
  return ids;
}

}  // namespace moe
