#include "nimbus/core/log.h"

#include <atomic>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace nimbus {
namespace {

std::shared_ptr<spdlog::logger> make_default_logger() {
  // Not registered with spdlog: spdlog::set_level() and friends of a host do not reach it.
  auto l = std::make_shared<spdlog::logger>("nimbus", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  l->set_level(spdlog::level::warn);
  return l;
}

std::shared_ptr<spdlog::logger>& current() {
  static std::shared_ptr<spdlog::logger> instance = make_default_logger();
  return instance;
}

}  // namespace

std::shared_ptr<spdlog::logger> logger() { return std::atomic_load(&current()); }

void set_logger(std::shared_ptr<spdlog::logger> l) {
  std::atomic_store(&current(), l ? std::move(l) : make_default_logger());
}

}  // namespace nimbus
