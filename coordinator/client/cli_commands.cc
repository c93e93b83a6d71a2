#include "coordinator/client/cli_commands.h"

#include <algorithm>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace moe::cli {
namespace {

std::string Underscored(const std::string& dashed) { return absl::StrReplaceAll(dashed, {{"-", "_"}}); }

// Levenshtein distance; commands are short, so the plain table is fine.
int EditDistance(const std::string& a, const std::string& b) {
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int diagonal = row[0];
    row[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string FlagLine(const std::string& dashed) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(Underscored(dashed));
  if (flag == nullptr) return absl::StrCat("  --", dashed, "\n");
  std::string help = flag->Help();
  // The help strings name the commands they serve ("generate/bench: ..."); the list is per command.
  if (const size_t colon = help.find(": "); colon != std::string::npos && colon < 40 &&
                                            help.find(' ') > colon) {
    help = help.substr(colon + 2);
  }
  std::string value = flag->DefaultValue();
  if (value.empty()) value = "\"\"";
  return absl::StrCat("  --", dashed, " (default ", value, ")\n      ", help, "\n");
}

}  // namespace

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"generate",
       "stream a generation: the text as it arrives, usage and the request id on stderr",
       "--prompt TEXT | --token-ids 1,2,3 [flags]",
       {"prompt", "token-ids", "max-tokens", "temperature", "top-p", "top-k", "seed", "stop",
        "repetition-penalty", "frequency-penalty", "presence-penalty", "stop-token-ids",
        "min-tokens", "ignore-eos", "deadline-ms", "ids", "label"}},
      {"tokenize", "the server's token ids of a text (BOS first)", "--text TEXT", {"text"}},
      {"info", "the model, the workers and their experts, the scheduler now", "", {}},
      {"bench",
       "concurrent streaming clients: tokens/s, time to first token, inter-token latency",
       "[--concurrency 1,4,16,64] [flags]",
       {"concurrency", "requests", "max-tokens", "prompt-tokens", "temperature"}},
      {"load",
       "the load telemetry, redrawn like top (or one snapshot with --once)",
       "[flags]",
       {"interval-ms", "once", "window", "width"}},
      {"reset-load",
       "zero the load counters on every rank (an admin call)",
       "",
       {"admin-token-file"}},
      {"rebalance",
       "plan an expert placement from the load window and move the cluster to it (an admin call)",
       "[--dry-run] [--force] [--out PLAN.json]",
       {"dry-run", "force", "out", "admin-token-file"}},
  };
  return *commands;
}

const std::vector<std::string>& ConnectionFlags() {
  static const auto* flags =
      new std::vector<std::string>{"server", "tls", "tls-ca", "tls-cert", "tls-key", "tls-server-name"};
  return *flags;
}

const Command* FindCommand(const std::string& name) {
  for (const Command& c : Commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::string NearestCommand(const std::string& typed) {
  std::string best;
  int best_distance = 4;
  for (const Command& c : Commands()) {
    const int d = (!typed.empty() && c.name.rfind(typed, 0) == 0) ? 1 : EditDistance(typed, c.name);
    if (d < best_distance) {
      best_distance = d;
      best = c.name;
    }
  }
  return best;
}

std::string UsageText() {
  std::string out = "usage: moe-cli COMMAND [flags]   (moe-cli COMMAND --help lists its flags)\n\ncommands:\n";
  for (const Command& c : Commands()) absl::StrAppend(&out, "  ", c.name, std::string(12 - c.name.size(), ' '), c.summary, "\n");
  absl::StrAppend(&out, "\nevery command takes:\n");
  for (const std::string& f : ConnectionFlags()) absl::StrAppend(&out, FlagLine(f));
  return out;
}

std::string CommandHelp(const Command& command) {
  std::string out = absl::StrCat("usage: moe-cli ", command.name, command.usage.empty() ? "" : " ", command.usage,
                                 "\n  ", command.summary, "\n");
  if (!command.flags.empty()) {
    absl::StrAppend(&out, "\nflags:\n");
    for (const std::string& f : command.flags) absl::StrAppend(&out, FlagLine(f));
  }
  absl::StrAppend(&out, "\nand the connection flags of every command:\n");
  for (const std::string& f : ConnectionFlags()) absl::StrAppend(&out, FlagLine(f));
  return out;
}

std::set<std::string> FlagsGiven(int argc, char** argv) {
  std::set<std::string> out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") break;
    if (a.size() < 2 || a[0] != '-') continue;
    std::string name = a.substr(a.find_first_not_of('-'));
    name = name.substr(0, name.find('='));
    name = Underscored(name);
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && name.rfind("no", 0) == 0) {
      const absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) name = name.substr(2);
    }
    out.insert(name);
  }
  return out;
}

absl::Status CheckFlagsBelong(const Command& command, const std::set<std::string>& given) {
  for (const Command& other : Commands()) {
    for (const std::string& f : other.flags) {
      if (given.count(Underscored(f)) == 0) continue;
      if (std::find(command.flags.begin(), command.flags.end(), f) != command.flags.end()) continue;
      std::vector<std::string> users;
      for (const Command& c : Commands()) {
        if (std::find(c.flags.begin(), c.flags.end(), f) != c.flags.end()) users.push_back(c.name);
      }
      return absl::InvalidArgumentError(absl::StrCat("--", f, " is not a flag of ", command.name, " (it is ",
                                                     absl::StrJoin(users, " and "), "'s); moe-cli ", command.name,
                                                     " --help lists its flags"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moe::cli
