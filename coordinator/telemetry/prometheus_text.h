// Writing the Prometheus text exposition format (version 0.0.4): HELP and TYPE once per family,
// then its samples with escaped label values.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

namespace moe {

class PrometheusText {
 public:
  using Labels = std::initializer_list<std::pair<const char*, std::string>>;

  // Starts a family; type is "counter", "gauge" or "histogram".
  void Family(const char* name, const char* type, const char* help);
  void Sample(const char* name, Labels labels, double value);
  void Sample(const char* name, double value) { Sample(name, {}, value); }

  void Append(const PrometheusText& other) { text_ += other.text_; }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

}  // namespace moe
