// moe-export-tokenizer: writes tokenizer.json and tokenizer_config.json beside a model's
// tokenizer.model, so tools that load tokenizers through Hugging Face `transformers` (lm-eval,
// aiperf, guidellm) tokenize as this server does (tests/integration/hf_tokenizer_test.py holds
// them to it). Files already there are kept unless --force: a checkpoint's own are the truth.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "coordinator/server/chat_template.h"
#include "core/base/status_macros.h"
#include "core/cli/cli.h"
#include "core/model/config.h"
#include "core/model/hf_tokenizer.h"

ABSL_FLAG(std::string, out, "", "directory to write into (default: --model)");
ABSL_FLAG(bool, force, false, "overwrite tokenizer.json / tokenizer_config.json already there");
ABSL_FLAG(
    std::string, chat_template, "mistral-v1",
    "the chat_template written: mistral-v1 (what the server uses when a model has none) or none");

namespace moe {
namespace {

bool Exists(const std::string& path) { return std::ifstream(path).good(); }

absl::Status Write(const std::string& path, const std::string& text) {
  if (Exists(path) && !absl::GetFlag(FLAGS_force)) {
    std::printf("kept %s (already there; --force replaces it)\n", path.c_str());
    return absl::OkStatus();
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  std::printf("wrote %s (%zu bytes)\n", path.c_str(), text.size());
  return absl::OkStatus();
}

absl::Status Export(const std::string& model_dir) {
  const std::string flag = absl::GetFlag(FLAGS_chat_template);
  if (flag != "mistral-v1" && flag != "none") {
    return absl::InvalidArgumentError(
        absl::StrCat("--chat-template must be mistral-v1 or none, got \"", flag, "\""));
  }
  const std::string tokenizer_path = cli::DefaultTokenizerPath(model_dir);
  std::ifstream in(tokenizer_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer ", tokenizer_path));
  std::stringstream bytes;
  bytes << in.rdbuf();
  MOE_ASSIGN_OR_RETURN(SentencePieceModel model, ParseSentencePieceModel(bytes.str()));
  MOE_ASSIGN_OR_RETURN(MixtralConfig config, LoadMixtralConfig(model_dir));
  MOE_ASSIGN_OR_RETURN(std::string tokenizer_json, HuggingFaceTokenizerJson(model));
  std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) out = model_dir;
  MOE_RETURN_IF_ERROR(Write(out + "/tokenizer.json", tokenizer_json));
  return Write(out + "/tokenizer_config.json",
               HuggingFaceTokenizerConfig(model, static_cast<int>(config.max_position_embeddings),
                                          flag == "none" ? "" : ChatTemplate::MistralV1Jinja()));
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  using namespace moe;
  cli::Init(
      argc, argv,
      "moe-export-tokenizer --model DIR [--out DIR] [--force] [--chat-template mistral-v1|none]");
  if (absl::Status s = Export(cli::ModelDir()); !s.ok()) return cli::Fail(s);
  return 0;
}
