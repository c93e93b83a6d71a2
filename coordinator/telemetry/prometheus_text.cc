#include "coordinator/telemetry/prometheus_text.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe {
namespace {

std::string Escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return absl::StrFormat("%.17g", v);
}

}  // namespace

void PrometheusText::Family(const char* name, const char* type, const char* help) {
  absl::StrAppend(&text_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void PrometheusText::Sample(const char* name, Labels labels, double value) {
  absl::StrAppend(&text_, name);
  if (labels.size() > 0) {
    text_.push_back('{');
    bool first = true;
    for (const auto& [key, val] : labels) {
      absl::StrAppend(&text_, first ? "" : ",", key, "=\"", Escape(val), "\"");
      first = false;
    }
    text_.push_back('}');
  }
  absl::StrAppend(&text_, " ", Number(value), "\n");
}

}  // namespace moe
