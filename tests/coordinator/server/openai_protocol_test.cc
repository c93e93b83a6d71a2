// The OpenAI API's JSON (coordinator/server/openai_protocol.h) and the chat template, without HTTP:
// every field that maps to ours, every one refused by name, the error shape, the response and
// chunk shapes; the chat template's token ids against Hugging Face's rendering of
// Mixtral-Instruct's.
#include "coordinator/server/openai_protocol.h"

#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "coordinator/server/chat_template.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using nlohmann::json;
using openai::Endpoint;

const Tokenizer& Tok() {
  static const Tokenizer* tokenizer = Tokenizer::Load(MOE_TOKENIZER_PATH).value().release();
  return *tokenizer;
}

MixtralConfig Config() {
  MixtralConfig c;
  c.vocab_size = 32000;
  c.max_position_embeddings = 128;
  c.eos_token_ids = {2};
  return c;
}

struct Fixture {
  MixtralConfig config = Config();
  openai::ServedModel model;
  Fixture() {
    model.id = "tiny";
    model.tokenizer = &Tok();
    model.config = &config;
    model.limits.max_tokens = 100;
    model.max_prompt_bytes = 64;
    model.created = 1700000000;
  }
};

absl::StatusOr<openai::ParsedRequest> Parse(Endpoint e, const json& body) {
  static Fixture* f = new Fixture();
  return openai::ParseRequest(e, body.dump(), f->model);
}

// The OpenAI error a refused body gets: "STATUS param: message".
std::string Refusal(Endpoint e, const std::string& body) {
  static Fixture* f = new Fixture();
  absl::StatusOr<openai::ParsedRequest> r = openai::ParseRequest(e, body, f->model);
  if (r.ok()) return "";
  const openai::ApiError err = openai::ErrorFromStatus(r.status());
  return absl::StrCat(err.http_status, " ", err.param, ": ", err.message);
}

TEST(OpenAiParse, CompletionFieldsMapToTheRequest) {
  auto r = Parse(Endpoint::kCompletions, {{"model", "tiny"},
                                          {"prompt", "Hello world"},
                                          {"max_tokens", 5},
                                          {"temperature", 0.5},
                                          {"top_p", 0.9},
                                          {"top_k", 40},
                                          {"seed", 7},
                                          {"stop", "\n"},
                                          {"stream", true},
                                          {"stream_options", {{"include_usage", true}}},
                                          {"label", "eval:x"},
                                          {"user", "someone"},
                                          {"n", 1},
                                          {"logprobs", nullptr}});
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<int32_t> want;
  for (int id : Tok().Encode("Hello world", /*add_bos=*/true)) want.push_back(id);
  EXPECT_EQ(r->request.prompt, want);  // BOS first, as the gRPC text prompt
  EXPECT_EQ(r->request.max_tokens, 5);
  EXPECT_FLOAT_EQ(r->request.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r->request.sampling.top_p, 0.9f);
  EXPECT_EQ(r->request.sampling.top_k, 40);
  EXPECT_EQ(r->request.sampling.seed, 7u);
  EXPECT_EQ(r->request.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(r->request.label, "eval:x");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
}

TEST(OpenAiParse, OpenAiDefaults) {
  auto r = Parse(Endpoint::kCompletions, {{"prompt", "Hi"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->request.max_tokens, 16);
  EXPECT_FLOAT_EQ(r->request.sampling.temperature, 1.0f);
  EXPECT_FLOAT_EQ(r->request.sampling.top_p, 1.0f);
  EXPECT_EQ(r->request.sampling.top_k, 0);
  EXPECT_FALSE(r->stream);
  // Without a seed, two requests sample afresh (a seed of 64 random bits each).
  auto again = Parse(Endpoint::kCompletions, {{"prompt", "Hi"}});
  EXPECT_NE(r->request.sampling.seed, again->request.sampling.seed);
  // Chat without max_tokens: the rest of the context, within the server's limit.
  auto chat = Parse(Endpoint::kChat, {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.max_tokens, 100);
  auto chat_max = Parse(Endpoint::kChat, {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                                          {"max_completion_tokens", 9}});
  EXPECT_EQ(chat_max->request.max_tokens, 9);
  // vLLM's "no top-k" (-1) is ours (0); a float that is an integer is one.
  auto vllm = Parse(Endpoint::kCompletions, {{"prompt", "Hi"}, {"top_k", -1}, {"max_tokens", 3.0}});
  ASSERT_TRUE(vllm.ok()) << vllm.status();
  EXPECT_EQ(vllm->request.sampling.top_k, 0);
  EXPECT_EQ(vllm->request.max_tokens, 3);
}

TEST(OpenAiParse, PenaltiesAndEndingExtensions) {
  auto r = Parse(Endpoint::kCompletions, {{"prompt", "Hi"},
                                          {"max_tokens", 8},
                                          {"presence_penalty", 0.5},
                                          {"frequency_penalty", -1.25},
                                          {"repetition_penalty", 1.1},
                                          {"stop_token_ids", {13, 2}},
                                          {"min_tokens", 3},
                                          {"ignore_eos", true},
                                          {"min_p", 0},
                                          {"skip_special_tokens", true}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->request.sampling.presence_penalty, 0.5f);
  EXPECT_EQ(r->request.sampling.frequency_penalty, -1.25f);
  EXPECT_EQ(r->request.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(r->request.stop_token_ids, (std::vector<int32_t>{13, 2}));
  EXPECT_EQ(r->request.min_tokens, 3);
  EXPECT_TRUE(r->request.ignore_eos);
  auto plain = Parse(Endpoint::kChat, {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->request.sampling.has_penalties());
  EXPECT_EQ(plain->request.min_tokens, 0);
  EXPECT_FALSE(plain->request.ignore_eos);
}

TEST(OpenAiParse, PromptForms) {
  auto ids = Parse(Endpoint::kCompletions, {{"prompt", {1, 15043, 3186}}});
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->request.prompt, (std::vector<int32_t>{1, 15043, 3186}));
  auto nested = Parse(Endpoint::kCompletions, {{"prompt", {{1, 15043}}}});
  ASSERT_TRUE(nested.ok());
  EXPECT_EQ(nested->request.prompt, (std::vector<int32_t>{1, 15043}));
  auto one = Parse(Endpoint::kCompletions, {{"prompt", {"Hi"}}});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->request.prompt, Parse(Endpoint::kCompletions, {{"prompt", "Hi"}})->request.prompt);
  EXPECT_TRUE(one->more_prompts.empty());
  // Several prompts: each a sequence of its own, with the same settings.
  auto several = Parse(Endpoint::kCompletions,
                       {{"prompt", json::array({json("Hi"), json({1, 2, 3}), json("Hi")})}});
  ASSERT_TRUE(several.ok()) << several.status();
  EXPECT_EQ(several->request.prompt, one->request.prompt);
  ASSERT_EQ(several->more_prompts.size(), 2u);
  EXPECT_EQ(several->more_prompts[0], (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(several->more_prompts[1], one->request.prompt);
  EXPECT_EQ(several->n, 1);
  auto n =
      Parse(Endpoint::kCompletions, {{"prompt", json::array({json("Hi"), json("Hi")})}, {"n", 32}});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->n, 32);
}

TEST(OpenAiParse, LogprobsAndEcho) {
  auto plain = Parse(Endpoint::kCompletions, {{"prompt", "Hi"}});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->request.logprobs, -1);
  EXPECT_FALSE(plain->echo || plain->request.prompt_logprobs);
  auto lm_eval = Parse(Endpoint::kCompletions, {{"prompt", {{1, 15043}, {1, 3186}}},
                                                {"max_tokens", 1},
                                                {"logprobs", 1},
                                                {"echo", true},
                                                {"temperature", 0}});
  ASSERT_TRUE(lm_eval.ok()) << lm_eval.status();
  EXPECT_EQ(lm_eval->request.logprobs, 1);
  EXPECT_TRUE(lm_eval->echo && lm_eval->request.prompt_logprobs);
  auto echo_only = Parse(Endpoint::kCompletions, {{"prompt", "Hi"}, {"echo", true}});
  ASSERT_TRUE(echo_only.ok());
  EXPECT_TRUE(echo_only->echo && !echo_only->request.prompt_logprobs);
  auto zero = Parse(Endpoint::kCompletions, {{"prompt", "Hi"}, {"logprobs", 0}});
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->request.logprobs, 0);  // the chosen token's, no alternatives
  auto chat = Parse(Endpoint::kChat, {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                                      {"logprobs", true},
                                      {"top_logprobs", 3}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.logprobs, 3);
  EXPECT_FALSE(chat->request.prompt_logprobs);
  auto chat_off = Parse(Endpoint::kChat, {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                                          {"logprobs", false}});
  ASSERT_TRUE(chat_off.ok());
  EXPECT_EQ(chat_off->request.logprobs, -1);
}

TEST(OpenAiParse, RefusalsNameTheField) {
  const Endpoint c = Endpoint::kCompletions;
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "model": "gpt-4"})"),
            "404 model: the model `gpt-4` does not exist; this server serves `tiny`");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "n": 0})"),
            "400 n: n must be >= 1 with prompts x n <= 64 (1 prompt, n = 0)");
  EXPECT_EQ(Refusal(c, R"({"prompt": ["a", "b"], "n": 33})"),
            "400 n: n must be >= 1 with prompts x n <= 64 (2 prompts, n = 33)");
  EXPECT_EQ(
      Refusal(c, R"({"prompt": "a", "best_of": 2})"),
      "400 best_of: best_of is not supported by this server (no server-side ranking of choices)");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "logprobs": 21})"),
            "400 logprobs: logprobs must be in [0, 20], got 21");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "logprobs": true})"),
            "400 logprobs: logprobs must be an integer");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "top_logprobs": 2})"),
            "400 top_logprobs: top_logprobs is a chat field; completions take logprobs: N");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "echo": 1})"), "400 echo: echo must be true or false");
  EXPECT_EQ(Refusal(Endpoint::kChat,
                    R"({"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2})"),
            "400 top_logprobs: top_logprobs needs logprobs: true");
  EXPECT_EQ(
      Refusal(
          Endpoint::kChat,
          R"({"messages": [{"role": "user", "content": "a"}], "logprobs": true, "top_logprobs": 30})"),
      "400 top_logprobs: top_logprobs must be in [0, 20], got 30");
  EXPECT_EQ(
      Refusal(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "a"}], "echo": true})"),
      "400 echo: echo is a completions field; chat has none");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "presence_penalty": 2.5})"),
            "400 presence_penalty: presence_penalty must be in [-2, 2], got 2.5");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "frequency_penalty": -3})"),
            "400 frequency_penalty: frequency_penalty must be in [-2, 2], got -3");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "repetition_penalty": 0})"),
            "400 repetition_penalty: repetition_penalty must be > 0 (1: none), got 0");
  EXPECT_EQ(
      Refusal(c, R"({"prompt": "a", "stop_token_ids": [2, 32000]})"),
      "400 stop_token_ids: stop_token_ids token id 32000 is outside the vocabulary [0, 32000)");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "stop_token_ids": 2})"),
            "400 stop_token_ids: stop_token_ids must be a list of token ids");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "max_tokens": 4, "min_tokens": 5})"),
            "400 min_tokens: min_tokens must be in [0, max_tokens = 4], got 5");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "ignore_eos": 1})"),
            "400 ignore_eos: ignore_eos must be true or false");
  // vLLM's extensions we do not honour are refused, not ignored.
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "min_p": 0.1})"),
            "400 min_p: min_p is not supported by this server (no min_p sampling)");
  EXPECT_EQ(
      Refusal(c, R"({"prompt": "a", "use_beam_search": true})"),
      "400 use_beam_search: use_beam_search is not supported by this server (no beam search)");
  EXPECT_EQ(
      Refusal(c, R"({"prompt": "a", "guided_choice": ["x"]})"),
      "400 guided_choice: guided_choice is not supported by this server (no guided decoding)");
  EXPECT_EQ(
      Refusal(
          Endpoint::kChat,
          R"({"messages": [{"role": "user", "content": "a"}], "tools": [{"type": "function"}]})"),
      "400 tools: tools is not supported by this server (no tools)");
  EXPECT_EQ(Refusal(c, R"({"prompt": ["a", 5]})"),
            "400 prompt: prompt must be a string, a list of token ids, or a list of either");
  EXPECT_EQ(Refusal(c, R"({"prompt": ["a", ""]})"), "400 prompt: the prompt is empty");
  EXPECT_EQ(Refusal(c, R"({"prompt": ["a", [1, 99999]]})"),
            "400 prompt: prompt token id 99999 is outside the vocabulary [0, 32000)");
  EXPECT_EQ(Refusal(c, json({{"prompt", std::vector<std::string>(65, "a")}}).dump()),
            "400 prompt: prompt holds 65 prompts; the server takes at most 64 per request");
  EXPECT_EQ(Refusal(c, R"({"prompt": {"a": 1}})"),
            "400 prompt: prompt must be a string, a list of token ids, or a list of either");
  EXPECT_EQ(Refusal(c, R"({"prompt": [1, -5]})"),
            "400 prompt: prompt must be a string or a list of token ids (integers >= 0)");
  EXPECT_EQ(Refusal(c, R"({})"), "400 prompt: prompt is required");
  EXPECT_EQ(Refusal(c, R"({"prompt": ""})"), "400 prompt: the prompt is empty");
  EXPECT_EQ(Refusal(c, R"({"prompt": [1, 99999]})"),
            "400 prompt: prompt token id 99999 is outside the vocabulary [0, 32000)");
  EXPECT_EQ(Refusal(c, absl::StrCat(R"({"prompt": ")", std::string(65, 'x'), R"("})")),
            "400 prompt: prompt holds more than the server's limit of 64 bytes of text "
            "(--max-prompt-bytes)");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "max_tokens": "5"})"),
            "400 max_tokens: max_tokens must be an integer");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "max_tokens": 0})"),
            "400 max_tokens: max_tokens must be >= 1, got 0");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "max_tokens": 101})"),
            "400 max_tokens: max_tokens (101) exceeds the server's limit of 100");
  // Values past an int and past a float's precision are reported as sent.
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "max_tokens": 4294967297})"),
            "400 max_tokens: max_tokens (4294967297) exceeds the server's limit of 100");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "max_tokens": 1e18})"),
            "400 max_tokens: max_tokens (1000000000000000000) exceeds the server's limit of 100");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "max_tokens": -4294967297})"),
            "400 max_tokens: max_tokens must be >= 1, got -4294967297");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "top_p": 1.0000001})"),
            "400 top_p: top_p must be in (0, 1], got 1.0000001");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "temperature": -1})"),
            "400 temperature: temperature must be >= 0, got -1");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "top_p": 0})"),
            "400 top_p: top_p must be in (0, 1], got 0");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "top_k": -3})"),
            "400 top_k: top_k must be >= 0 (or -1: no limit), got -3");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "stop": [1]})"),
            "400 stop: stop must be a string or a list of strings");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "stop": [""]})"), "400 stop: stop holds an empty string");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "label": "has space"})"),
            "400 label: label may hold only letters, digits and . _ : - (found byte 0x20)");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "stream_options": {"include_usage": true}})"),
            "400 stream_options: stream_options is only allowed with stream: true");
  EXPECT_EQ(Refusal(c, R"({"prompt": "a", "stream": "yes"})"),
            "400 stream: stream must be true or false");
  // Bodies that are not requests at all.
  EXPECT_EQ(Refusal(c, "not json"), "400 : the body is not valid JSON (UTF-8)");
  EXPECT_EQ(Refusal(c, "[1]"), "400 : the body must be a JSON object");
  EXPECT_EQ(Refusal(c, "{\"prompt\": \"\xff\"}"), "400 : the body is not valid JSON (UTF-8)");
  EXPECT_EQ(Refusal(c, std::string(100000, '[')), "400 : the body nests deeper than 32 levels");
  // Amplification inside the byte limit: refused by shape before a DOM node is built.
  std::string empties = R"({"prompt": "a", "ignored": [)";
  for (int i = 0; i < 5000; ++i) empties += i ? ",{}" : "{}";
  EXPECT_EQ(Refusal(c, empties + "]}"),
            "400 : the body holds more than 4096 JSON objects and arrays");
  std::string zeros = R"({"prompt": "a", "ignored": [0)";
  for (int i = 0; i < (1 << 18); ++i) zeros += ",0";
  EXPECT_EQ(Refusal(c, zeros + "]}"), "400 : the body holds more than 262144 JSON values");
  // Brackets and commas inside strings are text, not shape: refused for its length, not its shape.
  EXPECT_EQ(Refusal(c, absl::StrCat(R"({"prompt": ")", std::string(10000, '{'),
                                    std::string(300000, ','), R"("})")),
            "400 prompt: prompt holds more than the server's limit of 64 bytes of text "
            "(--max-prompt-bytes)");
}

TEST(OpenAiParse, ChatRefusals) {
  const Endpoint chat = Endpoint::kChat;
  EXPECT_EQ(Refusal(chat, R"({"messages": []})"), "400 messages: messages is empty");
  EXPECT_EQ(Refusal(chat, R"({"messages": "hi"})"),
            "400 messages: messages must be a list of messages");
  EXPECT_EQ(Refusal(chat, R"({"messages": [{"content": "hi"}]})"),
            "400 messages: messages[0] must be an object with a string role");
  EXPECT_EQ(Refusal(chat, R"({"messages": [{"role": "assistant", "content": "hi"}]})"),
            "400 messages: messages[0] has role \"assistant\" where the template needs \"user\": "
            "after an optional "
            "system message, roles alternate user, assistant, user, ...");
  EXPECT_EQ(
      Refusal(
          chat,
          R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})"),
      "400 messages: the last of messages must be the user's (the reply is the assistant's)");
  EXPECT_EQ(Refusal(chat, R"({"messages": [{"role": "tool", "content": "a"}]})"),
            "400 messages: messages[0] has role \"tool\" where the template needs \"user\": after "
            "an optional "
            "system message, roles alternate user, assistant, user, ...");
  EXPECT_EQ(
      Refusal(chat, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
      "400 messages: messages[0].content holds a part that is not {\"type\": \"text\", \"text\": "
      "...}; this "
      "server takes text only");
  // The byte limit counts every message.
  const std::string half(40, 'x');
  EXPECT_EQ(Refusal(chat, absl::StrCat(R"({"messages": [{"role": "system", "content": ")", half,
                                       R"("}, {"role": "user", "content": ")", half, R"("}]})")),
            "400 messages: messages holds more than the server's limit of 64 bytes of text "
            "(--max-prompt-bytes)");
  // Text parts are joined.
  auto parts = Parse(
      chat, {{"messages",
              {{{"role", "user"},
                {"content",
                 {{{"type", "text"}, {"text", "Hel"}}, {{"type", "text"}, {"text", "lo"}}}}}}}});
  auto plain = Parse(chat, {{"messages", {{{"role", "user"}, {"content", "Hello"}}}}});
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(parts->request.prompt, plain->request.prompt);
}

// Every conversation of tests/golden/chat (transformers' rendering of Mixtral-Instruct's own
// template, tokenized as Hugging Face does: scripts/make_chat_golden.py) gives exactly its ids.
TEST(ChatTemplate, MatchesHuggingFaceOnMixtralInstructTemplate) {
  std::ifstream in(std::string(MOE_SOURCE_DIR) + "/tests/golden/chat/mistral_v1.json");
  ASSERT_TRUE(in) << "tests/golden/chat/mistral_v1.json";
  std::stringstream text;
  text << in.rdbuf();
  const json golden = json::parse(text.str());
  ASSERT_GE(golden["cases"].size(), 5u);
  for (const json& c : golden["cases"]) {
    std::vector<ChatMessage> messages;
    for (const json& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    absl::StatusOr<std::vector<int32_t>> ids = ChatTemplate::MistralV1().Render(messages, Tok());
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>()) << c["text"];
  }
}

TEST(ChatTemplate, ChosenFromTheModelDirectory) {
  const std::string dir = ::testing::TempDir() + "/chat_template_model";
  std::system(("mkdir -p " + dir + " && rm -f " + dir + "/tokenizer_config.json").c_str());
  auto write = [&](const std::string& body) {
    std::ofstream(dir + "/tokenizer_config.json") << body;
  };
  EXPECT_EQ(ChatTemplate::ForModel("auto", dir)->kind(), ChatTemplateKind::kMistralV1);  // no file
  write(R"({"bos_token": "<s>"})");
  EXPECT_EQ(ChatTemplate::ForModel("auto", dir)->kind(),
            ChatTemplateKind::kMistralV1);  // no template
  std::ifstream in(std::string(MOE_SOURCE_DIR) + "/tests/golden/chat/mistral_v1.json");
  std::stringstream text;
  text << in.rdbuf();
  write(json{{"chat_template", json::parse(text.str())["template"]}}.dump());
  EXPECT_EQ(ChatTemplate::ForModel("auto", dir)->kind(),
            ChatTemplateKind::kMistralV1);  // Mixtral-Instruct's
  write(
      R"({"chat_template": "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"})");
  absl::StatusOr<ChatTemplate> chatml = ChatTemplate::ForModel("auto", dir);
  ASSERT_TRUE(chatml.ok());
  EXPECT_EQ(chatml->kind(), ChatTemplateKind::kNone);  // not ours: chat is off, with the reason
  EXPECT_NE(chatml->disabled_reason().find("--chat-template mistral-v1"), std::string::npos);
  EXPECT_EQ(ChatTemplate::ForModel("mistral-v1", dir)->kind(),
            ChatTemplateKind::kMistralV1);  // forced
  EXPECT_EQ(Refusal(Endpoint::kChat, "{}").substr(0, 3), "400");
  write("{not json");
  EXPECT_FALSE(ChatTemplate::ForModel("auto", dir).ok());
  EXPECT_EQ(ChatTemplate::ForModel("chatml", dir).status().message(),
            "--chat-template must be auto or mistral-v1, got \"chatml\"");
  // A user's literal "</s>" and "[INST]" stay text: no injected EOS.
  auto ids = ChatTemplate::MistralV1().Render({{"user", "a </s> b"}}, Tok());
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(std::count(ids->begin(), ids->end(), Tok().eos_id()), 0);
}

TEST(OpenAiResponses, Shapes) {
  const openai::ResponseHead head{openai::ResponseId(Endpoint::kChat, 42), 1700000000, "tiny"};
  EXPECT_EQ(head.id, "chatcmpl-42");
  EXPECT_EQ(openai::ResponseId(Endpoint::kCompletions, 7), "cmpl-7");
  const json chat =
      json::parse(openai::CompletionBody(Endpoint::kChat, head, "Hi!", FinishReason::kEos, {5, 3}));
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"], (json{{"role", "assistant"}, {"content", "Hi!"}}));
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chat["usage"],
            (json{{"prompt_tokens", 5}, {"completion_tokens", 3}, {"total_tokens", 8}}));
  const json text = json::parse(openai::CompletionBody(
      Endpoint::kCompletions, {"cmpl-1", 1, "tiny"}, "abc", FinishReason::kLength, {1, 2}));
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "abc");
  EXPECT_EQ(text["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(json::parse(openai::StreamChunk(Endpoint::kCompletions, head, "x",
                                            FinishReason::kStop))["choices"][0]["finish_reason"],
            "stop");  // a stop string ends as "stop" too
  const json first =
      json::parse(openai::StreamChunk(Endpoint::kChat, head, "", FinishReason::kNone, true));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const json last = json::parse(openai::StreamChunk(Endpoint::kChat, head, "", FinishReason::kEos));
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  const json usage = json::parse(openai::UsageChunk(Endpoint::kChat, head, {5, 3}));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 8);
  const json error =
      json::parse(openai::ErrorFromStatus(absl::ResourceExhaustedError("queue full")).Body());
  EXPECT_EQ(error, (json{{"error",
                          {{"message", "queue full"},
                           {"type", "rate_limit_error"},
                           {"param", nullptr},
                           {"code", nullptr}}}}));
  EXPECT_EQ(openai::ErrorFromStatus(absl::ResourceExhaustedError("")).http_status, 429);
  EXPECT_EQ(openai::ErrorFromStatus(absl::UnavailableError("")).http_status, 503);
  EXPECT_EQ(openai::ErrorFromStatus(absl::UnauthenticatedError("")).http_status, 401);
  EXPECT_EQ(openai::ErrorFromStatus(absl::InternalError("")).http_status, 500);
  Fixture f;
  const json models = json::parse(openai::ModelList(f.model));
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(models["data"][0]["max_model_len"], 128);
}

TEST(OpenAiTokenizer, TokenizeAndDetokenize) {
  Fixture f;
  const std::vector<int> ids = Tok().Encode("Hello world", true);
  auto t = openai::TokenizeResponse(R"({"prompt": "Hello world"})", f.model);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(json::parse(*t), (json{{"tokens", ids}, {"count", 3}, {"max_model_len", 128}}));
  auto bare = openai::TokenizeResponse(R"({"prompt": "Hello world", "add_special_tokens": false,
                                          "return_token_strs": true})",
                                       f.model);
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(json::parse(*bare)["tokens"], json(std::vector<int>(ids.begin() + 1, ids.end())));
  EXPECT_EQ(json::parse(*bare)["token_strs"], (json{" Hello", " world"}));
  auto chat =
      openai::TokenizeResponse(R"({"messages": [{"role": "user", "content": "Hi"}]})", f.model);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(json::parse(*chat)["tokens"],
            json(Parse(Endpoint::kChat, {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}})
                     ->request.prompt));
  auto d = openai::DetokenizeResponse(json({{"tokens", ids}}).dump(), f.model);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(json::parse(*d), (json{{"prompt", "Hello world"}}));
  for (const auto& [body, want] : std::vector<std::pair<std::string, std::string>>{
           {R"({"prompt": 5})", "prompt must be a string"},
           {R"({"prompt": "a", "model": "gpt-4"})",
            "the model does not exist; this server serves `tiny`"},
           {R"({"prompt": "a", "add_special_tokens": "no"})",
            "add_special_tokens must be true or false"}}) {
    auto r = openai::TokenizeResponse(body, f.model);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().message(), want);
  }
  for (const auto& [body, want] : std::vector<std::pair<std::string, std::string>>{
           {R"({"tokens": "1,2"})", "tokens must be a list of token ids"},
           {R"({"tokens": [1, -2]})", "tokens must be a list of token ids (integers >= 0)"},
           {R"({"tokens": [1, 32000]})",
            "tokens token id 32000 is outside the vocabulary [0, 32000)"}}) {
    auto r = openai::DetokenizeResponse(body, f.model);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().message(), want);
  }
}

TEST(OpenAiTokenizer, ClientRequestIds) {
  EXPECT_EQ(openai::ClientRequestId("eval-42:a.b_c"), "eval-42:a.b_c");
  EXPECT_EQ(openai::ClientRequestId(""), "");
  EXPECT_EQ(openai::ClientRequestId("has space"), "");
  EXPECT_EQ(openai::ClientRequestId("quote\""), "");
  EXPECT_EQ(openai::ClientRequestId(std::string(129, 'a')), "");
  EXPECT_EQ(openai::ClientRequestId(std::string(128, 'a')), std::string(128, 'a'));
  EXPECT_EQ(openai::ResponseId(Endpoint::kChat, "abc"), "chatcmpl-abc");
}

TEST(OpenAiResponses, LogprobsShapes) {
  const Tokenizer& tok = Tok();
  const std::vector<int> ids = tok.Encode("Hello world", true);  // <s> ▁Hello ▁world
  ASSERT_EQ(ids.size(), 3u);
  openai::Choice c;
  c.index = 1;
  c.text = "Hello world";
  c.finish = FinishReason::kLength;
  c.logprobs = true;
  c.tokens.push_back(
      {ids[1], std::numeric_limits<float>::quiet_NaN(), {}});  // an echoed first token
  c.tokens.push_back({ids[2], -1.5f, {{ids[1], -0.25f}}});
  const json text = json::parse(
      openai::CompletionBody(Endpoint::kCompletions, {"cmpl-1", 1, "tiny"}, {c}, {2, 1}, tok));
  const json& lp = text["choices"][0]["logprobs"];
  EXPECT_EQ(text["choices"][0]["index"], 1);
  EXPECT_EQ(lp["tokens"], (json{" Hello", " world"}));  // pieces, "▁" as a space
  EXPECT_EQ(lp["token_logprobs"], (json{nullptr, -1.5}));
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  EXPECT_EQ(lp["top_logprobs"][1],
            (json{{" Hello", -0.25}, {" world", -1.5}}));  // the chosen one beside the top
  EXPECT_EQ(lp["text_offset"], (json{0, 6}));
  const json chat = json::parse(
      openai::CompletionBody(Endpoint::kChat, {"chatcmpl-1", 1, "tiny"}, {c}, {2, 1}, tok));
  const json& content = chat["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[1]["token"], " world");
  EXPECT_EQ(content[1]["logprob"], -1.5);
  EXPECT_EQ(content[1]["bytes"], (json{32, 119, 111, 114, 108, 100}));
  EXPECT_EQ(
      content[1]["top_logprobs"][0],
      (json{{"token", " Hello"}, {"logprob", -0.25}, {"bytes", {32, 72, 101, 108, 108, 111}}}));
  c.logprobs = false;
  EXPECT_TRUE(json::parse(openai::CompletionBody(Endpoint::kCompletions, {"cmpl-1", 1, "tiny"}, {c},
                                                 {2, 1}, tok))["choices"][0]["logprobs"]
                  .is_null());
}

}  // namespace
}  // namespace moe
