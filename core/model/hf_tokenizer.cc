#include "core/model/hf_tokenizer.h"

#include <algorithm>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using Json = nlohmann::ordered_json;
using PieceType = SentencePieceModel::PieceType;
constexpr char kSpaceSymbol[] = "\xE2\x96\x81";  // U+2581 "▁"

Json AddedToken(const SentencePieceModel& model, int id) {
  return Json{{"id", id},
              {"content", model.pieces[id].text},
              {"single_word", false},
              {"lstrip", false},
              {"rstrip", false},
              {"normalized", false},
              {"special", true}};
}

// (left, right) pairs in rank order. SentencePiece merges the adjacent pair whose union is the
// highest-scoring normal piece; a rank per pair, ordered by that score (stable, so equal scores
// keep vocabulary order), makes the BPE of `tokenizers` choose the same pair.
std::vector<std::pair<std::string, std::string>> Merges(const SentencePieceModel& model) {
  absl::flat_hash_map<std::string, int> normal;
  for (int id = 0; id < static_cast<int>(model.pieces.size()); ++id) {
    if (model.pieces[id].type == PieceType::kNormal) normal.emplace(model.pieces[id].text, id);
  }
  struct Merge {
    int left, right;
    float score;
  };
  std::vector<Merge> merges;
  for (int id = 0; id < static_cast<int>(model.pieces.size()); ++id) {
    const SentencePieceModel::Piece& p = model.pieces[id];
    if (p.type != PieceType::kNormal) continue;
    std::vector<Merge> local;
    for (size_t cut = 1; cut < p.text.size(); ++cut) {
      if ((static_cast<unsigned char>(p.text[cut]) & 0xC0) == 0x80) continue;  // inside a character
      const auto l = normal.find(p.text.substr(0, cut));
      const auto r = normal.find(p.text.substr(cut));
      if (l != normal.end() && r != normal.end()) local.push_back({l->second, r->second, p.score});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return std::tie(a.left, a.right) < std::tie(b.left, b.right);
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(),
                   [](const Merge& a, const Merge& b) { return a.score > b.score; });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const Merge& m : merges)
    out.emplace_back(model.pieces[m.left].text, model.pieces[m.right].text);
  return out;
}

}  // namespace

absl::StatusOr<std::string> HuggingFaceTokenizerJson(const SentencePieceModel& model) {
  if (model.model_type != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer model type ", model.model_type, " is not BPE (type 2)"));
  }
  if (model.has_precompiled_charsmap || model.normalizer_name != "identity" ||
      !model.escape_whitespaces || model.remove_extra_whitespaces ||
      model.treat_whitespace_as_suffix) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer normalisation '", model.normalizer_name,
        "' has no tokenizer.json equivalent here (only identity, spaces as \xE2\x96\x81)"));
  }
  const int n = static_cast<int>(model.pieces.size());
  for (int id : {model.unk_id, model.bos_id, model.eos_id}) {
    if (id < 0 || id >= n)
      return absl::InvalidArgumentError("tokenizer special ids outside the vocabulary");
  }
  const std::string& unk = model.pieces[model.unk_id].text;
  const std::string& bos = model.pieces[model.bos_id].text;

  Json added = Json::array();
  for (int id = 0; id < n; ++id) {
    const PieceType t = model.pieces[id].type;
    if (t == PieceType::kControl || t == PieceType::kUnknown)
      added.push_back(AddedToken(model, id));
  }
  Json normalizers = Json::array();
  if (model.add_dummy_prefix)
    normalizers.push_back({{"type", "Prepend"}, {"prepend", kSpaceSymbol}});
  normalizers.push_back(
      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpaceSymbol}});
  const Json bos_special = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
  Json decoders = Json::array();
  decoders.push_back(
      {{"type", "Replace"}, {"pattern", {{"String", kSpaceSymbol}}}, {"content", " "}});
  if (model.byte_fallback) decoders.push_back({{"type", "ByteFallback"}});
  decoders.push_back({{"type", "Fuse"}});
  if (model.add_dummy_prefix) {
    decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  }
  Json vocab = Json::object();
  for (int id = 0; id < n; ++id) vocab[model.pieces[id].text] = id;
  Json merges = Json::array();
  for (const auto& [l, r] : Merges(model)) merges.push_back(Json::array({l, r}));

  const Json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", std::move(added)},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", std::move(normalizers)}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", Json::array({bos_special, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", Json::array({bos_special,
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens",
         {{bos,
           {{"id", bos}, {"ids", Json::array({model.bos_id})}, {"tokens", Json::array({bos})}}}}}}},
      {"decoder", {{"type", "Sequence"}, {"decoders", std::move(decoders)}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", unk},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", model.byte_fallback},
        {"ignore_merges", false},
        {"vocab", std::move(vocab)},
        {"merges", std::move(merges)}}}};
  return tokenizer.dump(-1, ' ', /*ensure_ascii=*/false) + "\n";  // 32k pieces: compact
}

std::string HuggingFaceTokenizerConfig(const SentencePieceModel& model, int model_max_length,
                                       const std::string& chat_template) {
  Json decoder = Json::object();
  for (int id = 0; id < static_cast<int>(model.pieces.size()); ++id) {
    const PieceType t = model.pieces[id].type;
    if (t != PieceType::kControl && t != PieceType::kUnknown) continue;
    Json token = AddedToken(model, id);
    token.erase("id");
    decoder[std::to_string(id)] = std::move(token);
  }
  Json config = {
      {"add_bos_token", true},
      {"add_eos_token", false},
      {"added_tokens_decoder", std::move(decoder)},
      {"bos_token", model.pieces[model.bos_id].text},
      {"eos_token", model.pieces[model.eos_id].text},
      {"unk_token", model.pieces[model.unk_id].text},
      {"pad_token", nullptr},
      {"clean_up_tokenization_spaces", false},
      {"legacy", true},
      {"model_max_length", model_max_length},
      {"spaces_between_special_tokens", false},
      {"tokenizer_class", "PreTrainedTokenizerFast"},
  };
  if (!chat_template.empty()) config["chat_template"] = chat_template;
  return config.dump(1, ' ', /*ensure_ascii=*/false) + "\n";
}

}  // namespace moe
