// The commands of moe-cli and the flags each one reads: the one table that its help, its checks
// of misplaced flags and its suggestions for mistyped commands all come from. Flags themselves
// stay ABSL_FLAGs in moe_cli.cc; this file knows them by name only, and reads their help text and
// defaults from abseil's registry, so the help cannot drift from the flags.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace moe::cli {

struct Command {
  std::string name;                // "generate"
  std::string summary;             // one line
  std::string usage;               // the synopsis after "moe-cli NAME"
  std::vector<std::string> flags;  // its own flags, as spelled on the command line ("max-tokens")
};

// Every command, in the order help lists them.
const std::vector<Command>& Commands();
// Flags every command takes (the server and how to reach it).
const std::vector<std::string>& ConnectionFlags();

const Command* FindCommand(const std::string& name);
// The command nearest to a mistyped one (edit distance at most 3, or a prefix), or "".
std::string NearestCommand(const std::string& typed);

// moe-cli --help: the commands with their summaries, and the connection flags.
std::string UsageText();
// moe-cli NAME --help: the synopsis, then each flag with its default and help.
std::string CommandHelp(const Command& command);

// The flags a command line gives (abseil's names, underscores: "max_tokens"), read from argv
// before parsing; "--noonce" counts as "once".
std::set<std::string> FlagsGiven(int argc, char** argv);

// Flags given that `command` does not read: INVALID_ARGUMENT naming the first, and which
// commands do read it.
absl::Status CheckFlagsBelong(const Command& command, const std::set<std::string>& given);

}  // namespace moe::cli
