// ChatTemplate: turns an OpenAI-style conversation into prompt token ids the way the model's chat
// template does. Jinja is not executed: a model directory's template is recognised as one of the
// families written here (as llama.cpp's server does), and an unrecognised one disables chat with a
// reason rather than prompting the model in a format it was not trained on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/tokenizer.h"

namespace moe {

struct ChatMessage {
  std::string role;  // "system" (or "developer"), "user", "assistant"
  std::string content;
};

enum class ChatTemplateKind {
  // Mistral's "v1" template, the one Mixtral-8x7B-Instruct-v0.1 ships:
  //   <s> [INST] {system}\n\n{user} [/INST] {assistant}</s> [INST] {user} [/INST]
  kMistralV1,
  kNone,  // chat is off: the model gave a template we do not know
};

class ChatTemplate {
 public:
  // --chat-template: "auto" reads MODEL_DIR/tokenizer_config.json's "chat_template" (absent file
  // or field: Mistral v1, what Mixtral-Instruct uses); "mistral-v1" forces it. An unknown template
  // gives kNone with the reason in disabled_reason(), not an error: the rest of the server works.
  // Errors: an unknown flag value, an unreadable or malformed tokenizer_config.json.
  static absl::StatusOr<ChatTemplate> ForModel(const std::string& flag, const std::string& model_dir);
  static ChatTemplate MistralV1() { return ChatTemplate(ChatTemplateKind::kMistralV1, ""); }
  // Mixtral-8x7B-Instruct-v0.1's Jinja text of that template, as moe-export-tokenizer writes it
  // into a tokenizer_config.json (ForModel recognises it).
  static const std::string& MistralV1Jinja();

  ChatTemplateKind kind() const { return kind_; }
  const char* name() const;                                  // "mistral-v1", "none"
  const std::string& disabled_reason() const { return disabled_reason_; }

  // The prompt ids, BOS first, ending where the assistant's reply begins. Each text span between
  // BOS/EOS is encoded on its own, as Hugging Face tokenizes the rendered template (special tokens
  // split out first, a dummy-prefix space per span); message text is never read as a special
  // token, so "</s>" typed by a user stays text. INVALID_ARGUMENT (naming "messages") for an empty
  // conversation, roles out of the template's order, or a last message that is not the user's.
  absl::StatusOr<std::vector<int32_t>> Render(const std::vector<ChatMessage>& messages,
                                              const Tokenizer& tokenizer) const;

 private:
  ChatTemplate(ChatTemplateKind kind, std::string disabled_reason)
      : kind_(kind), disabled_reason_(std::move(disabled_reason)) {}

  ChatTemplateKind kind_;
  std::string disabled_reason_;
};

}  // namespace moe
