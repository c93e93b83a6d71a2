// moe-cli: a command-line client of the moe.v1.Inference service.
//   moe-cli generate --prompt "Hello" [--max-tokens 32 --temperature 0.8 --top-p 0.95 --stop "\n"]
//                    [--label chat]     (prints the server's request id with the usage)
//   moe-cli tokenize --text "Hello world"
//   moe-cli info
//   moe-cli bench --concurrency 1,4,16,64 [--requests 2 --max-tokens 32 --prompt-tokens 32]
//   moe-cli load [--interval-ms 1000] [--once] [--window]     (live load view, like top)
//   moe-cli reset-load
// --server HOST:PORT (default 127.0.0.1:50051) selects the server; --tls-ca (or --tls), --tls-cert,
// --tls-key and --tls-server-name speak TLS to it; --admin-token-file authorises reset-load and
// rebalance.
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/client/cli_commands.h"
#include "coordinator/client/client_channel.h"
#include "coordinator/client/load_view.h"
#include "core/cli/flag_spelling.h"
#include "core/cli/sampling_flags.h"
#include "grpcpp/grpcpp.h"
#include "moe/v1/admin.grpc.pb.h"
#include "moe/v1/inference.grpc.pb.h"
#include "moe/v1/telemetry.grpc.pb.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "server address HOST:PORT");
ABSL_FLAG(std::string, prompt, "", "generate: prompt text (BOS is prepended by the server)");
ABSL_FLAG(std::string, token_ids, "", "generate: prompt as comma-separated token ids instead");
ABSL_FLAG(int, deadline_ms, 0, "generate: gRPC deadline (0 = none)");
ABSL_FLAG(bool, ids, false, "generate: print token ids instead of text");
ABSL_FLAG(std::string, label, "",
          "generate: workload label for the server's telemetry and routing trace (up to 64 bytes "
          "of [A-Za-z0-9._:-])");
ABSL_FLAG(std::string, text, "", "tokenize: text");
ABSL_FLAG(std::string, concurrency, "1,4,16,64", "bench: concurrent clients, comma-separated");
ABSL_FLAG(int, requests, 2, "bench: requests per client");
ABSL_FLAG(int, prompt_tokens, 32, "bench: random prompt length");
ABSL_FLAG(int, interval_ms, 1000, "load: refresh interval");
ABSL_FLAG(bool, once, false, "load: print one snapshot and exit");
ABSL_FLAG(int, width, 0,
          "load: columns to fit (tables split, prose wraps); 0: the terminal's width, else $COLUMNS, else 80");
ABSL_FLAG(bool, dry_run, false, "rebalance: show the plan, move nothing");
ABSL_FLAG(bool, force, false, "rebalance: ignore the server's --rebalance-threshold and the minimum gain");
ABSL_FLAG(std::string, out, "", "rebalance: write the plan as a --placement JSON file");
ABSL_FLAG(bool, tls, false, "speak TLS, verifying the server against the system's CA certificates");
ABSL_FLAG(std::string, tls_ca, "", "speak TLS, verifying the server against these PEM CA certificates");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate for a server that requires one (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "the name the server's certificate must carry (default: the --server host)");
ABSL_FLAG(std::string, admin_token_file, "",
          "reset-load, rebalance: file whose first line is the server's admin token");
ABSL_FLAG(bool, window, false, "load: show the sliding-window counts instead of the totals since reset");

namespace {

using Clock = std::chrono::steady_clock;

// Read once in main, before any command runs.
moe::ClientSecurity g_security;

std::shared_ptr<grpc::Channel> Channel() { return moe::MakeClientChannel(absl::GetFlag(FLAGS_server), g_security); }

std::unique_ptr<moe::v1::Inference::Stub> Connect() { return moe::v1::Inference::NewStub(Channel()); }

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNRECOGNISED_STATUS";
  }
}

int Fail(const std::string& what, const grpc::Status& s) {
  std::fprintf(stderr, "moe-cli: %s failed: %s: %s\n", what.c_str(), StatusCodeName(s.error_code()),
               s.error_message().c_str());
  return 1;
}

// A bad command line: one line on stderr, exit status 2 (1 is for failures of the call itself).
int Usage(const std::string& message) {
  std::fprintf(stderr, "moe-cli: %s\n", message.c_str());
  return 2;
}

// The flags the command line gives, by abseil's name (set in main before parsing).
std::set<std::string> g_given;

bool Given(const char* flag) { return g_given.count(flag) > 0; }

// "1,4,16" -> {1, 4, 16}; every item an integer >= 1, else an error naming it.
absl::StatusOr<std::vector<int>> ParseCounts(const std::string& list, const char* flag) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(list, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not a whole number of at least 1 (e.g. 1,4,16,64)"));
    }
    out.push_back(n);
  }
  return out;
}

const char* ReasonName(moe::v1::FinishReason r) {
  switch (r) {
    case moe::v1::FINISH_REASON_EOS: return "eos";
    case moe::v1::FINISH_REASON_LENGTH: return "length";
    case moe::v1::FINISH_REASON_STOP: return "stop";
    default: return "unspecified";
  }
}

int Generate() {
  const std::string ids = absl::GetFlag(FLAGS_token_ids);
  if (ids.empty() == absl::GetFlag(FLAGS_prompt).empty()) {
    return Usage(ids.empty() ? "generate needs --prompt TEXT or --token-ids 1,2,3 (moe-cli generate --help)"
                             : "generate takes --prompt or --token-ids, not both");
  }
  const absl::StatusOr<moe::cli::SamplingFlags> flags = moe::cli::SamplingFromFlags();
  if (!flags.ok()) return Usage(std::string(flags.status().message()));
  if (absl::GetFlag(FLAGS_deadline_ms) < 0) return Usage("--deadline-ms must be >= 0 (0 = none)");
  auto stub = Connect();
  moe::v1::GenerateRequest req;
  if (!ids.empty()) {
    for (absl::string_view part : absl::StrSplit(ids, ',')) {
      int id;
      if (!absl::SimpleAtoi(part, &id)) {
        return Usage(absl::StrCat("--token-ids: '", part, "' is not an integer"));
      }
      req.mutable_token_ids()->add_ids(id);
    }
  } else {
    req.set_text(absl::GetFlag(FLAGS_prompt));
  }
  moe::v1::SamplingParams* s = req.mutable_sampling();
  s->set_max_tokens(static_cast<uint32_t>(flags->max_tokens));
  s->set_temperature(static_cast<float>(flags->temperature));
  s->set_top_p(static_cast<float>(flags->top_p));
  s->set_top_k(flags->top_k);
  s->set_seed(flags->seed);
  for (const std::string& stop : flags->stop) s->add_stop(stop);
  s->set_repetition_penalty(static_cast<float>(flags->repetition_penalty));
  s->set_frequency_penalty(static_cast<float>(flags->frequency_penalty));
  s->set_presence_penalty(static_cast<float>(flags->presence_penalty));
  for (int32_t id : flags->stop_token_ids) s->add_stop_token_ids(id);
  s->set_min_tokens(static_cast<uint32_t>(flags->min_tokens));
  s->set_ignore_eos(flags->ignore_eos);
  req.set_label(absl::GetFlag(FLAGS_label));
  grpc::ClientContext ctx;
  if (absl::GetFlag(FLAGS_deadline_ms) > 0) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(absl::GetFlag(FLAGS_deadline_ms)));
  }
  auto reader = stub->Generate(&ctx, req);
  moe::v1::GenerateResponse msg;
  moe::v1::GenerateResponse last;
  const bool print_ids = absl::GetFlag(FLAGS_ids);
  std::vector<int> all_ids;
  while (reader->Read(&msg)) {
    if (print_ids) {
      all_ids.insert(all_ids.end(), msg.token_ids().begin(), msg.token_ids().end());
    } else {
      std::cout << msg.text() << std::flush;
    }
    if (msg.finish_reason() != moe::v1::FINISH_REASON_UNSPECIFIED) last = msg;
  }
  const grpc::Status status = reader->Finish();
  if (print_ids) std::cout << absl::StrJoin(all_ids, ",");
  std::cout << std::endl;
  if (!status.ok()) return Fail("generate", status);
  const moe::v1::Usage& u = last.usage();
  // The request id names this request in the server's routing trace (--routing-trace).
  std::fprintf(stderr,
               "[%s] request %llu, prompt %u tokens, generated %u, time to first token %.1f ms, "
               "total %.1f ms\n",
               ReasonName(last.finish_reason()), static_cast<unsigned long long>(last.request_id()),
               u.prompt_tokens(), u.generated_tokens(), u.time_to_first_token_ms(), u.total_ms());
  return 0;
}

int Tokenize() {
  if (!Given("text")) return Usage("tokenize needs --text TEXT");
  auto stub = Connect();
  moe::v1::TokenizeRequest req;
  req.set_text(absl::GetFlag(FLAGS_text));
  req.set_add_bos(true);
  moe::v1::TokenizeResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s = stub->Tokenize(&ctx, req, &resp);
  if (!s.ok()) return Fail("tokenize", s);
  std::cout << absl::StrJoin(resp.ids(), ",") << std::endl;
  return 0;
}

int Info() {
  auto stub = Connect();
  moe::v1::ModelInfo info;
  grpc::ClientContext ctx;
  const grpc::Status s = stub->GetModelInfo(&ctx, moe::v1::GetModelInfoRequest(), &info);
  if (!s.ok()) return Fail("info", s);
  std::printf("model: layers=%d hidden=%lld ffn=%lld heads=%d/%d head_dim=%d experts=%d top_k=%d "
              "vocab=%lld context=%lld window=%lld rope_theta=%g\n",
              info.num_hidden_layers(), static_cast<long long>(info.hidden_size()),
              static_cast<long long>(info.intermediate_size()), info.num_attention_heads(),
              info.num_key_value_heads(), info.head_dim(), info.num_local_experts(),
              info.num_experts_per_tok(), static_cast<long long>(info.vocab_size()),
              static_cast<long long>(info.max_position_embeddings()),
              static_cast<long long>(info.sliding_window()), info.rope_theta());
  std::printf("workers: %d\n", info.workers());
  std::printf("weights: --quantize %s\n",
              info.quantize().empty() ? "(none: as stored)" : info.quantize().c_str());
  for (const moe::v1::RankWeights& r : info.ranks()) {
    std::printf("  rank %d %-11s %8.1f MB held (%s), %8.1f MB mapped, %8.1f MB resident\n",
                r.rank(), r.role().c_str(), r.held_bytes() / 1e6, r.held_as().c_str(),
                r.mapped_bytes() / 1e6, r.resident_bytes() / 1e6);
  }
  for (int l = 0; l < info.placement_size(); ++l) {
    std::printf("  layer %d: expert->rank %s\n", l, absl::StrJoin(info.placement(l).worker_rank(), " ").c_str());
  }
  std::printf("scheduler: %d running, %d waiting, KV cache %.1f / %.1f MiB, %lld requests served\n",
              info.running_sequences(), info.waiting_requests(),
              info.kv_cache_bytes_used() / 1048576.0, info.kv_cache_bytes_budget() / 1048576.0,
              static_cast<long long>(info.requests_served()));
  return 0;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())));
  return v[i];
}

// N clients, each sending --requests requests one after the other; client-side timings.
int Bench() {
  absl::StatusOr<std::vector<int>> concurrency = ParseCounts(absl::GetFlag(FLAGS_concurrency), "concurrency");
  if (!concurrency.ok()) return Usage(std::string(concurrency.status().message()));
  if (absl::GetFlag(FLAGS_requests) < 1) return Usage("--requests must be at least 1");
  if (absl::GetFlag(FLAGS_prompt_tokens) < 1) return Usage("--prompt-tokens must be at least 1");
  const absl::StatusOr<moe::cli::SamplingFlags> flags = moe::cli::SamplingFromFlags();
  if (!flags.ok()) return Usage(std::string(flags.status().message()));
  auto stub = Connect();
  moe::v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    const grpc::Status s = stub->GetModelInfo(&ctx, moe::v1::GetModelInfoRequest(), &info);
    if (!s.ok()) return Fail("info", s);
  }
  std::printf(
      "server %s: %d layers, hidden %lld, %d experts top-%d, %d workers; max_tokens %d, "
      "prompt %d random tokens, temperature %g\n",
      absl::GetFlag(FLAGS_server).c_str(), info.num_hidden_layers(),
      static_cast<long long>(info.hidden_size()), info.num_local_experts(),
      info.num_experts_per_tok(), info.workers(), flags->max_tokens,
      absl::GetFlag(FLAGS_prompt_tokens), flags->temperature);
  std::printf("%8s %9s %10s %14s %14s %14s %14s %8s\n", "clients", "requests", "tokens/s",
              "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms", "errors");
  for (const int n : *concurrency) {
    absl::Mutex mu;
    std::vector<double> ttft, itl;
    int64_t tokens = 0;
    int errors = 0;
    const auto start = Clock::now();
    std::vector<std::thread> clients;
    for (int c = 0; c < n; ++c) {
      clients.emplace_back([&, c] {
        std::mt19937 rng(static_cast<uint32_t>(c * 7919 + 1));
        for (int r = 0; r < absl::GetFlag(FLAGS_requests); ++r) {
          moe::v1::GenerateRequest req;
          req.mutable_token_ids()->add_ids(1);
          for (int i = 1; i < absl::GetFlag(FLAGS_prompt_tokens); ++i) {
            req.mutable_token_ids()->add_ids(static_cast<int>(3 + rng() % (info.vocab_size() - 3)));
          }
          req.mutable_sampling()->set_max_tokens(static_cast<uint32_t>(flags->max_tokens));
          req.mutable_sampling()->set_temperature(static_cast<float>(flags->temperature));
          grpc::ClientContext ctx;
          const auto sent = Clock::now();
          auto reader = stub->Generate(&ctx, req);
          moe::v1::GenerateResponse msg;
          std::vector<double> my_itl;
          double my_ttft = -1;
          int64_t my_tokens = 0;
          auto prev = sent;
          while (reader->Read(&msg)) {
            if (msg.token_ids_size() == 0) continue;
            const auto now = Clock::now();
            const double ms = std::chrono::duration<double, std::milli>(now - prev).count();
            if (my_ttft < 0) {
              my_ttft = ms;
            } else {
              my_itl.push_back(ms);
            }
            prev = now;
            my_tokens += msg.token_ids_size();
          }
          const bool ok = reader->Finish().ok();
          absl::MutexLock lock(&mu);
          if (!ok) {
            ++errors;
            continue;
          }
          ttft.push_back(my_ttft);
          itl.insert(itl.end(), my_itl.begin(), my_itl.end());
          tokens += my_tokens;
        }
      });
    }
    for (auto& t : clients) t.join();
    const double wall = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("%8d %9d %10.1f %14.1f %14.1f %14.2f %14.2f %8d\n", n,
                n * absl::GetFlag(FLAGS_requests), static_cast<double>(tokens) / wall,
                Percentile(ttft, 50), Percentile(ttft, 99), Percentile(itl, 50), Percentile(itl, 99),
                errors);
    std::fflush(stdout);
  }
  return 0;
}

// --width, else the terminal's columns (when stdout is one), else $COLUMNS, else 80.
int TerminalWidth() {
  if (absl::GetFlag(FLAGS_width) > 0) return absl::GetFlag(FLAGS_width);
  winsize size{};
  if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  int columns = 0;
  if (const char* env = std::getenv("COLUMNS"); env != nullptr && absl::SimpleAtoi(env, &columns) && columns > 0) {
    return columns;
  }
  return 80;
}

// A live table of the server's load, refreshed from WatchLoad (or one snapshot with --once).
int Load() {
  if (absl::GetFlag(FLAGS_interval_ms) < 50) return Usage("--interval-ms must be >= 50");
  auto stub = moe::v1::Telemetry::NewStub(Channel());
  if (absl::GetFlag(FLAGS_width) < 0) return Usage("--width must be >= 0");
  moe::LoadViewOptions view;
  view.window = absl::GetFlag(FLAGS_window);
  view.width = TerminalWidth();
  if (absl::GetFlag(FLAGS_once)) {
    grpc::ClientContext context;
    moe::v1::LoadSnapshot snapshot;
    grpc::Status s = stub->GetLoad(&context, moe::v1::GetLoadRequest(), &snapshot);
    if (!s.ok()) return Fail("GetLoad", s);
    std::fputs(moe::RenderLoadView(snapshot, view).c_str(), stdout);
    return 0;
  }
  const bool tty = isatty(STDOUT_FILENO);
  grpc::ClientContext context;
  moe::v1::WatchLoadRequest request;
  request.set_interval_ms(static_cast<uint32_t>(absl::GetFlag(FLAGS_interval_ms)));
  auto reader = stub->WatchLoad(&context, request);
  moe::v1::LoadSnapshot snapshot;
  while (reader->Read(&snapshot)) {
    // On a terminal, redraw in place like top; piped, append snapshots one after another.
    if (tty) std::fputs("\033[H\033[2J", stdout);
    std::fputs(moe::RenderLoadView(snapshot, view).c_str(), stdout);
    if (!tty) std::fputs("\n", stdout);
    std::fflush(stdout);
  }
  grpc::Status s = reader->Finish();
  return s.ok() ? 0 : Fail("WatchLoad", s);
}

int ResetLoad() {
  auto stub = moe::v1::Telemetry::NewStub(Channel());
  grpc::ClientContext context;
  moe::AddAdminToken(g_security, &context);
  moe::v1::ResetLoadResponse response;
  grpc::Status s = stub->ResetLoad(&context, moe::v1::ResetLoadRequest(), &response);
  if (!s.ok()) return Fail("ResetLoad", s);
  std::printf("load counters reset; epoch %u\n", response.epoch());
  return 0;
}

// Plans a placement from the server's load window and (unless --dry-run) moves the cluster to it.
int Rebalance() {
  auto stub = moe::v1::Admin::NewStub(Channel());
  grpc::ClientContext context;
  moe::AddAdminToken(g_security, &context);
  moe::v1::RebalanceRequest request;
  request.set_dry_run(absl::GetFlag(FLAGS_dry_run));
  request.set_force(absl::GetFlag(FLAGS_force));
  moe::v1::RebalanceResponse r;
  grpc::Status s = stub->Rebalance(&context, request, &r);
  if (!s.ok()) return Fail("Rebalance", s);
  if (!r.skipped().empty()) {
    std::printf("nothing to do: %s (placement epoch %u)\n", r.skipped().c_str(), r.placement_epoch());
  } else {
    std::printf("%s: worker balancedness %.3f -> %.3f predicted; %d slots move (%d experts change ranks), %d "
                "replicas\n",
                r.applied() ? "re-placed" : "plan (dry run)", r.balancedness_before(), r.predicted_balancedness(),
                r.moved_slots(), r.moved_experts(), r.replicas());
  }
  if (r.applied()) {
    const moe::v1::Rearrangement& a = r.rearrangement();
    std::printf("placement epoch %u: %d experts loaded in %.2f s in the background, switch %.1f ms, %.2f s in all\n",
                r.placement_epoch(), a.experts_loaded(), a.load_seconds(), 1e3 * a.switch_seconds(),
                a.total_seconds());
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (!out.empty() && !r.plan_json().empty()) {
    std::ofstream(out) << r.plan_json();
    std::printf("plan written to %s (use it with --placement)\n", out.c_str());
  }
  return 0;
}


// The first argument that is not a flag or a flag's value: the command. Before abseil parses, so
// that --help can be answered per command (abseil's own --help lists every flag of every library).
std::string CommandWord(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") return i + 1 < argc ? argv[i + 1] : "";
    if (a.empty() || a[0] != '-') return a;
    if (a.find('=') != std::string::npos) continue;
    std::string name = a.substr(a.find_first_not_of('-'));
    std::replace(name.begin(), name.end(), '-', '_');
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag != nullptr && !flag->IsOfType<bool>()) ++i;  // its value follows
  }
  return "";
}

bool HelpAsked(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-help" || a == "-h") return true;
  }
  return false;
}

int UnknownCommand(const std::string& cmd) {
  const std::string near = moe::cli::NearestCommand(cmd);
  return Usage(absl::StrCat("unknown command '", cmd, "'", near.empty() ? "" : absl::StrCat("; did you mean '", near, "'?"),
                            " (moe-cli --help lists the commands)"));
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("moe-cli COMMAND [flags]; moe-cli --help lists the commands");
  moe::cli::AcceptDashedFlagNames(argc, argv);  // --max-tokens or --max_tokens
  g_given = moe::cli::FlagsGiven(argc, argv);
  std::string cmd = CommandWord(argc, argv);
  if (HelpAsked(argc, argv) || cmd == "help") {
    if (cmd == "help") {  // moe-cli help [COMMAND]
      std::vector<std::string> rest;
      for (int i = 1; i < argc; ++i) rest.emplace_back(argv[i]);
      auto it = std::find(rest.begin(), rest.end(), "help");
      cmd = (it != rest.end() && it + 1 != rest.end()) ? *(it + 1) : "";
    }
    if (cmd.empty()) {
      std::fputs(moe::cli::UsageText().c_str(), stdout);
      return 0;
    }
    const moe::cli::Command* command = moe::cli::FindCommand(cmd);
    if (command == nullptr) return UnknownCommand(cmd);
    std::fputs(moe::cli::CommandHelp(*command).c_str(), stdout);
    return 0;
  }
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  cmd = args.size() > 1 ? args[1] : "";
  if (cmd.empty()) {
    std::fputs(moe::cli::UsageText().c_str(), stderr);
    return 2;
  }
  const moe::cli::Command* command = moe::cli::FindCommand(cmd);
  if (command == nullptr) return UnknownCommand(cmd);
  if (args.size() > 2) {
    return Usage(absl::StrCat("unexpected argument '", args[2], "' after ", cmd,
                              " (a value with spaces needs quotes; moe-cli ", cmd, " --help)"));
  }
  if (absl::Status s = moe::cli::CheckFlagsBelong(*command, g_given); !s.ok()) return Usage(std::string(s.message()));
  absl::StatusOr<moe::ClientSecurity> security = moe::ClientSecurity::FromFlags(
      absl::GetFlag(FLAGS_tls), absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
      absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_server_name), absl::GetFlag(FLAGS_admin_token_file));
  if (!security.ok()) return Usage(std::string(security.status().message()));
  g_security = *std::move(security);
  if (cmd == "generate") return Generate();
  if (cmd == "tokenize") return Tokenize();
  if (cmd == "info") return Info();
  if (cmd == "bench") return Bench();
  if (cmd == "load") return Load();
  if (cmd == "reset-load") return ResetLoad();
  return Rebalance();
}
