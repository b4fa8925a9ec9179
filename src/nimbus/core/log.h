// The library's logger. Nimbus logs through its own spdlog logger, never through
// spdlog's default logger or its process-wide level, so a host process (Python, a
// service, another library using spdlog) keeps its logging exactly as it was.
#pragma once

#include <memory>

#include <spdlog/logger.h>

namespace nimbus {

// Where library messages go. Until a front end says otherwise: warnings and errors
// on stderr. Never null; safe to call from any thread.
std::shared_ptr<spdlog::logger> logger();

// A front end routes the library's messages: the CLI passes its own logger (so -q
// and -v apply), the Python module changes only this logger's level. Null restores
// the default.
void set_logger(std::shared_ptr<spdlog::logger> logger);

}  // namespace nimbus
