// moe-tokenize: the server's token ids for texts, offline. Reads one JSON string per line on
// stdin and prints one JSON array of ids per line (with --bos, BOS first, as the server's prompts
// begin); --decode reads arrays of ids and prints strings. For scripts that count tokens and for
// tests that hold other tokenizers to ours.
#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "core/cli/cli.h"
#include "core/model/tokenizer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(bool, bos, false, "put the BOS id first");
ABSL_FLAG(bool, decode, false, "read arrays of ids, print the text of each as a JSON string");

int main(int argc, char** argv) {
  using namespace moe;
  cli::Init(argc, argv, "moe-tokenize --model DIR [--bos] [--decode] < lines.jsonl");
  auto tokenizer = Tokenizer::Load(cli::DefaultTokenizerPath(cli::ModelDir()));
  if (!tokenizer.ok()) return cli::Fail(tokenizer.status());
  const bool decode = absl::GetFlag(FLAGS_decode);
  std::string line;
  for (int n = 1; std::getline(std::cin, line); ++n) {
    const nlohmann::json in = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool ok =
        decode ? in.is_array() && std::all_of(in.begin(), in.end(),
                                              [](const auto& v) { return v.is_number_integer(); })
               : in.is_string();
    if (!ok) {
      return cli::Fail(absl::InvalidArgumentError(
          absl::StrCat("line ", n, " is not a JSON ", decode ? "array of token ids" : "string")));
    }
    if (decode) {
      std::cout << nlohmann::json((*tokenizer)->Decode(in.get<std::vector<int>>()))
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    } else {
      std::cout << nlohmann::json(
                       (*tokenizer)->Encode(in.get<std::string>(), absl::GetFlag(FLAGS_bos)))
                       .dump()
                << "\n";
    }
  }
  return 0;
}
